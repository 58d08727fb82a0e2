"""Load the teacher's transformer and scheduler for distillation, without its text encoder or VAE.

Distillation needs only prompt embeddings, so the (large) text encoder and the VAE stay on disk.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

TINY_MODELS = ("tiny-wan", "tiny-cogvideox")


def load_teacher(model: str, *, seed: int = 0):
    """Return a pipeline object holding the teacher's transformer and scheduler.

    Args:
        model: a diffusers pipeline folder (WanPipeline or CogVideoXPipeline in model_index.json), or
            "tiny-wan" / "tiny-cogvideox" for `blade.models.tiny_*_pipeline(seed)` (the tiny CogVideoX
            with a v-prediction scheduler, as CogVideoX-5B).
        seed: weight seed of the tiny pipelines.

    Returns:
        A float32 `WanPipeline` or `CogVideoXPipeline` on the CPU; text encoder and VAE are None for
        folders.
    """
    if model in TINY_MODELS:
        from blade.models import tiny_cogvideox_pipeline, tiny_wan_pipeline

        if model == "tiny-wan":
            return tiny_wan_pipeline(seed)
        from diffusers import CogVideoXDDIMScheduler

        pipeline = tiny_cogvideox_pipeline(seed)
        # The released CogVideoX-5B predicts v; the tiny builder keeps diffusers' epsilon default.
        pipeline.scheduler = CogVideoXDDIMScheduler.from_config(pipeline.scheduler.config, prediction_type="v_prediction")
        return pipeline
    folder = Path(model)
    index = folder / "model_index.json"
    if not index.is_file():
        raise FileNotFoundError(
            f"model {model!r} is neither one of {TINY_MODELS} nor a diffusers pipeline folder with model_index.json"
        )
    import diffusers

    class_name = json.loads(index.read_text(encoding="utf-8")).get("_class_name")
    if class_name not in ("WanPipeline", "CogVideoXPipeline"):
        raise ValueError(f"distillation supports WanPipeline and CogVideoXPipeline folders, {str(index)!r} names {class_name!r}")
    pipeline = getattr(diffusers, class_name).from_pretrained(
        str(folder), text_encoder=None, tokenizer=None, vae=None, local_files_only=True
    )
    logger.info("loaded the %s teacher from %s", class_name, folder)
    return pipeline
