"""BladeConfig: every knob of adaptive block-sparse attention (ASA) in one dataclass."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

_POOLINGS = ("max", "softmax")
_SELECTION_MODES = ("energy", "topk")
_TEXT_POSITIONS = ("prefix", "suffix")


@dataclass
class BladeConfig:
    """Settings of ASA for one model.

    Defaults follow the Wan2.1 settings of Video-BLADE (Gu et al., arXiv 2508.10774); use
    `BladeConfig.wan()` or `BladeConfig.cogvideox()` for the named presets.

    Attributes:
        block_size: tokens per query and key block (the kernels' tile; 128 in the paper).
        samples_per_block: tokens sampled from each q and k block to estimate block importance
            (the paper states 16, the authors' code uses 32).
        pooling: block score from sampled logits. "max" is the authors' row-max-normalised score;
            "softmax" applies softmax over sampled keys, then sums per key block and takes the
            maximum over sampled queries.
        selection: "energy" keeps, per query block, the fewest key blocks whose cumulative score
            reaches `threshold`, clamped to [min_ratio, max_ratio] of the key blocks; "topk" keeps
            a fixed `max_ratio` of them.
        threshold: cumulative score target tau of "energy" selection.
        min_ratio, max_ratio: bounds on the kept fraction of key blocks per query block row.
        pool_group: n, the group size of the mean-pooled global branch; 0 disables the branch.
        merge_grad: let gradients flow into the merge weight of the two branches. The authors'
            kernel drops them, so the default is False (weight detached).
        dense_steps: the first this-many denoising steps run dense attention.
        dense_layers: indices of transformer blocks that always run dense attention.
        backend: block-sparse attention backend, as in `blade.kernels.block_sparse_attention`.
        seed: seed of the generator used for block sampling.
    """

    block_size: int = 128
    samples_per_block: int = 16
    pooling: str = "max"
    selection: str = "energy"
    threshold: float = 0.95
    min_ratio: float = 0.05
    max_ratio: float = 0.17
    pool_group: int = 30
    merge_grad: bool = False
    dense_steps: int = 0
    dense_layers: tuple[int, ...] = field(default_factory=tuple)
    backend: str = "auto"
    seed: int = 0

    def __post_init__(self):
        self.dense_layers = tuple(int(i) for i in self.dense_layers)
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field."""
        if not isinstance(self.block_size, int) or self.block_size < 1:
            raise ValueError(f"block_size must be a positive int, got {self.block_size!r}")
        if not 1 <= self.samples_per_block <= self.block_size:
            raise ValueError(
                f"samples_per_block must be in [1, block_size={self.block_size}], got {self.samples_per_block!r}"
            )
        if self.pooling not in _POOLINGS:
            raise ValueError(f"pooling must be one of {_POOLINGS}, got {self.pooling!r}")
        if self.selection not in _SELECTION_MODES:
            raise ValueError(f"selection must be one of {_SELECTION_MODES}, got {self.selection!r}")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold!r}")
        if not 0.0 <= self.min_ratio <= self.max_ratio <= 1.0:
            raise ValueError(
                f"ratios must satisfy 0 <= min_ratio <= max_ratio <= 1, got min_ratio={self.min_ratio!r}, "
                f"max_ratio={self.max_ratio!r}"
            )
        if not isinstance(self.pool_group, int) or self.pool_group < 0:
            raise ValueError(f"pool_group must be an int >= 0 (0 disables the global branch), got {self.pool_group!r}")
        if isinstance(self.pool_group, bool):
            raise ValueError(f"pool_group must be an int >= 0 (0 disables the global branch), got {self.pool_group!r}")
        if not isinstance(self.merge_grad, bool):
            raise ValueError(f"merge_grad must be True or False, got {self.merge_grad!r}")
        if isinstance(self.dense_steps, bool) or not isinstance(self.dense_steps, int) or self.dense_steps < 0:
            raise ValueError(f"dense_steps must be an int >= 0, got {self.dense_steps!r}")
        negative = [layer for layer in self.dense_layers if layer < 0]
        if negative:
            raise ValueError(f"dense_layers must be block indices >= 0, got {list(self.dense_layers)!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an int, got {self.seed!r}")
        from blade.kernels.api import BACKENDS

        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")

    @classmethod
    def wan(cls, **overrides) -> "BladeConfig":
        """Return the authors' Wan2.1 setting: ratios [0.05, 0.17], pool group 30."""
        return cls(**{"min_ratio": 0.05, "max_ratio": 0.17, "pool_group": 30, **overrides})

    @classmethod
    def cogvideox(cls, **overrides) -> "BladeConfig":
        """Return the authors' CogVideoX setting: ratios [0.05, 0.10], pool group 15."""
        return cls(**{"min_ratio": 0.05, "max_ratio": 0.10, "pool_group": 15, **overrides})

    @classmethod
    def dense(cls, **overrides) -> "BladeConfig":
        """Return a config that keeps every block and disables the global branch (exact attention)."""
        return cls(**{"min_ratio": 1.0, "max_ratio": 1.0, "pool_group": 0, **overrides})

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["dense_layers"] = list(self.dense_layers)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "BladeConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown BladeConfig fields {unknown}; valid fields are {sorted(known)}")
        return cls(**data)
