"""Configs and small utilities shared by the patching tests."""

import math

import torch

from blade.config import BladeConfig
from blade.patching import BladeCogVideoXAttnProcessor, BladeWanAttnProcessor

PROCESSOR_CLASSES = {"wan": BladeWanAttnProcessor, "cogvideox": BladeCogVideoXAttnProcessor}

# Small blocks so the tiny models' few hundred tokens span about 20 blocks and the presets drop most.
BLOCK_SIZE = 16
SAMPLES = 4


def preset(family: str, **overrides) -> BladeConfig:
    """Return the authors' preset of `family` at the test block size."""
    factory = BladeConfig.wan if family == "wan" else BladeConfig.cogvideox
    return factory(**{"block_size": BLOCK_SIZE, "samples_per_block": SAMPLES, **overrides})


def dense_config(**overrides) -> BladeConfig:
    """Return the dense-equivalent config (every block kept, no global branch) at the test block size.

    The "torch" kernel backend avoids compiling FlexAttention for every new shape, which "auto"
    picks on CPU when no LSE is needed.
    """
    return BladeConfig.dense(**{"block_size": BLOCK_SIZE, "samples_per_block": SAMPLES, "backend": "torch", **overrides})


def run(transformer, inputs) -> torch.Tensor:
    with torch.no_grad():
        return transformer(**inputs)[0]


def attention_modules(transformer):
    blocks = transformer.blocks if hasattr(transformer, "blocks") else transformer.transformer_blocks
    return [block.attn1 for block in blocks]


def token_count(inputs, family: str, text_tokens: int = 16) -> tuple[int, tuple[int, int, int]]:
    """Return (self-attention length, grid) of a tiny transformer call built by tiny_transformer_inputs."""
    shape = inputs["hidden_states"].shape
    frames, height, width = (shape[2], shape[3], shape[4]) if family == "wan" else (shape[1], shape[3], shape[4])
    grid = (frames, height // 2, width // 2)
    text = text_tokens if family == "cogvideox" else 0
    return text + math.prod(grid), grid
