"""Load a local Wan or CogVideoX diffusers pipeline folder."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

# `_class_name` in model_index.json -> model family name used across blade.
SUPPORTED_PIPELINES = {"WanPipeline": "wan", "CogVideoXPipeline": "cogvideox"}

_DTYPE_NAMES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _resolve_dtype(dtype):
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype in _DTYPE_NAMES:
        return _DTYPE_NAMES[dtype]
    raise TypeError(
        f"dtype must be None, a torch.dtype or one of {sorted(_DTYPE_NAMES)}, got {dtype!r}; "
        "pass e.g. dtype=torch.bfloat16"
    )


def pipeline_family(path) -> str:
    """Return the model family ("wan" or "cogvideox") of a diffusers pipeline folder.

    Args:
        path: folder written by `DiffusionPipeline.save_pretrained`, containing model_index.json.

    Raises:
        FileNotFoundError: the folder or its model_index.json does not exist.
        ValueError: model_index.json is not valid JSON or names an unsupported pipeline class.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"pipeline folder {str(folder)!r} does not exist; pass a local diffusers pipeline folder")
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        raise FileNotFoundError(
            f"{str(folder)!r} has no model_index.json, so it is not a diffusers pipeline folder; "
            "pass the folder that `pipeline.save_pretrained` wrote"
        )
    try:
        index = json.loads(index_file.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{str(index_file)!r} is not valid JSON ({error}); re-save the pipeline") from error
    class_name = index.get("_class_name")
    if class_name not in SUPPORTED_PIPELINES:
        raise ValueError(
            f"{str(index_file)!r} names pipeline class {class_name!r}, which blade does not support; "
            f"supported classes are {sorted(SUPPORTED_PIPELINES)}"
        )
    return SUPPORTED_PIPELINES[class_name]


def saved_video_size(path) -> tuple[int, int, int] | None:
    """Return the (height, width, frames) a pipeline folder was trained for, or None if it records none.

    The toy teacher writes its generation size to toy_teacher_config.json next to model_index.json
    (keys height, width, num_frames). Released Wan and CogVideoX folders have no such file, so their
    pipelines' own defaults apply to them.
    """
    config_file = Path(path) / "toy_teacher_config.json"
    if not config_file.is_file():
        return None
    try:
        values = json.loads(config_file.read_text(encoding="utf-8"))
        return int(values["height"]), int(values["width"]), int(values["num_frames"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(
            f"{str(config_file)!r} must be a JSON object with integer height, width and num_frames ({error}); "
            "re-export the toy teacher"
        ) from error


def load_pipeline(path, *, dtype=None, device=None):
    """Load a Wan or CogVideoX text-to-video pipeline from a local diffusers folder.

    The family is read from `_class_name` in model_index.json. Nothing is fetched from a model hub.

    Args:
        path: folder written by `DiffusionPipeline.save_pretrained` (str or Path).
        dtype: weight dtype (torch.dtype or "float32" / "float16" / "bfloat16"); None keeps the
            stored dtypes.
        device: device to move the pipeline to (str or torch.device); None leaves it on the CPU.

    Returns:
        A `diffusers.WanPipeline` or `diffusers.CogVideoXPipeline`.

    Raises:
        FileNotFoundError: the folder or its model_index.json does not exist.
        ValueError: the folder contains an unsupported pipeline class.
        TypeError: dtype is neither None, a torch.dtype nor a known dtype name.
    """
    torch_dtype = _resolve_dtype(dtype)
    family = pipeline_family(path)
    import diffusers

    pipeline_class = {"wan": diffusers.WanPipeline, "cogvideox": diffusers.CogVideoXPipeline}[family]
    kwargs = {"local_files_only": True}
    if torch_dtype is not None:
        kwargs["dtype"] = torch_dtype
    pipeline = pipeline_class.from_pretrained(str(path), **kwargs)
    if device is not None:
        pipeline = pipeline.to(device)
    weights = next(pipeline.transformer.parameters())
    logger.info(
        "loaded %s pipeline from %s (transformer %s on %s%s)",
        family, path, weights.dtype, weights.device, "" if torch_dtype is not None else ", stored dtypes",
    )
    return pipeline
