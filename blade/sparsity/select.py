"""Turn block scores into a block mask: cumulative-energy or top-k selection per query block."""

from __future__ import annotations

import math

import torch

SELECTION_MODES = ("energy", "topk")

# floor(nk * ratio) must not lose a block to rounding (0.29 * 100 = 28.999999999999996)
_RATIO_EPSILON = 1e-9


def ratio_to_count(blocks: int, ratio: float) -> int:
    """Return floor(blocks * ratio), robust to float rounding."""
    return math.floor(blocks * ratio + _RATIO_EPSILON)


def select_blocks(
    scores: torch.Tensor,
    *,
    mode: str = "energy",
    threshold: float = 0.95,
    min_ratio: float = 0.05,
    max_ratio: float = 0.17,
    forced: torch.Tensor | None = None,
) -> torch.Tensor:
    """Select the key blocks each query block attends to.

    Args:
        scores: [..., nq, nk] block scores (float; rows need not be normalised for "topk", and
            should sum to 1 for "energy").
        mode: "energy" keeps per row the fewest highest-scoring blocks whose cumulative score reaches
            `threshold`, then clamps that count to [floor(nk * min_ratio), floor(nk * max_ratio)];
            "topk" keeps floor(nk * max_ratio) blocks per row. Both keep at least one block per row.
            Ties go to the lower key-block index.
        threshold: cumulative score target tau of "energy", in (0, 1].
        min_ratio, max_ratio: bounds on the kept share of key blocks, 0 <= min_ratio <= max_ratio <= 1.
        forced: optional bool mask broadcastable to `scores`, OR-ed into the result (text blocks,
            the diagonal, ...). Forced blocks come on top of the count above.

    Returns:
        bool [..., nq, nk]; every row has at least one True.
    """
    if not isinstance(scores, torch.Tensor) or scores.dim() < 2 or not scores.is_floating_point():
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise ValueError(f"scores must be a floating tensor [..., nq, nk], got {shape}")
    if mode not in SELECTION_MODES:
        raise ValueError(f"mode must be one of {SELECTION_MODES}, got {mode!r}")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
    if not 0.0 <= min_ratio <= max_ratio <= 1.0:
        raise ValueError(
            "ratios must satisfy 0 <= min_ratio <= max_ratio <= 1, "
            f"got min_ratio={min_ratio!r}, max_ratio={max_ratio!r}"
        )
    if forced is not None and (not isinstance(forced, torch.Tensor) or forced.dtype != torch.bool):
        raise TypeError(f"forced must be a bool tensor broadcastable to {tuple(scores.shape)}, got {forced!r}")

    key_blocks = scores.shape[-1]
    upper = max(1, ratio_to_count(key_blocks, max_ratio))
    ranked, order = torch.sort(scores.float(), dim=-1, descending=True, stable=True)  # [..., nq, nk]
    if mode == "topk":
        counts = torch.full(scores.shape[:-1], upper, device=scores.device)  # [..., nq]
    else:
        lower = max(1, ratio_to_count(key_blocks, min_ratio))
        cumulative = ranked.cumsum(dim=-1)
        # blocks strictly below the threshold, plus the one that reaches it
        counts = (cumulative < threshold).sum(dim=-1) + 1  # [..., nq]
        counts = counts.clamp(min=lower, max=upper)

    ranks = torch.arange(key_blocks, device=scores.device)  # [nk]
    keep_ranked = ranks < counts.unsqueeze(-1)  # [..., nq, nk], in score order
    mask = torch.zeros_like(keep_ranked).scatter(-1, order, keep_ranked)
    if forced is not None:
        mask = mask | forced
    return mask
