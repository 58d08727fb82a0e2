"""Dense reference: softmax attention under the expanded block mask, computed in float32.

Exact and differentiable through autograd, but it materialises Lq x Lk logits: for tests only.
"""

from __future__ import annotations

import torch

from blade.kernels.masks import expand_block_mask


def reference_attention(q, k, v, block_mask, block_size, scale):
    """Compute masked attention densely. Shapes as in `block_sparse_attention`; returns (out, lse)."""
    q_len, k_len = q.shape[-2], k.shape[-2]
    token_mask = expand_block_mask(block_mask, q_len, k_len, block_size)  # [B', H', Lq, Lk]
    empty_row = ~token_mask.any(dim=-1, keepdim=True)  # [B', H', Lq, 1]

    logits = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale  # [B, H, Lq, Lk]
    logits = logits.masked_fill(~token_mask, float("-inf"))
    # A row with no kept key is all -inf, whose softmax and logsumexp gradients are NaN; give it
    # finite logits, then overwrite its output (0) and LSE (-inf) so no gradient reaches it.
    logits = torch.where(empty_row, torch.zeros_like(logits), logits)

    lse = torch.logsumexp(logits, dim=-1, keepdim=True)  # [B, H, Lq, 1]
    probs = torch.exp(logits - lse)  # [B, H, Lq, Lk]
    out = torch.matmul(probs, v.float()).masked_fill(empty_row, 0.0)  # [B, H, Lq, D]
    lse = lse.masked_fill(empty_row, float("-inf")).squeeze(-1)  # [B, H, Lq]
    return out.to(q.dtype), lse
