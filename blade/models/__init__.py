"""Loading diffusers video pipelines, and tiny seeded pipelines for tests and the toy world."""

from blade.models.loading import SUPPORTED_PIPELINES, load_pipeline, pipeline_family, saved_video_size
from blade.models.tiny import tiny_cogvideox_pipeline, tiny_transformer_inputs, tiny_wan_pipeline

__all__ = [
    "SUPPORTED_PIPELINES",
    "load_pipeline",
    "pipeline_family",
    "saved_video_size",
    "tiny_cogvideox_pipeline",
    "tiny_transformer_inputs",
    "tiny_wan_pipeline",
]
