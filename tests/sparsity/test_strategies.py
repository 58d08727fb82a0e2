import math

import pytest
import torch
import torch.nn.functional as F

from blade.config import BladeConfig
from blade.sparsity import metrics, strategies
from blade.sparsity.layout import sequence_order

GRID = (5, 7, 9)  # 315 tokens: 20 blocks of 16, the last ragged


def _qk(tokens=315, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 2, tokens, 8, generator=generator) for _ in range(3)]


@pytest.mark.parametrize("name", ["sliding_tile", "radial", "oracle_topk", "asa"])
@pytest.mark.parametrize("sparsity", [0.5, 0.75, 0.9])
def test_strategies_keep_the_budget(name, sparsity):
    q, k, _ = _qk()
    plan = strategies.STRATEGIES[name](q, k, grid_thw=GRID, sparsity=sparsity, block_size=16)
    budget = max(1, math.floor(20 * (1 - sparsity) + 1e-9))
    assert plan.block_mask.dtype == torch.bool
    assert plan.block_mask.shape[-2:] == (20, 20)
    assert bool((plan.block_mask.sum(dim=-1) == budget).all())
    assert torch.equal(torch.sort(plan.order).values, torch.arange(315))
    assert torch.equal(plan.order[plan.inverse], torch.arange(315))


def test_dense_plan_is_sdpa():
    q, k, v = _qk()
    plan = strategies.dense_mask(q, k, grid_thw=GRID, block_size=16)
    out = strategies.attend(plan, q, k, v, backend="torch")
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), atol=2e-6, rtol=0)


def test_attend_restores_input_order():
    q, k, v = _qk(seed=1)
    plan = strategies.radial_mask(q, k, grid_thw=GRID, sparsity=0.5, block_size=16)
    out = strategies.attend(plan, q, k, v, backend="torch")
    reordered = strategies.attend(
        strategies.StrategyMask("radial", torch.arange(315), torch.arange(315), plan.block_mask, 16),
        plan.reorder(q), plan.reorder(k), plan.reorder(v), backend="torch",
    )
    torch.testing.assert_close(out, reordered.index_select(2, plan.inverse))


def test_oracle_recall_bounds_asa():
    """The oracle keeps the blocks with the most mass, so no mask over the same blocks beats its recall."""
    q, k, _ = _qk(seed=2)
    order, _ = sequence_order(GRID, 0, "prefix", q.device)
    mass = metrics.block_attention_mass(q[:, :, order], k[:, :, order], block_size=16)
    for sparsity in (0.5, 0.8):
        oracle = strategies.oracle_topk_mask(q, k, grid_thw=GRID, sparsity=sparsity, block_size=16)
        asa = strategies.asa_mask(q, k, grid_thw=GRID, sparsity=sparsity, block_size=16,
                                  config=BladeConfig(samples_per_block=4))
        oracle_recall = metrics.attention_recall(None, None, oracle.block_mask, block_size=16, block_mass=mass)
        asa_recall = metrics.attention_recall(None, None, asa.block_mask, block_size=16, block_mass=mass)
        assert bool((oracle_recall >= asa_recall - 1e-6).all())


def test_tile_shape_is_block_sized_and_cubic():
    assert strategies.tile_shape((21, 30, 52), 128) == (4, 4, 8)
    assert strategies.tile_shape((21, 30, 52), 64) == (4, 4, 4)
    assert strategies.tile_shape((1, 30, 52), 128) == (1, 8, 16)
    for grid, block in (((3, 5, 7), 16), ((13, 30, 45), 128), ((2, 2, 2), 128)):
        t, h, w = strategies.tile_shape(grid, block)
        assert t * h * w == block


def test_sliding_tile_is_a_cube_window_on_aligned_tiles():
    grid = (4, 8, 16)  # tiles of (2, 2, 4) = 16 tokens: a 2 x 4 x 4 grid of tiles, one per block
    q, k, _ = _qk(tokens=512)
    plan = strategies.sliding_tile_mask(q, k, grid_thw=grid, sparsity=1 - 27 / 32, block_size=16)
    mask = plan.block_mask[0, 0]
    assert strategies.tile_shape(grid, 16) == (2, 2, 4)
    assert bool(mask.diagonal().all())
    # an interior tile (t 0, h 1, w 1) keeps its full 3 x 3 x 3 neighbourhood, clipped by the grid in t
    index = (0 * 4 + 1) * 4 + 1
    kept = {(j // 16, (j // 4) % 4, j % 4) for j in mask[index].nonzero().flatten().tolist()}
    assert {(t, h, w) for t in (0, 1) for h in (0, 1, 2) for w in (0, 1, 2)} <= kept


def test_radial_keeps_diagonal_and_decays_with_time():
    grid = (8, 4, 8)  # 32 tokens per frame: two blocks of 16 per frame
    q, k, _ = _qk(tokens=256)
    plan = strategies.radial_mask(q, k, grid_thw=grid, sparsity=0.75, block_size=16)
    mask = plan.block_mask[0, 0]
    assert bool(mask.diagonal().all())
    frames = torch.arange(16) // 2
    distance = (frames[:, None] - frames[None, :]).abs()
    kept_near = mask[distance <= 1].float().mean()
    kept_far = mask[distance >= 4].float().mean()
    assert float(kept_near) > float(kept_far)


def test_text_blocks_forced_in_static_strategies():
    q, k, _ = _qk(tokens=315 + 20)
    for name in ("sliding_tile", "radial", "oracle_topk", "asa"):
        plan = strategies.STRATEGIES[name](q, k, grid_thw=GRID, sparsity=0.9, block_size=16, text_tokens=20)
        mask = plan.block_mask
        assert bool(mask[..., :2, :].all()), name  # text tokens 0..19 fill blocks 0 and 1
        assert bool(mask[..., :, :2].all()), name
        assert torch.equal(plan.order[:20], torch.arange(20)), name


def test_rejects_bad_sparsity():
    q, k, _ = _qk()
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\), got 1.0"):
        strategies.radial_mask(q, k, grid_thw=GRID, sparsity=1.0, block_size=16)
