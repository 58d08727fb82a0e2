"""Video generation: size checks, NaN / Inf detection per step, pipeline setup (LoRA, ASA), the prompt loop."""

from blade.generate.monitor import NonFiniteError, StepMonitor, check_finite_frames
from blade.generate.prepare import blade_config_from_option, prepare_pipeline
from blade.generate.run import default_video_size, generate_videos, prompt_generator, prompt_seed
from blade.generate.sizes import VideoSizeRule, check_video_size, video_size_rule

__all__ = [
    "NonFiniteError",
    "StepMonitor",
    "VideoSizeRule",
    "blade_config_from_option",
    "check_finite_frames",
    "check_video_size",
    "default_video_size",
    "generate_videos",
    "prepare_pipeline",
    "prompt_generator",
    "prompt_seed",
    "video_size_rule",
]
