import math

import pytest
import torch

from blade.sparsity import estimate_block_scores
from blade.sparsity.estimate import sample_block_tokens


def _loop_reference(q, k, q_index, k_index, block_size, samples, pooling):
    """Score every block pair with explicit loops in float64 from the same sampled positions."""
    batch, heads, q_len, dim = q.shape
    k_len = k.shape[2]
    q_blocks, k_blocks = math.ceil(q_len / block_size), math.ceil(k_len / block_size)
    q_pos = q_index.view(q_blocks, samples)
    k_pos = k_index.view(k_blocks, samples)
    scores = torch.zeros(batch, heads, q_blocks, k_blocks, dtype=torch.float64)
    for b in range(batch):
        for h in range(heads):
            keys = sorted({int(p) for p in k_pos.reshape(-1)})
            for i in range(q_blocks):
                for query in sorted({int(p) for p in q_pos[i]}):
                    logits = {key: float(q[b, h, query].double() @ k[b, h, key].double()) / math.sqrt(dim) for key in keys}
                    if pooling == "max":
                        row_max = max(logits.values())
                        values = [
                            math.exp(max(logits[key] for key in keys if key // block_size == j) - row_max)
                            for j in range(k_blocks)
                        ]
                    else:
                        total = sum(math.exp(x) for x in logits.values())
                        values = [
                            sum(math.exp(logits[key]) for key in keys if key // block_size == j) / total
                            for j in range(k_blocks)
                        ]
                    for j in range(k_blocks):
                        scores[b, h, i, j] = max(scores[b, h, i, j], values[j])
    return scores / scores.sum(dim=-1, keepdim=True)


@pytest.mark.parametrize("pooling", ["max", "softmax"])
def test_scores_match_loop_reference(pooling):
    torch.manual_seed(0)
    q = torch.randn(2, 2, 45, 8)  # 45 = 5 full blocks of 8 + a ragged block of 5
    k = torch.randn(2, 2, 37, 8)  # Lk != Lq, ragged last key block of 5
    block_size, samples = 8, 6
    scores = estimate_block_scores(
        q, k, block_size=block_size, samples_per_block=samples, generator=torch.Generator().manual_seed(3), pooling=pooling
    )
    replay = torch.Generator().manual_seed(3)
    q_index, _ = sample_block_tokens(45, block_size, samples, replay, q.device)
    k_index, _ = sample_block_tokens(37, block_size, samples, replay, q.device)
    expected = _loop_reference(q, k, q_index, k_index, block_size, samples, pooling)
    assert scores.dtype == torch.float32
    assert scores.shape == (2, 2, 6, 5)
    torch.testing.assert_close(scores.double(), expected, atol=1e-5, rtol=1e-4)


def test_rows_sum_to_one_in_bfloat16():
    torch.manual_seed(1)
    q = torch.randn(1, 3, 300, 16, dtype=torch.bfloat16)
    k = torch.randn(1, 3, 300, 16, dtype=torch.bfloat16)
    scores = estimate_block_scores(q, k, block_size=64, samples_per_block=16, generator=torch.Generator().manual_seed(0))
    assert scores.dtype == torch.float32
    torch.testing.assert_close(scores.sum(dim=-1), torch.ones(1, 3, 5))
    assert bool((scores > 0).all())


def test_ragged_block_samples_only_real_tokens():
    index, valid = sample_block_tokens(19, 8, 6, torch.Generator().manual_seed(0), torch.device("cpu"))
    # 19 tokens = blocks of 8, 8 and 3: the last block has 3 real tokens for 6 slots
    assert index.shape == (18,)
    assert valid.sum(dim=1).tolist() == [6, 6, 3]
    last = index.view(3, 6)[2][valid[2]]
    assert sorted(last.tolist()) == [16, 17, 18]
    for block, positions in enumerate(index.view(3, 6)):
        assert len(set(positions[valid[block]].tolist())) == int(valid[block].sum())
        assert bool(((positions // 8) == block).all())
    assert int(index.max()) < 19


def test_same_seed_same_scores_and_global_rng_untouched():
    q = torch.randn(1, 2, 200, 8)
    k = torch.randn(1, 2, 200, 8)
    state = torch.random.get_rng_state()
    first = estimate_block_scores(q, k, block_size=32, samples_per_block=4, generator=torch.Generator().manual_seed(7))
    second = estimate_block_scores(q, k, block_size=32, samples_per_block=4, generator=torch.Generator().manual_seed(7))
    other = estimate_block_scores(q, k, block_size=32, samples_per_block=4, generator=torch.Generator().manual_seed(8))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(first, second)
    assert not torch.equal(first, other)


def test_full_sampling_finds_planted_blocks():
    """With every token sampled, each query block's top score is the key block planted to match it."""
    torch.manual_seed(2)
    block_size, blocks, dim = 16, 6, 32
    directions = torch.linalg.qr(torch.randn(dim, dim))[0][:blocks] * 6.0  # orthogonal, large
    partner = torch.tensor([3, 0, 5, 1, 2, 4])
    q = directions.repeat_interleave(block_size, 0)[None, None] + 0.1 * torch.randn(1, 1, blocks * block_size, dim)
    k = directions[partner.argsort()].repeat_interleave(block_size, 0)[None, None]
    k = k + 0.1 * torch.randn_like(k)
    scores = estimate_block_scores(q, k, block_size=block_size, samples_per_block=block_size, generator=torch.Generator())
    assert torch.equal(scores[0, 0].argmax(dim=-1), partner)


def test_no_gradient_flows():
    q = torch.randn(1, 1, 64, 8, requires_grad=True)
    k = torch.randn(1, 1, 64, 8, requires_grad=True)
    scores = estimate_block_scores(q, k, block_size=16, samples_per_block=4, generator=torch.Generator())
    assert not scores.requires_grad


def test_rejects_bad_arguments():
    q = torch.randn(1, 1, 64, 8)
    generator = torch.Generator()
    with pytest.raises(ValueError, match="samples_per_block must be at most block_size=16, got 32"):
        estimate_block_scores(q, q, block_size=16, samples_per_block=32, generator=generator)
    with pytest.raises(ValueError, match=r"pooling must be one of \('max', 'softmax'\), got 'mean'"):
        estimate_block_scores(q, q, block_size=16, samples_per_block=4, generator=generator, pooling="mean")
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        estimate_block_scores(q, q, block_size=16, samples_per_block=4, generator=0)
    with pytest.raises(ValueError, match=r"q must have shape \[B, H, L, D\] \(4 dims\), got \(64, 8\)"):
        estimate_block_scores(q[0, 0], q, block_size=16, samples_per_block=4, generator=generator)
    with pytest.raises(ValueError, match="k must share B, H and D with q"):
        estimate_block_scores(q, torch.randn(1, 2, 64, 8), block_size=16, samples_per_block=4, generator=generator)
