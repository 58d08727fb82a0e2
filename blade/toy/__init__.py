"""The toy world: procedural videos, their prompt grammar, the ToyBench judge and a tiny Wan teacher."""

from blade.toy.bench import frechet_distance, frechet_video_distance, score_videos, video_features
from blade.toy.data import from_uint8, make_videos, render_video, sample_params, to_uint8, to_vae_layout
from blade.toy.evaluate import (
    default_eval_prompts,
    evaluate_pipeline,
    evaluate_teacher,
    generate_videos,
    score_vae_reconstruction,
)
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
from blade.toy.teacher import (
    ToyTeacherConfig,
    TrainStage,
    attention_flop_share,
    build_pipeline,
    load_config,
    save_pipeline,
    video_tokens,
)
from blade.toy.train import load_run_pipeline, train_teacher

__all__ = [
    "COLOURS",
    "DIRECTIONS",
    "SHAPES",
    "ToyPrompt",
    "ToyTeacherConfig",
    "TrainStage",
    "all_prompts",
    "attention_flop_share",
    "build_pipeline",
    "default_eval_prompts",
    "demo_prompts",
    "evaluate_pipeline",
    "evaluate_teacher",
    "frechet_distance",
    "frechet_video_distance",
    "from_uint8",
    "generate_videos",
    "heldout_prompts",
    "load_config",
    "load_run_pipeline",
    "make_videos",
    "parse_prompt",
    "read_prompt_list",
    "render_video",
    "sample_params",
    "save_pipeline",
    "score_vae_reconstruction",
    "score_videos",
    "to_uint8",
    "to_vae_layout",
    "train_prompts",
    "train_teacher",
    "video_features",
    "video_tokens",
    "write_prompt_lists",
]
