"""The `flex` backend: compiled `torch.nn.attention.flex_attention` over a `BlockMask` built from
block indices.

The `BlockMask` comes from `BlockMask.from_kv_blocks`, which takes the kept key-block indices
directly; `create_block_mask` would evaluate a mask function on all Lq x Lk positions. Kept blocks are
passed as "full" blocks, so no per-element mask function runs inside them.

Limits (torch 2.13): on CPU FlexAttention has no backward and its compiled form cannot return the LSE,
and eager FlexAttention ignores the block indices, so it is only used compiled. Every shape compiles
once (seconds); a new mask of the same shape reuses the compiled kernel.
"""

from __future__ import annotations

import functools

import torch

from blade.kernels.masks import num_blocks

# Dynamo recompiles the flex kernel for every new input shape. Past its default recompile limit (8)
# dynamo would silently run the function eagerly, and eager flex ignores the block indices, so the
# limit is raised and a hit turns into an error rather than a wrong result.
_RECOMPILE_LIMIT = 256


@functools.cache
def _compiled_flex_attention():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False, fullgraph=True)


def flex_is_available() -> bool:
    """Return whether FlexAttention can be imported and compiled on this machine."""
    try:
        from torch.nn.attention.flex_attention import BlockMask, flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


def flex_supports(device: torch.device, needs_grad: bool, return_lse: bool) -> tuple[bool, str]:
    """Return (supported, reason) for a request on `device`."""
    if device.type == "cpu" and needs_grad:
        return False, "FlexAttention has no backward on CPU"
    if device.type == "cpu" and return_lse:
        return False, "compiled FlexAttention cannot return the LSE on CPU"
    return True, ""


def build_flex_block_mask(
    block_mask: torch.Tensor,
    batch: int,
    heads: int,
    q_len: int,
    k_len: int,
    block_size: int,
    for_backward: bool = True,
):
    """Turn a bool block mask into a FlexAttention `BlockMask` of kept "full" blocks.

    Args:
        block_mask: bool `[B or 1, H or 1, nq, nk]`.
        batch, heads, q_len, k_len, block_size: attention sizes.
        for_backward: also build the transposed (key-block to query-block) indices that only the
            backward pass reads.

    Returns:
        a `torch.nn.attention.flex_attention.BlockMask`.
    """
    from torch.nn.attention.flex_attention import BlockMask

    n_q, n_k = num_blocks(q_len, block_size), num_blocks(k_len, block_size)
    mask = block_mask.expand(batch, heads, n_q, n_k)
    kept_counts = mask.sum(dim=-1, dtype=torch.int32)  # [B, H, nq]
    # A stable sort of ~mask puts the kept block indices first, in ascending order.
    kept_indices = torch.argsort((~mask).to(torch.int8), dim=-1, stable=True).to(torch.int32)  # [B, H, nq, nk]
    no_partial_counts = torch.zeros_like(kept_counts)
    # Passing the same tensor as partial and full indices fails to compile, so the partial ones are a copy.
    return BlockMask.from_kv_blocks(
        no_partial_counts,
        kept_indices.clone(),
        kept_counts,
        kept_indices,
        BLOCK_SIZE=block_size,
        seq_lengths=(q_len, k_len),
        compute_q_blocks=for_backward,
    )


def flex_block_sparse_attention(q, k, v, block_mask, block_size, scale, return_lse):
    """Run the `flex` backend. Shapes as in `block_sparse_attention`; returns (out, lse or None)."""
    batch, heads, q_len, _ = q.shape
    k_len = k.shape[2]
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    flex_mask = build_flex_block_mask(block_mask, batch, heads, q_len, k_len, block_size, for_backward=needs_grad)
    with torch._dynamo.config.patch(recompile_limit=_RECOMPILE_LIMIT, fail_on_recompile_limit_hit=True):
        result = _compiled_flex_attention()(q, k, v, block_mask=flex_mask, scale=scale, return_lse=return_lse)
    if return_lse:
        out, lse = result
        return out, lse.float()
    return result, None
