"""Block-mask strategies with one interface, to compare ASA with its peers at matched sparsity.

Every strategy takes q, k (raster order, [B, H, L, D]), the token grid and a target sparsity, and
returns a `StrategyMask`: the token order its blocks are taken in plus a bool block mask. Static
strategies keep exactly floor(nk * (1 - sparsity)) key blocks per query block (at least 1), ranked
by a fixed distance, so every strategy spends the same block budget:

- `dense_mask`: every block (the reference; ignores the target).
- `sliding_tile_mask`: tokens grouped into 3D tiles of block_size tokens, each query tile keeps the
  nearest key tiles in tile units, a static 3D window as in sliding tile attention (STA).
- `radial_mask`: raster order; the spatial window halves each time the temporal distance doubles, a
  static temporal-decay mask as in Radial Attention.
- `oracle_topk_mask`: the blocks with the most dense softmax mass (needs the full attention matrix;
  small L only); the upper bound of recall at a given budget.
- `asa_mask`: ASA's own estimate and selection (curve order), with top-k at the target budget.

Text tokens, if any, stay one run at their end of the sequence and their blocks are forced on in
both directions, on top of the budget.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from blade.config import BladeConfig
from blade.kernels import block_sparse_attention
from blade.sparsity.asa import asa_block_mask
from blade.sparsity.gilbert import check_grid_thw
from blade.sparsity.layout import check_text_layout, sequence_order, text_block_mask, with_text
from blade.sparsity.metrics import block_attention_mass
from blade.sparsity.select import select_blocks

__all__ = [
    "StrategyMask",
    "STRATEGIES",
    "dense_mask",
    "sliding_tile_mask",
    "radial_mask",
    "oracle_topk_mask",
    "asa_mask",
    "attend",
]


@dataclass(frozen=True)
class StrategyMask:
    """A block mask and the token order its blocks refer to.

    Attributes:
        name: strategy name.
        order: int64 [L]; ``order[i]`` is the input (raster) position of the i-th reordered token.
        inverse: int64 [L], the inverse permutation.
        block_mask: bool [B or 1, H or 1, nq, nk] over blocks of the reordered sequence.
        block_size: tokens per block.
    """

    name: str
    order: torch.Tensor
    inverse: torch.Tensor
    block_mask: torch.Tensor
    block_size: int

    @property
    def kept_fraction(self) -> torch.Tensor:
        """Share of kept block pairs, float32 [B or 1, H or 1]."""
        return self.block_mask.float().mean(dim=(-2, -1))

    def reorder(self, x: torch.Tensor) -> torch.Tensor:
        """Put [B, H, L, D] tokens from input order into this mask's order."""
        return x.index_select(2, self.order.to(x.device))


def _check_target(grid_thw, q, sparsity, block_size, text_tokens, text_position) -> tuple[int, int, int]:
    grid = check_grid_thw(grid_thw)
    check_text_layout(grid, q.shape[2], text_tokens, text_position)
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity!r}")
    if not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")
    return grid


def _video_coordinates(video_order: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """Return float64 [N, 3] (t, h, w) coordinates of raster indices."""
    _, height, width = grid
    t = video_order // (height * width)
    h = (video_order // width) % height
    w = video_order % width
    return torch.stack([t, h, w], dim=1).double()


def _block_centroids(
    video_order: torch.Tensor, grid, text_tokens: int, text_position: str, block_size: int
) -> torch.Tensor:
    """Return float64 [nb, 3] mean (t, h, w) of the video tokens of each block (0 for text-only blocks)."""
    coordinates = _video_coordinates(video_order, grid)  # [N, 3]
    offset = text_tokens if text_position == "prefix" else 0
    positions = torch.arange(video_order.numel()) + offset  # sequence position of each video token
    blocks = math.ceil((video_order.numel() + text_tokens) / block_size)
    block_of = positions // block_size
    sums = torch.zeros(blocks, 3, dtype=torch.float64).index_add_(0, block_of, coordinates)
    counts = torch.zeros(blocks, dtype=torch.float64).index_add_(0, block_of, torch.ones(len(block_of)).double())
    return sums / counts.clamp_min(1.0)[:, None]


def _static_plan(
    name: str,
    q: torch.Tensor,
    video_order: torch.Tensor,
    cost: torch.Tensor,
    sparsity: float,
    block_size: int,
    text_tokens: int,
    text_position: str,
) -> StrategyMask:
    order, inverse = with_text(video_order, text_tokens, text_position)
    forced = text_block_mask(q.shape[2], text_tokens, text_position, block_size, q.device)
    mask = select_blocks(
        -cost.to(q.device)[None, None], mode="topk", max_ratio=1.0 - sparsity, forced=forced
    )  # [1, 1, nq, nk]
    return StrategyMask(name, order.to(q.device), inverse.to(q.device), mask, block_size)


def dense_mask(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    grid_thw: Sequence[int],
    sparsity: float = 0.0,
    block_size: int = 128,
    text_tokens: int = 0,
    text_position: str = "prefix",
) -> StrategyMask:
    """Keep every block, in input order; `sparsity` is accepted for the common interface and ignored."""
    _check_target(grid_thw, q, 0.0, block_size, text_tokens, text_position)
    length = q.shape[2]
    blocks = math.ceil(length / block_size)
    identity = torch.arange(length, device=q.device)
    mask = torch.ones(1, 1, blocks, blocks, dtype=torch.bool, device=q.device)
    return StrategyMask("dense", identity, identity, mask, block_size)


def tile_shape(grid_thw: Sequence[int], block_size: int) -> tuple[int, int, int]:
    """Choose a (t, h, w) tile of exactly block_size tokens, as cubic as the grid allows.

    Among the factorisations of block_size that fit inside the grid, take the one with the smallest
    spread of log side lengths (ties: larger w, then larger h); when none fits, the most cubic one.
    """
    candidates = []
    for t in range(1, block_size + 1):
        if block_size % t:
            continue
        for h in range(1, block_size // t + 1):
            if (block_size // t) % h:
                continue
            w = block_size // (t * h)
            fits = t <= grid_thw[0] and h <= grid_thw[1] and w <= grid_thw[2]
            sides = [math.log(t), math.log(h), math.log(w)]
            candidates.append((not fits, max(sides) - min(sides), -w, -h, (t, h, w)))
    return min(candidates)[-1]


@functools.lru_cache(maxsize=16)
def _sliding_tile_layout(grid, block_size, text_tokens, text_position):
    tile = tile_shape(grid, block_size)
    raster = torch.arange(grid[0] * grid[1] * grid[2])
    coordinates = _video_coordinates(raster, grid).long()  # [N, 3]
    tile_index = coordinates // torch.tensor(tile)  # [N, 3] tile coordinates
    tiles_per_axis = [math.ceil(n / s) for n, s in zip(grid, tile)]
    tile_id = (tile_index[:, 0] * tiles_per_axis[1] + tile_index[:, 1]) * tiles_per_axis[2] + tile_index[:, 2]
    # tile by tile, raster inside each tile (stable sort keeps raster order within a tile)
    video_order = torch.sort(tile_id, stable=True).indices
    centroids = _block_centroids(video_order, grid, text_tokens, text_position, block_size)
    in_tiles = (centroids[:, None, :] - centroids[None, :, :]).abs() / torch.tensor(tile).double()
    # a cube window in tile units; Euclidean distance breaks ties between equally far tiles
    cost = in_tiles.amax(dim=-1) + 1e-3 * in_tiles.norm(dim=-1)  # [nb, nb]
    return video_order, cost


def sliding_tile_mask(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    grid_thw: Sequence[int],
    sparsity: float,
    block_size: int = 128,
    text_tokens: int = 0,
    text_position: str = "prefix",
) -> StrategyMask:
    """Static 3D window over tiles of block_size tokens (`tile_shape`), nearest tiles first."""
    grid = _check_target(grid_thw, q, sparsity, block_size, text_tokens, text_position)
    video_order, cost = _sliding_tile_layout(grid, block_size, text_tokens, text_position)
    return _static_plan("sliding_tile", q, video_order, cost, sparsity, block_size, text_tokens, text_position)


@functools.lru_cache(maxsize=16)
def _radial_cost(grid, block_size, text_tokens, text_position):
    raster = torch.arange(grid[0] * grid[1] * grid[2])
    centroids = _block_centroids(raster, grid, text_tokens, text_position, block_size)
    delta = (centroids[:, None, :] - centroids[None, :, :]).abs()  # [nb, nb, 3]
    frames_apart = delta[..., 0]
    spatial = delta[..., 1:].norm(dim=-1)
    # the kept spatial radius halves each time the frame distance doubles: |ds| * 2^floor(log2 dt) <= r
    decay = torch.exp2(torch.floor(torch.log2(frames_apart.clamp_min(1.0))))
    return raster, spatial * decay + 1e-3 * frames_apart


def radial_mask(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    grid_thw: Sequence[int],
    sparsity: float,
    block_size: int = 128,
    text_tokens: int = 0,
    text_position: str = "prefix",
) -> StrategyMask:
    """Static radial mask in raster order: spatial window shrinking with temporal distance."""
    grid = _check_target(grid_thw, q, sparsity, block_size, text_tokens, text_position)
    raster, cost = _radial_cost(grid, block_size, text_tokens, text_position)
    return _static_plan("radial", q, raster, cost, sparsity, block_size, text_tokens, text_position)


def oracle_topk_mask(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    grid_thw: Sequence[int],
    sparsity: float,
    block_size: int = 128,
    text_tokens: int = 0,
    text_position: str = "prefix",
    block_mass: torch.Tensor | None = None,
) -> StrategyMask:
    """Keep, per query block, the key blocks with the most dense softmax mass (curve order).

    Evaluates the full attention matrix in query chunks (`blade.sparsity.metrics.block_attention_mass`),
    so it is for small L. Pass `block_mass` (in curve order) to reuse one evaluation for many budgets.
    """
    grid = _check_target(grid_thw, q, sparsity, block_size, text_tokens, text_position)
    order, inverse = sequence_order(grid, text_tokens, text_position, q.device)
    if block_mass is None:
        block_mass = block_attention_mass(q.index_select(2, order), k.index_select(2, order), block_size=block_size)
    forced = text_block_mask(q.shape[2], text_tokens, text_position, block_size, q.device)
    mask = select_blocks(block_mass, mode="topk", max_ratio=1.0 - sparsity, forced=forced)
    return StrategyMask("oracle_topk", order, inverse, mask, block_size)


def asa_mask(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    grid_thw: Sequence[int],
    sparsity: float,
    block_size: int = 128,
    text_tokens: int = 0,
    text_position: str = "prefix",
    config: BladeConfig | None = None,
    generator: torch.Generator | None = None,
) -> StrategyMask:
    """ASA's sampled estimate, selected top-k at the budget 1 - sparsity (curve order).

    `config` supplies samples_per_block and pooling (default `BladeConfig()`); its block size and
    selection settings are overridden by the arguments. `generator` defaults to one seeded with
    config.seed.
    """
    grid = _check_target(grid_thw, q, sparsity, block_size, text_tokens, text_position)
    config = BladeConfig() if config is None else config
    config = dataclasses.replace(
        config,
        block_size=block_size,
        samples_per_block=min(config.samples_per_block, block_size),
        selection="topk",
        min_ratio=0.0,
        max_ratio=1.0 - sparsity,
    )
    if generator is None:
        generator = torch.Generator(device=q.device).manual_seed(config.seed)
    order, inverse = sequence_order(grid, text_tokens, text_position, q.device)
    mask, _ = asa_block_mask(
        q.index_select(2, order),
        k.index_select(2, order),
        config=config,
        generator=generator,
        text_tokens=text_tokens,
        text_position=text_position,
    )
    return StrategyMask("asa", order, inverse, mask, block_size)


def attend(
    plan: StrategyMask, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, backend: str = "auto"
) -> torch.Tensor:
    """Run block-sparse attention under a strategy's mask; q, k, v and the output in input order."""
    out = block_sparse_attention(
        plan.reorder(q), plan.reorder(k), plan.reorder(v), plan.block_mask, block_size=plan.block_size, backend=backend
    )
    return out.index_select(2, plan.inverse.to(out.device))


# name -> strategy function, all with the signature of `sliding_tile_mask`
STRATEGIES = {
    "dense": dense_mask,
    "sliding_tile": sliding_tile_mask,
    "radial": radial_mask,
    "oracle_topk": oracle_topk_mask,
    "asa": asa_mask,
}
