"""Block-mask helpers shared by the kernels, the tests and the benchmark.

Layout: a block mask is bool `[B or 1, H or 1, n_q_blocks, n_k_blocks]`; True means "compute this
(query block, key block) pair". Block i of a sequence of length L covers tokens
[i * block_size, min((i + 1) * block_size, L)), so the last block is ragged when block_size does not
divide L.
"""

from __future__ import annotations

import math

import torch


def num_blocks(length: int, block_size: int) -> int:
    """Return ceil(length / block_size), the number of blocks covering `length` tokens."""
    return math.ceil(length / block_size)


def expand_block_mask(block_mask: torch.Tensor, q_len: int, k_len: int, block_size: int) -> torch.Tensor:
    """Expand a block mask to a token-level mask.

    Args:
        block_mask: bool `[B', H', ceil(q_len / bs), ceil(k_len / bs)]`.
        q_len, k_len: token lengths of the queries and keys.
        block_size: tokens per block.

    Returns:
        bool `[B', H', q_len, k_len]`. This is an Lq x Lk tensor: use it only in references and tests.
    """
    token_mask = block_mask.repeat_interleave(block_size, dim=-2).repeat_interleave(block_size, dim=-1)
    return token_mask[..., :q_len, :k_len]  # [B', H', Lq, Lk]


def random_block_mask(
    batch: int,
    heads: int,
    n_q_blocks: int,
    n_k_blocks: int,
    density: float,
    *,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
    equal_rows: bool = True,
) -> torch.Tensor:
    """Draw a random block mask with the given density of kept blocks.

    Args:
        batch, heads, n_q_blocks, n_k_blocks: mask shape.
        density: fraction of kept blocks in (0, 1].
        generator: the source of randomness (the global RNG is not used).
        device: device of the returned mask.
        equal_rows: keep exactly round(density * n_k_blocks) blocks (at least 1) in every row, like
            ASA at its ratio clamp; otherwise keep each block independently with probability
            `density`, so rows differ in length and some may be empty.

    Returns:
        bool `[batch, heads, n_q_blocks, n_k_blocks]`.
    """
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density!r}")
    shape = (batch, heads, n_q_blocks, n_k_blocks)
    scores = torch.rand(shape, generator=generator)
    if equal_rows:
        keep = max(1, round(density * n_k_blocks))
        top = scores.topk(keep, dim=-1).indices  # [B, H, nq, keep]
        mask = torch.zeros(shape, dtype=torch.bool).scatter_(-1, top, True)
    else:
        mask = scores < density
    return mask.to(device)
