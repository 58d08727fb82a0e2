"""Block-sparse attention kernels and their backends."""

from blade.kernels.api import BACKENDS, available_backends, block_sparse_attention
from blade.kernels.masks import expand_block_mask, num_blocks, random_block_mask

__all__ = [
    "BACKENDS",
    "available_backends",
    "block_sparse_attention",
    "expand_block_mask",
    "num_blocks",
    "random_block_mask",
]
