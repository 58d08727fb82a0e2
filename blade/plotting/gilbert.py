"""Figures of the Gilbert curve order on a latent token grid and of the 3D blocks it makes."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from blade.sparsity import gilbert_order
from blade.sparsity.gilbert import check_grid_thw


def block_extents(order: torch.Tensor, grid_thw: Sequence[int], block_size: int) -> torch.Tensor:
    """Measure the bounding box of each block of consecutive tokens in a given order.

    Args:
        order: int64 [T*H*W]; ``order[i]`` is the raster index of the i-th token (e.g. from
            `gilbert_order`, or `torch.arange` for raster order).
        grid_thw: (T, H, W).
        block_size: tokens per block; the last block may be ragged.

    Returns:
        int64 [n_blocks, 3], the number of frames, rows and columns each block spans.
    """
    frames, height, width = check_grid_thw(grid_thw)
    if order.numel() != frames * height * width:
        raise ValueError(f"order has {order.numel()} entries, expected T*H*W = {frames * height * width}")
    coordinates = torch.stack([order // (height * width), (order // width) % height, order % width], dim=1)  # [N, 3]
    extents = []
    for start in range(0, order.numel(), block_size):
        block = coordinates[start : start + block_size]  # [<=block_size, 3]
        extents.append(block.amax(dim=0) - block.amin(dim=0) + 1)
    return torch.stack(extents)


def _block_colours(block_ids: torch.Tensor):
    import matplotlib.pyplot as plt

    # neighbouring blocks get different colours from a 20-colour cycle
    return plt.get_cmap("tab20")((block_ids % 20).numpy())


def plot_gilbert_order(grid_thw: Sequence[int], *, block_size: int, frame: int = 0, max_points: int = 20000):
    """Draw the curve order of one frame, its blocks, the raster blocks, and the 3D block membership.

    Panel 1 colours frame `frame` by curve block and draws the curve path through the cells it visits
    consecutively inside that frame. Panel 2 colours the same frame by raster-order block, for
    comparison. Panel 3 draws every token as a point in (t, h, w), coloured by curve block (at most
    `max_points` tokens, evenly thinned).

    Args:
        grid_thw: latent token grid (T, H, W).
        block_size: tokens per block, as in the BladeConfig.
        frame: frame index shown in panels 1 and 2.
        max_points: maximum number of tokens drawn in the 3D panel.

    Returns:
        The matplotlib Figure.
    """
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    frames, height, width = check_grid_thw(grid_thw)
    if not 0 <= frame < frames:
        raise ValueError(f"frame must be in [0, {frames}) for grid_thw={tuple(grid_thw)}, got {frame}")
    order, inverse = gilbert_order((frames, height, width))
    curve_block = (inverse // block_size).reshape(frames, height, width)  # [T, H, W] block of each token
    raster_block = (torch.arange(order.numel()) // block_size).reshape(frames, height, width)

    figure = plt.figure(figsize=(13, 4.2))
    ax_curve = figure.add_subplot(1, 3, 1)
    ax_curve.imshow(_block_colours(curve_block[frame]), interpolation="nearest")
    in_frame = (order // (height * width)) == frame  # [N] curve positions whose token is in this frame
    points = torch.stack([order % width, (order // width) % height], dim=1).float()  # [N, 2] (w, h)
    # a segment joins two consecutive curve positions that both lie in the frame
    joined = (in_frame[:-1] & in_frame[1:]).nonzero().squeeze(1)
    segments = torch.stack([points[joined], points[joined + 1]], dim=1)  # [S, 2, 2]
    ax_curve.add_collection(LineCollection(segments.numpy(), colors="black", linewidths=0.8))
    ax_curve.set_title(f"frame {frame}: curve path and curve blocks", fontsize=9)

    ax_raster = figure.add_subplot(1, 3, 2)
    ax_raster.imshow(_block_colours(raster_block[frame]), interpolation="nearest")
    ax_raster.set_title(f"frame {frame}: raster-order blocks", fontsize=9)
    for ax in (ax_curve, ax_raster):
        ax.set_xlabel("w")
        ax.set_ylabel("h")

    ax_3d = figure.add_subplot(1, 3, 3, projection="3d")
    stride = max(1, order.numel() // max_points)
    raster = torch.arange(0, order.numel(), stride)
    t, h, w = raster // (height * width), (raster // width) % height, raster % width
    ax_3d.scatter(w.numpy(), t.numpy(), h.numpy(), c=_block_colours(curve_block.reshape(-1)[raster]), s=6, depthshade=False)
    ax_3d.set_xlabel("w")
    ax_3d.set_ylabel("t")
    ax_3d.set_zlabel("h")
    ax_3d.invert_zaxis()
    ax_3d.set_title("3D block membership (curve order)", fontsize=9)

    curve_box = block_extents(order, (frames, height, width), block_size).float().mean(dim=0).tolist()
    raster_box = block_extents(torch.arange(order.numel()), (frames, height, width), block_size).float().mean(dim=0).tolist()
    figure.suptitle(
        f"grid T x H x W = {frames} x {height} x {width}, blocks of {block_size}; mean block box (t, h, w): "
        f"curve {tuple(round(x, 1) for x in curve_box)}, raster {tuple(round(x, 1) for x in raster_box)}",
        fontsize=9,
    )
    figure.tight_layout()
    return figure
