"""How good a block mask is: attention recall against dense softmax and output error against dense.

These functions evaluate the dense attention matrix chunk by chunk over queries (never Lq x Lk at
once, but Lq x Lk work in total), so they are meant for analysis and tests at moderate L.
"""

from __future__ import annotations

import math

import torch

from blade.sparsity._checks import check_attention_tensor, check_positive_int

# dense probabilities held at once, in elements (float32: 4 bytes each)
_CHUNK_ELEMENTS = 1 << 24


def block_attention_mass(
    q: torch.Tensor, k: torch.Tensor, *, block_size: int, scale: float | None = None
) -> torch.Tensor:
    """Sum the dense softmax probabilities inside every (query block, key block) pair.

    Args:
        q: [B, H, Lq, D]; k: [B, H, Lk, D], in the token order the blocks are taken in.
        block_size: tokens per block; last blocks may be ragged.
        scale: logit scale; 1 / sqrt(D) when None.

    Returns:
        float32 [B, H, nq, nk]; row block i sums to the number of real queries in block i, and the
        whole tensor to Lq per (batch, head). Computed without gradients, in float32.
    """
    check_attention_tensor("q", q)
    check_attention_tensor("k", k, like=q)
    check_positive_int("block_size", block_size)
    batch, heads, q_len, dim = q.shape
    k_len = k.shape[2]
    scale = dim**-0.5 if scale is None else float(scale)
    q_blocks, k_blocks = math.ceil(q_len / block_size), math.ceil(k_len / block_size)

    mass = torch.zeros(batch, heads, q_blocks, k_blocks, dtype=torch.float32, device=q.device)
    rows = max(1, _CHUNK_ELEMENTS // (batch * heads * k_len))
    k_t = k.float().transpose(-1, -2)  # [B, H, D, Lk]
    full_blocks = k_len // block_size
    with torch.no_grad():
        for start in range(0, q_len, rows):
            stop = min(start + rows, q_len)
            # softmax in place: one [B, H, c, Lk] buffer per chunk
            probabilities = torch.matmul(q[:, :, start:stop].float(), k_t).mul_(scale)  # [B, H, c, Lk]
            probabilities.sub_(probabilities.amax(dim=-1, keepdim=True)).exp_()
            probabilities.div_(probabilities.sum(dim=-1, keepdim=True))
            per_row = torch.empty(batch, heads, stop - start, k_blocks, device=q.device)  # [B, H, c, nk]
            full = probabilities[..., : full_blocks * block_size]
            per_row[..., :full_blocks] = full.unflatten(-1, (full_blocks, block_size)).sum(dim=-1)
            if full_blocks < k_blocks:
                per_row[..., full_blocks] = probabilities[..., full_blocks * block_size :].sum(dim=-1)
            row_blocks = torch.arange(start, stop, device=q.device) // block_size  # [c]
            mass.index_add_(2, row_blocks, per_row)
    return mass


def attention_recall(
    q: torch.Tensor | None,
    k: torch.Tensor | None,
    block_mask: torch.Tensor,
    *,
    block_size: int,
    scale: float | None = None,
    block_mass: torch.Tensor | None = None,
) -> torch.Tensor:
    """Share of the dense softmax mass that falls inside the kept blocks, averaged over queries.

    Args:
        q, k: [B, H, L, D] in the order the mask's blocks refer to; unused when `block_mass` is given.
        block_mask: bool [B or 1, H or 1, nq, nk].
        block_size: tokens per block.
        scale: logit scale; 1 / sqrt(D) when None.
        block_mass: precomputed `block_attention_mass(q, k, ...)`, to score many masks on one input.

    Returns:
        float32 [B, H] in [0, 1]; 1 means the mask keeps every key that dense attention weights.
    """
    if block_mass is None:
        block_mass = block_attention_mass(q, k, block_size=block_size, scale=scale)
    if block_mask.dtype != torch.bool or block_mask.shape[-2:] != block_mass.shape[-2:]:
        raise ValueError(
            f"block_mask must be bool [.., {block_mass.shape[-2]}, {block_mass.shape[-1]}], "
            f"got {block_mask.dtype} {tuple(block_mask.shape)}"
        )
    queries = block_mass.sum(dim=(-2, -1))  # [B, H], = Lq
    return (block_mass * block_mask).sum(dim=(-2, -1)) / queries


def relative_l2_error(output: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Return ||output - reference|| / ||reference|| per (batch, head), in float32.

    Args:
        output, reference: [B, H, L, D], the same shape; compared in float32.

    Returns:
        float32 [B, H].
    """
    if output.shape != reference.shape:
        raise ValueError(f"output {tuple(output.shape)} and reference {tuple(reference.shape)} must match")
    difference = (output.float() - reference.float()).square().sum(dim=(-2, -1))
    return (difference / reference.float().square().sum(dim=(-2, -1))).sqrt()
