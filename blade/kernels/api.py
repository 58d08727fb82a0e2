"""`block_sparse_attention`: exact softmax attention restricted to kept (query block, key block) pairs,
with one entry point over several backends."""

from __future__ import annotations

import logging
import math
import shutil

import torch

from blade.kernels.bsa import bsa_block_sparse_attention, bsa_is_available, bsa_supports
from blade.kernels.flex import flex_block_sparse_attention, flex_is_available, flex_supports
from blade.kernels.masks import num_blocks
from blade.kernels.reference import reference_attention
from blade.kernels.torch_blocks import torch_block_sparse_attention

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "reference", "torch", "flex", "bsa")
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# Backends `auto` tries, fastest first, by (device type, dtype). CPU orders come from
# `blade bench attention` on an idle 2-core AVX-512 EPYC (docs/benchmarks.md): at L=16384, H=12, D=64,
# sparsity 0.8 the torch backend's float32 forward ran 3.86x faster than dense SDPA and compiled flex
# 3.16x; in bfloat16 flex is slower still.
_AUTO_ORDER = {
    ("cpu", torch.float32): ("torch", "flex"),
    ("cpu", torch.bfloat16): ("torch", "flex"),
    ("cpu", torch.float16): ("torch", "flex"),
    ("cuda", torch.float32): ("flex", "torch"),
    ("cuda", torch.bfloat16): ("bsa", "flex", "torch"),
    ("cuda", torch.float16): ("bsa", "flex", "torch"),
}
_DEFAULT_AUTO_ORDER = ("torch",)

_warned_fallbacks: set[tuple] = set()


def _has_cxx_compiler() -> bool:
    # torch.compile on CPU generates C++ and needs a compiler on PATH.
    return any(shutil.which(name) for name in ("g++", "c++", "clang++"))


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    """List the backends usable on `device` (the pseudo-backend "auto" is always usable).

    Args:
        device: the device the tensors will live on.

    Returns:
        backend names, e.g. ["auto", "reference", "torch", "flex"] on a CPU with a C++ compiler.
    """
    device = torch.device(device)
    names = ["auto", "reference", "torch"]
    if flex_is_available() and (device.type != "cpu" or _has_cxx_compiler()):
        names.append("flex")
    if device.type == "cuda" and bsa_is_available():
        names.append("bsa")
    return names


def _describe(tensor: torch.Tensor) -> str:
    return f"shape {tuple(tensor.shape)}, dtype {tensor.dtype}, device {tensor.device}"


def _validate(q, k, v, block_mask, block_size, scale):
    for name, tensor in (("q", q), ("k", k), ("v", v), ("block_mask", block_mask)):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    for name, tensor, layout in (("q", q, "[B, H, Lq, D]"), ("k", k, "[B, H, Lk, D]"), ("v", v, "[B, H, Lk, D]")):
        if tensor.dim() != 4:
            raise ValueError(f"{name} must be 4-D {layout}, got {tensor.dim()}-D tensor with shape {tuple(tensor.shape)}")
    if q.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"q must have dtype float32, float16 or bfloat16, got {q.dtype}")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"q, k and v must share one dtype, got q {q.dtype}, k {k.dtype}, v {v.dtype}")
    if k.device != q.device or v.device != q.device or block_mask.device != q.device:
        raise ValueError(
            f"q, k, v and block_mask must be on one device, got q {q.device}, k {k.device}, v {v.device}, "
            f"block_mask {block_mask.device}"
        )
    batch, heads, q_len, head_dim = q.shape
    if k.shape[0] != batch or k.shape[1] != heads or k.shape[3] != head_dim:
        raise ValueError(f"k must have shape [B={batch}, H={heads}, Lk, D={head_dim}] to match q, got {tuple(k.shape)}")
    if v.shape != k.shape:
        raise ValueError(f"v must have the same shape as k {tuple(k.shape)}, got {tuple(v.shape)}")
    if head_dim < 1 or q_len < 1 or k.shape[2] < 1:
        raise ValueError(f"q and k need at least one token and one channel, got q {tuple(q.shape)}, k {tuple(k.shape)}")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")

    k_len = k.shape[2]
    n_q, n_k = num_blocks(q_len, block_size), num_blocks(k_len, block_size)
    expected = f"[1 or B={batch}, 1 or H={heads}, {n_q}, {n_k}] for Lq={q_len}, Lk={k_len} and block_size={block_size}"
    if block_mask.dtype != torch.bool:
        raise TypeError(f"block_mask must be a bool tensor {expected}, got dtype {block_mask.dtype} (use .bool())")
    if (
        block_mask.dim() != 4
        or block_mask.shape[0] not in (1, batch)
        or block_mask.shape[1] not in (1, heads)
        or tuple(block_mask.shape[2:]) != (n_q, n_k)
    ):
        raise ValueError(f"block_mask must have shape {expected}, got {tuple(block_mask.shape)}")

    if scale is None:
        return 1.0 / math.sqrt(head_dim)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a positive finite float or None (1/sqrt(D)), got {scale!r}")
    return float(scale)


def _request_text(q, needs_grad, return_lse) -> str:
    parts = ["forward + backward" if needs_grad else "forward"]
    if return_lse:
        parts.append("with LSE")
    return f"{q.device.type} {str(q.dtype).removeprefix('torch.')} {' '.join(parts)}, head dim {q.shape[-1]}"


def _unsupported_reason(backend, q, block_size, needs_grad, return_lse) -> str:
    """Return why `backend` cannot serve this request, or "" when it can."""
    if backend not in available_backends(q.device):
        return f"backend {backend!r} is not available on {q.device.type} (available: {available_backends(q.device)})"
    if backend == "flex":
        return flex_supports(q.device, needs_grad, return_lse)[1]
    if backend == "bsa":
        supported, reason = bsa_supports(q.device, q.dtype, q.shape[-1], block_size, return_lse)
        return reason if not supported else ""
    return ""


def _choose_auto(q, block_size, needs_grad, return_lse) -> str:
    order = _AUTO_ORDER.get((q.device.type, q.dtype), _DEFAULT_AUTO_ORDER)
    reasons = []
    for backend in order:
        reason = _unsupported_reason(backend, q, block_size, needs_grad, return_lse)
        if not reason:
            if reasons:
                key = (q.device.type, q.dtype, needs_grad, return_lse, backend)
                if key not in _warned_fallbacks:
                    _warned_fallbacks.add(key)
                    logger.warning(
                        "auto backend: requested %s; the faster %s; using %r",
                        _request_text(q, needs_grad, return_lse),
                        "; ".join(reasons),
                        backend,
                    )
            return backend
        reasons.append(f"{order[len(reasons)]!r} cannot serve it ({reason})")
    return "torch"


def resolve_backend(backend, q, block_size, *, needs_grad, return_lse) -> tuple[str, str]:
    """Return (backend that would run, "" or the reason it cannot) for a request like `q`'s.

    "auto" resolves to the backend it would choose, and it always finds one. An explicit backend
    resolves to itself, with the reason when it cannot serve the request.
    """
    if backend == "auto":
        return _choose_auto(q, block_size, needs_grad, return_lse), ""
    return backend, _unsupported_reason(backend, q, block_size, needs_grad, return_lse)


def block_sparse_attention(q, k, v, block_mask, *, block_size=128, backend="auto", scale=None, return_lse=False):
    """Compute exact softmax attention restricted to the kept (query block, key block) pairs.

    Query block i covers tokens [i * block_size, (i + 1) * block_size) of q, and key block j the same
    range of k and v. The last block of each is ragged when block_size does not divide the length.

    Args:
        q: `[B, H, Lq, D]` queries, float32, float16 or bfloat16.
        k, v: `[B, H, Lk, D]` keys and values, same dtype and device as q. Lk may differ from Lq.
        block_mask: bool `[B or 1, H or 1, ceil(Lq / block_size), ceil(Lk / block_size)]`; True keeps
            a block pair. A size-1 batch or head dimension broadcasts.
        block_size: tokens per block on both axes.
        backend: "auto" (the fastest backend that supports the request), "reference" (dense float32
            under the expanded mask; exact, Lq x Lk memory, for tests), "torch" (pure PyTorch, forward
            and backward, memory grows with the kept blocks), "flex" (compiled FlexAttention; on CPU
            forward only and without LSE) or "bsa" (the block_sparse_attn CUDA library).
        scale: logit scale; None means 1 / sqrt(D).
        return_lse: also return the natural-log log-sum-exp of the kept logits.

    Returns:
        out `[B, H, Lq, D]` in q's dtype, and with return_lse=True a tuple (out, lse) with lse
        `[B, H, Lq]` float32. A query whose mask row is all False gets out = 0 and lse = -inf.

    Raises:
        TypeError, ValueError: on invalid tensors, mask shape, block size, scale or backend; the
            message names the argument, the expected and the received value.
    """
    scale = _validate(q, k, v, block_mask, block_size, scale)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))

    if backend == "auto":
        backend = _choose_auto(q, block_size, needs_grad, return_lse)
    else:
        reason = _unsupported_reason(backend, q, block_size, needs_grad, return_lse)
        if reason:
            raise ValueError(
                f"backend {backend!r} cannot serve this request ({_request_text(q, needs_grad, return_lse)}): "
                f"{reason}; use backend='auto' or one of {available_backends(q.device)}"
            )

    if backend == "reference":
        out, lse = reference_attention(q, k, v, block_mask, block_size, scale)
    elif backend == "torch":
        out, lse = torch_block_sparse_attention(q, k, v, block_mask, block_size, scale)
    elif backend == "flex":
        out, lse = flex_block_sparse_attention(q, k, v, block_mask, block_size, scale, return_lse)
    else:
        out, lse = bsa_block_sparse_attention(q, k, v, block_mask, block_size, scale)
    return (out, lse) if return_lse else out
