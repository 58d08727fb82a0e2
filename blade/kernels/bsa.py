"""The `bsa` backend: the `block_sparse_attn` CUDA library (mit-han-lab, Block-Sparse-Attention).

Its kernels take variable-length packed inputs ([total tokens, H, D] with cumulative sequence lengths)
and a per-head block mask of 128 x 128 blocks, in float16 or bfloat16, for head dims 32, 64 and 128.
It returns no log-sum-exp, so requests that need the LSE go to another backend.

NOTE: no GPU was available where this wrapper was written; its test carries the `gpu` marker and has
not run yet.
"""

from __future__ import annotations

import functools

import torch

BSA_BLOCK_SIZE = 128
BSA_HEAD_DIMS = (32, 64, 128)
BSA_DTYPES = (torch.float16, torch.bfloat16)


@functools.cache
def _bsa_function():
    try:
        from block_sparse_attn import block_sparse_attn_func
    except ImportError:
        return None
    return block_sparse_attn_func


def bsa_is_available() -> bool:
    """Return whether `block_sparse_attn` imports and a CUDA device exists."""
    return torch.cuda.is_available() and _bsa_function() is not None


def bsa_supports(device, dtype, head_dim, block_size, return_lse) -> tuple[bool, str]:
    """Return (supported, reason) for a request."""
    if device.type != "cuda":
        return False, "block_sparse_attn runs on CUDA devices only"
    if dtype not in BSA_DTYPES:
        return False, f"block_sparse_attn takes float16 or bfloat16, not {dtype}"
    if head_dim not in BSA_HEAD_DIMS:
        return False, f"block_sparse_attn supports head dims {BSA_HEAD_DIMS}, not {head_dim}"
    if block_size != BSA_BLOCK_SIZE:
        return False, f"block_sparse_attn uses blocks of {BSA_BLOCK_SIZE} tokens, not {block_size}"
    if return_lse:
        return False, "block_sparse_attn returns no log-sum-exp"
    return True, ""


def bsa_block_sparse_attention(q, k, v, block_mask, block_size, scale):
    """Run the `bsa` backend. Shapes as in `block_sparse_attention`; returns (out, None)."""
    batch, heads, q_len, head_dim = q.shape
    k_len = k.shape[2]
    function = _bsa_function()
    # [B, H, L, D] -> packed [B * L, H, D] with one sequence per batch element
    packed_q = q.transpose(1, 2).reshape(batch * q_len, heads, head_dim)
    packed_k = k.transpose(1, 2).reshape(batch * k_len, heads, head_dim)
    packed_v = v.transpose(1, 2).reshape(batch * k_len, heads, head_dim)
    cu_seqlens_q = torch.arange(0, (batch + 1) * q_len, q_len, dtype=torch.int32, device=q.device)
    cu_seqlens_k = torch.arange(0, (batch + 1) * k_len, k_len, dtype=torch.int32, device=q.device)
    head_mask_type = torch.ones(heads, dtype=torch.int32, device=q.device)  # 1 = block-sparse head
    n_q, n_k = block_mask.shape[-2:]
    base_blockmask = block_mask.expand(batch, heads, n_q, n_k).contiguous()
    packed_out = function(
        packed_q, packed_k, packed_v,
        cu_seqlens_q, cu_seqlens_k,
        head_mask_type, None, base_blockmask,
        q_len, k_len, 0.0,
        deterministic=False, softmax_scale=scale, is_causal=False,
    )
    return packed_out.view(batch, q_len, heads, head_dim).transpose(1, 2), None
