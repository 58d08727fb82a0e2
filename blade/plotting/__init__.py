"""Figures for the notebooks: recorded ASA block masks, per-layer sparsity, mask quality, the Gilbert order.

Every function returns a matplotlib Figure (or an ipywidgets control) and saves nothing; callers
decide where figures go.
"""

from blade.plotting.gilbert import block_extents, plot_gilbert_order
from blade.plotting.masks import (
    draw_block_mask,
    mask_browser,
    masks_by_layer_step,
    plot_mask_grid,
    plot_mask_quality,
    plot_sparsity_by_layer,
    recorded_heads,
    widgets_frontend_available,
)

__all__ = [
    "block_extents",
    "draw_block_mask",
    "mask_browser",
    "masks_by_layer_step",
    "plot_gilbert_order",
    "plot_mask_grid",
    "plot_mask_quality",
    "plot_sparsity_by_layer",
    "recorded_heads",
    "widgets_frontend_available",
]
