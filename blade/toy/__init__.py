"""The toy world: procedural videos, their prompt grammar, the ToyBench judge and a tiny Wan teacher."""

from blade.toy.data import from_uint8, make_videos, render_video, sample_params, to_uint8, to_vae_layout
from blade.toy.prompts import (
    COLOURS,
    DIRECTIONS,
    SHAPES,
    ToyPrompt,
    all_prompts,
    demo_prompts,
    heldout_prompts,
    parse_prompt,
    read_prompt_list,
    train_prompts,
    write_prompt_lists,
)

__all__ = [
    "COLOURS",
    "DIRECTIONS",
    "SHAPES",
    "ToyPrompt",
    "all_prompts",
    "demo_prompts",
    "from_uint8",
    "heldout_prompts",
    "make_videos",
    "parse_prompt",
    "read_prompt_list",
    "render_video",
    "sample_params",
    "to_uint8",
    "to_vae_layout",
    "train_prompts",
    "write_prompt_lists",
]
