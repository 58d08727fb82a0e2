"""Adaptive block-sparse attention (ASA) and the peer block-mask strategies it is compared with.

Public pieces, in the order one ASA call uses them: `gilbert_order` (3D curve order of the video
tokens), `estimate_block_scores` (sampled block importance), `select_blocks` (cumulative-energy or
top-k selection), `asa_attention` (the whole call, with the pooled global branch). The submodules
`strategies` (dense, sliding tile, radial, oracle top-k, ASA masks) and `metrics` (attention
recall, relative output error) compare masks at matched sparsity.
"""

from blade.sparsity import metrics, strategies
from blade.sparsity.asa import asa_attention
from blade.sparsity.estimate import estimate_block_scores
from blade.sparsity.gilbert import gilbert_order
from blade.sparsity.select import select_blocks

__all__ = [
    "asa_attention",
    "estimate_block_scores",
    "gilbert_order",
    "metrics",
    "select_blocks",
    "strategies",
]
