import math

import pytest
import torch

from blade.sparsity import select_blocks


def _energy_count(row: list[float], threshold: float, lower: int, upper: int) -> int:
    total, count = 0.0, 0
    for value in sorted(row, reverse=True):
        total += value
        count += 1
        if total >= threshold:
            break
    return min(max(count, lower), upper)


def test_energy_keeps_fewest_blocks_reaching_threshold():
    torch.manual_seed(0)
    scores = torch.softmax(torch.randn(2, 3, 7, 40) * 2.0, dim=-1)
    mask = select_blocks(scores, mode="energy", threshold=0.8, min_ratio=0.05, max_ratio=0.5)
    lower, upper = math.floor(40 * 0.05), math.floor(40 * 0.5)
    for b, h, i in torch.cartesian_prod(torch.arange(2), torch.arange(3), torch.arange(7)).tolist():
        row = scores[b, h, i]
        count = _energy_count(row.tolist(), 0.8, lower, upper)
        assert int(mask[b, h, i].sum()) == count
        # the kept blocks are the highest-scoring ones
        assert float(row[mask[b, h, i]].min()) >= float(row[~mask[b, h, i]].max())


def test_energy_clamps_to_ratio_bounds():
    flat = torch.full((1, 1, 2, 100), 0.01)  # reaching 0.95 needs 95 blocks
    peaked = torch.zeros(1, 1, 2, 100)
    peaked[..., 7] = 1.0  # one block holds everything
    assert select_blocks(flat, min_ratio=0.05, max_ratio=0.17).sum(dim=-1).tolist() == [[[17, 17]]]
    assert select_blocks(peaked, min_ratio=0.05, max_ratio=0.17).sum(dim=-1).tolist() == [[[5, 5]]]
    assert bool(select_blocks(peaked, min_ratio=0.05, max_ratio=0.17)[..., 7].all())


def test_ratio_floor_survives_float_rounding():
    """0.29 * 100 is 28.999999999999996 in floating point; the count must still be 29."""
    scores = torch.rand(1, 1, 3, 100)
    assert select_blocks(scores, mode="topk", max_ratio=0.29).sum(dim=-1).tolist() == [[[29, 29, 29]]]


def test_topk_keeps_fixed_count_with_index_tie_break():
    scores = torch.tensor([[[[0.2, 0.2, 0.2, 0.2, 0.2], [0.1, 0.4, 0.1, 0.3, 0.1]]]])
    mask = select_blocks(scores, mode="topk", max_ratio=0.4)
    assert mask.tolist() == [[[[True, True, False, False, False], [False, True, False, True, False]]]]


def test_every_row_keeps_a_block():
    scores = torch.softmax(torch.randn(2, 2, 5, 3), dim=-1)
    for mode in ("energy", "topk"):
        mask = select_blocks(scores, mode=mode, min_ratio=0.0, max_ratio=0.1)  # floor(3 * 0.1) = 0
        assert mask.sum(dim=-1).tolist() == [[[1] * 5] * 2] * 2


def test_forced_blocks_are_added():
    scores = torch.softmax(torch.randn(1, 2, 4, 10), dim=-1)
    forced = torch.zeros(1, 1, 4, 10, dtype=torch.bool)
    forced[..., 0] = True
    forced[..., 2, :] = True
    mask = select_blocks(scores, mode="topk", max_ratio=0.2, forced=forced)
    plain = select_blocks(scores, mode="topk", max_ratio=0.2)
    assert torch.equal(mask, plain | forced)
    assert bool(mask[..., 0].all())
    assert bool(mask[..., 2, :].all())


def test_rejects_bad_arguments():
    scores = torch.rand(1, 1, 2, 4)
    with pytest.raises(ValueError, match=r"mode must be one of \('energy', 'topk'\), got 'top'"):
        select_blocks(scores, mode="top")
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\], got 1.5"):
        select_blocks(scores, threshold=1.5)
    with pytest.raises(ValueError, match="got min_ratio=0.5, max_ratio=0.2"):
        select_blocks(scores, min_ratio=0.5, max_ratio=0.2)
    with pytest.raises(TypeError, match="forced must be a bool tensor"):
        select_blocks(scores, forced=torch.ones(1, 1, 2, 4))
    with pytest.raises(ValueError, match=r"scores must be a floating tensor \[..., nq, nk\], got \(4,\)"):
        select_blocks(torch.rand(4))
