"""The global branch of ASA (mean-pooled keys and values) and its log-sum-exp merge with the sparse one.

Video-BLADE's "ASA_GT" covers the blocks the sparse branch drops with a coarse view of the whole
sequence: k and v mean-pooled over consecutive groups of n tokens in curve order. A pooled key stands
for the n tokens it averages, so its logit gets + ln(n) and the two branches merge as one softmax over
kept fine tokens and pooled tokens. The last group may contain fewer tokens. It is averaged over its real
tokens only and its logit gets + ln(its size), so padding never leaks in.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

# pooled logits held at once, in elements; bounds memory to about 256 MiB of float32 per chunk
_CHUNK_ELEMENTS = 1 << 26


def mean_pool_groups(x: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean-pool consecutive groups of `group` tokens.

    Args:
        x: [B, H, L, D].
        group: tokens per group n >= 1; the last group contains L - (G - 1) * n tokens.

    Returns:
        pooled: [B, H, G, D] with G = ceil(L / n), same dtype as x.
        log_counts: float32 [G], ln(tokens in each group).
    """
    batch, heads, length, dim = x.shape
    groups = math.ceil(length / group)
    padded = F.pad(x, (0, 0, 0, groups * group - length))  # [B, H, G * n, D], zero padding
    sums = padded.view(batch, heads, groups, group, dim).sum(dim=3)  # [B, H, G, D]
    counts = torch.full((groups,), group, dtype=torch.float32, device=x.device)
    counts[-1] = length - (groups - 1) * group
    pooled = sums / counts.to(x.dtype)[:, None]
    return pooled, counts.log()


def _pooled_chunk(
    q: torch.Tensor, k_pooled_t: torch.Tensor, v_pooled: torch.Tensor, bias: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    logits = torch.matmul(q, k_pooled_t).float() * scale + bias  # [B, H, c, G]
    lse = torch.logsumexp(logits, dim=-1)  # [B, H, c]
    probabilities = torch.exp(logits - lse.unsqueeze(-1))
    out = torch.matmul(probabilities.to(v_pooled.dtype), v_pooled).float()  # [B, H, c, D]
    return out, lse


def pooled_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, group: int, scale: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attend from every query to the mean-pooled keys and values (the global branch).

    Args:
        q, k, v: [B, H, L, D], already in the order the groups are taken in (curve order in ASA).
        group: tokens per pooled group n >= 1.
        scale: logit scale; 1 / sqrt(D) when None.

    Returns:
        out: float32 [B, H, L, D].
        lse: float32 [B, H, L], natural-log sum over pooled keys of exp(logit + ln(group size)).

    Without gradients on a CPU, float32 inputs go through PyTorch's fused CPU flash-attention
    operator with the ln(group size) terms as an additive mask: at L = 4,352, D = 64, n = 30 it ran
    about 4x faster than the matmul path, which allocates several L x G temporaries. Otherwise queries
    are processed in chunks, and each chunk is recomputed in backward when gradients are on. Memory
    therefore contains the logits of one chunk of queries at a time, never all L x ceil(L / n).
    """
    batch, heads, length, dim = q.shape
    scale = dim**-0.5 if scale is None else float(scale)
    k_pooled, log_counts = mean_pool_groups(k, group)  # [B, H, G, D], [G]
    v_pooled, _ = mean_pool_groups(v, group)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    if not needs_grad and q.device.type == "cpu" and q.dtype == torch.float32:
        bias = log_counts.view(1, 1, 1, -1)  # [1, 1, 1, G], broadcast over batch, heads and queries
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k_pooled, v_pooled, 0.0, False, attn_mask=bias, scale=scale
        )
        return out, lse
    k_pooled_t = k_pooled.transpose(-1, -2)  # [B, H, D, G]
    groups = k_pooled.shape[2]

    chunk = max(1, _CHUNK_ELEMENTS // (batch * heads * groups))
    outs, lses = [], []
    for start in range(0, length, chunk):
        q_chunk = q[:, :, start : start + chunk]  # [B, H, c, D]
        if needs_grad:
            out, lse = checkpoint(
                _pooled_chunk, q_chunk, k_pooled_t, v_pooled, log_counts, scale, use_reentrant=False
            )
        else:
            out, lse = _pooled_chunk(q_chunk, k_pooled_t, v_pooled, log_counts, scale)
        outs.append(out)
        lses.append(lse)
    return torch.cat(outs, dim=2), torch.cat(lses, dim=2)


def merge_branches(
    out_sparse: torch.Tensor,
    lse_sparse: torch.Tensor,
    out_global: torch.Tensor,
    lse_global: torch.Tensor,
    *,
    weight_grad: bool = False,
) -> torch.Tensor:
    """Merge the sparse and global branches as one softmax over both key sets, in float32.

    Args:
        out_sparse, out_global: [B, H, L, D] outputs of each branch, each normalised over its keys.
        lse_sparse, lse_global: float32 [B, H, L] natural-log partition sums; -inf for a sparse row
            with no kept key, which then takes the global output alone.
        weight_grad: let gradients flow into the merge weight. The authors' kernel drops the LSE
            gradient, so by default the weight is detached.

    Returns:
        float32 [B, H, L, D] = a * out_sparse + (1 - a) * out_global with
        a = exp(lse_sparse) / (exp(lse_sparse) + exp(lse_global)) = sigmoid(lse_sparse - lse_global).
    """
    weight = torch.sigmoid(lse_sparse.float() - lse_global.float()).unsqueeze(-1)  # [B, H, L, 1]
    if not weight_grad:
        weight = weight.detach()
    out_global = out_global.float()
    return out_global + weight * (out_sparse.float() - out_global)
