"""Token layout of a joint [text | video] or [video | text] sequence: curve order and text blocks.

Video tokens come in raster order (t, h, w with w fastest). ASA puts them in Gilbert-curve order; text
tokens stay one contiguous run at the same end of the sequence, so the reordering never splits them.
Everything here is cached per shape key, so a layer call only looks tables up.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch

from blade.sparsity.gilbert import gilbert_order

TEXT_POSITIONS = ("prefix", "suffix")

# (grid, text_tokens, text_position, device) -> (order, inverse)
_ORDER_CACHE: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def check_text_layout(grid_thw: Sequence[int], length: int, text_tokens: int, text_position: str) -> None:
    """Raise ValueError unless `length` is T*H*W video tokens plus `text_tokens` at `text_position`."""
    if not isinstance(text_tokens, int) or isinstance(text_tokens, bool) or text_tokens < 0:
        raise ValueError(f"text_tokens must be an int >= 0, got {text_tokens!r}")
    if text_position not in TEXT_POSITIONS:
        raise ValueError(f"text_position must be one of {TEXT_POSITIONS}, got {text_position!r}")
    frames, height, width = grid_thw
    video_tokens = frames * height * width
    if length != video_tokens + text_tokens:
        raise ValueError(
            f"sequence length {length} does not match grid_thw={tuple(grid_thw)} ({video_tokens} video "
            f"tokens) plus text_tokens={text_tokens}; pass the post-patch grid (T, H, W) of the latent"
        )


def with_text(video_order: torch.Tensor, text_tokens: int, text_position: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Extend an order of the video tokens to the whole sequence, text kept as one run at its end.

    Args:
        video_order: int64 [T*H*W], raster indices of the video tokens in the wanted order.
        text_tokens, text_position: the text run ("prefix" or "suffix") of the input sequence.

    Returns:
        order: int64 [L], the input position of each token in the new order, and its inverse.
    """
    video_tokens = video_order.numel()
    text = torch.arange(text_tokens, device=video_order.device)
    if text_position == "prefix":
        order = torch.cat([text, video_order + text_tokens])
    else:
        order = torch.cat([video_order, text + video_tokens])
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=order.device)
    return order, inverse


def sequence_order(
    grid_thw: Sequence[int], text_tokens: int, text_position: str, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the curve order of a whole sequence and its inverse, int64 [L] each, cached.

    ``order[i]`` is the input position of the i-th token in curve order. Video tokens follow the
    Gilbert curve; text tokens keep their input order and their end of the sequence.
    """
    grid = tuple(int(n) for n in grid_thw)
    device = torch.device(device)
    key = (grid, text_tokens, text_position, device)
    cached = _ORDER_CACHE.get(key)
    if cached is None:
        video_order, _ = gilbert_order(grid)
        order, inverse = with_text(video_order, text_tokens, text_position)
        cached = (order.to(device), inverse.to(device))
        _ORDER_CACHE[key] = cached
    return cached


@functools.lru_cache(maxsize=64)
def _text_blocks(length: int, text_tokens: int, text_position: str, block_size: int) -> tuple[int, int]:
    """Return the [first, stop) range of blocks that hold at least one text token."""
    if text_position == "prefix":
        return 0, math.ceil(text_tokens / block_size)
    return (length - text_tokens) // block_size, math.ceil(length / block_size)


@functools.lru_cache(maxsize=64)
def text_block_mask(
    length: int, text_tokens: int, text_position: str, block_size: int, device: torch.device
) -> torch.Tensor | None:
    """Return the blocks forced on by text tokens, bool [1, 1, nb, nb], or None without text.

    Every query block sees the key blocks holding text, and the query blocks holding text see every
    key block, as in CogVideoX's joint attention where text and video attend to each other fully.
    Cached per argument tuple; treat the result as read-only.
    """
    if text_tokens == 0:
        return None
    blocks = math.ceil(length / block_size)
    first, stop = _text_blocks(length, text_tokens, text_position, block_size)
    forced = torch.zeros(1, 1, blocks, blocks, dtype=torch.bool, device=device)
    forced[:, :, first:stop, :] = True
    forced[:, :, :, first:stop] = True
    return forced
