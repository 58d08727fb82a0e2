import pytest
import torch

from blade.sparsity import metrics


def _dense_probabilities(q, k):
    return torch.softmax(q.double() @ k.double().transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)


def test_block_mass_matches_dense_softmax():
    torch.manual_seed(0)
    q, k = torch.randn(2, 2, 50, 8), torch.randn(2, 2, 37, 8)
    mass = metrics.block_attention_mass(q, k, block_size=16)
    probabilities = _dense_probabilities(q, k)
    expected = torch.zeros(2, 2, 4, 3, dtype=torch.float64)
    for i in range(50):
        for j in range(37):
            expected[:, :, i // 16, j // 16] += probabilities[:, :, i, j]
    torch.testing.assert_close(mass.double(), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mass.sum(dim=(-2, -1)), torch.full((2, 2), 50.0))


def test_recall_is_kept_mass_per_query():
    torch.manual_seed(1)
    q, k = torch.randn(1, 3, 40, 8), torch.randn(1, 3, 40, 8)
    mask = torch.rand(1, 3, 3, 3) > 0.5
    mask[..., 0] = True
    recall = metrics.attention_recall(q, k, mask, block_size=16)
    token_mask = mask.repeat_interleave(16, -2).repeat_interleave(16, -1)[..., :40, :40]
    expected = (_dense_probabilities(q, k) * token_mask).sum(-1).mean(-1)
    torch.testing.assert_close(recall.double(), expected, atol=1e-6, rtol=1e-5)
    full = metrics.attention_recall(q, k, torch.ones(1, 1, 3, 3, dtype=torch.bool), block_size=16)
    torch.testing.assert_close(full, torch.ones(1, 3))


def test_relative_l2_error():
    reference = torch.tensor([[[[3.0, 0.0], [0.0, 4.0]]]])  # norm 5
    output = reference + torch.tensor([[[[0.0, 1.0], [0.0, 0.0]]]])
    torch.testing.assert_close(metrics.relative_l2_error(output, reference), torch.tensor([[0.2]]))
    with pytest.raises(ValueError, match=r"output \(1, 1, 2, 1\) and reference \(1, 1, 2, 2\) must match"):
        metrics.relative_l2_error(output[..., :1], reference)


def test_recall_rejects_mismatched_mask():
    q = torch.randn(1, 1, 40, 8)
    with pytest.raises(ValueError, match=r"block_mask must be bool \[.., 3, 3\], got torch.bool \(1, 1, 2, 3\)"):
        metrics.attention_recall(q, q, torch.ones(1, 1, 2, 3, dtype=torch.bool), block_size=16)
