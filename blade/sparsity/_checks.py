"""Input checks shared by the public functions of blade.sparsity."""

from __future__ import annotations

import torch


def check_attention_tensor(name: str, tensor, *, like: torch.Tensor | None = None) -> None:
    """Raise TypeError/ValueError unless `tensor` is a floating [B, H, L, D] tensor matching `like`."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape [B, H, L, D], got {type(tensor).__name__}")
    if tensor.dim() != 4:
        raise ValueError(
            f"{name} must have shape [B, H, L, D] (4 dims), got {tuple(tensor.shape)}; "
            "move the head axis before the sequence axis, e.g. x.transpose(1, 2)"
        )
    if not tensor.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor (float32, bfloat16, float16), got {tensor.dtype}")
    if like is None:
        return
    if tensor.device != like.device:
        raise ValueError(f"{name} is on {tensor.device} but q is on {like.device}; move both to one device")
    batch, heads, _, dim = like.shape
    if (tensor.shape[0], tensor.shape[1], tensor.shape[3]) != (batch, heads, dim):
        raise ValueError(
            f"{name} must share B, H and D with q {tuple(like.shape)}, got {tuple(tensor.shape)}"
        )


def check_positive_int(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def check_generator(generator) -> None:
    if not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator (e.g. torch.Generator().manual_seed(0)), "
            f"got {type(generator).__name__}"
        )
