"""Prepare a pipeline for generation: load it, add a LoRA, apply ASA."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch

from blade.config import BladeConfig

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

BLADE_PRESETS = {"wan": BladeConfig.wan, "cogvideox": BladeConfig.cogvideox, "dense": BladeConfig.dense}


def blade_config_from_option(value) -> BladeConfig:
    """Resolve a `--blade` value into a BladeConfig.

    Args:
        value: a BladeConfig (returned as is), a preset name ("wan", "cogvideox", "dense"), or the
            path of a YAML (.yaml, .yml) or JSON (.json) file mapping BladeConfig field names to values.

    Returns:
        The BladeConfig.

    Raises:
        FileNotFoundError: the value is neither a preset nor an existing file.
        ValueError: the file is not a mapping, has unknown fields or invalid values.
    """
    if isinstance(value, BladeConfig):
        return value
    text = str(value)
    if text in BLADE_PRESETS:
        return BLADE_PRESETS[text]()
    path = Path(text)
    if not path.is_file():
        raise FileNotFoundError(
            f"--blade {text!r} is neither a preset ({', '.join(BLADE_PRESETS)}) nor an existing YAML/JSON file"
        )
    if path.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    elif path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
    else:
        raise ValueError(f"blade config file {text!r} must end in .yaml, .yml or .json, got {path.suffix!r}")
    if not isinstance(data, dict):
        raise ValueError(f"blade config file {text!r} must contain a mapping of BladeConfig fields, got {type(data).__name__}")
    return BladeConfig.from_dict(data)


def stat_fingerprint(path) -> str:
    """Return a hex SHA-256 over the relative path, size and modification time of every file under `path`.

    It changes when a file is added, removed, rewritten or replaced, and costs one `stat` per file, so
    it can key reruns of a multi-gigabyte model folder. NOTE: a file rewritten with identical size and
    modification time keeps the fingerprint; hash the bytes where that matters.

    Args:
        path: a file or folder.
    """
    root = Path(path)
    files = [root] if root.is_file() else sorted(entry for entry in root.rglob("*") if entry.is_file())
    digest = hashlib.sha256()
    for file in files:
        status = file.stat()
        name = file.name if file == root else str(file.relative_to(root))
        digest.update(f"{name}\0{status.st_size}\0{status.st_mtime_ns}\n".encode("utf-8"))
    return digest.hexdigest()


def default_device() -> str:
    """Return "cuda" when a CUDA device is available, else "cpu"."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device) -> str:
    """Return bfloat16 on CUDA (the released models' dtype) and float32 elsewhere."""
    return "bfloat16" if torch.device(device).type == "cuda" else "float32"


def prepare_pipeline(model, *, lora=None, blade=None, device=None, dtype=None, vae_dtype=None):
    """Load a pipeline folder, then optionally add a LoRA and apply ASA to its transformer.

    Args:
        model: a Wan or CogVideoX diffusers pipeline folder (loaded with `blade.models.load_pipeline`).
        lora: a diffusers-format LoRA file or folder, loaded with `blade.distill.load_lora` (which
            raises when its keys match no transformer module), or None.
        blade: ASA settings: a BladeConfig, preset name or config file (see
            `blade_config_from_option`), or None to keep the model's own attention.
        device: device to run on; None picks CUDA when available, else CPU.
        dtype: weight dtype name or torch.dtype; None picks bfloat16 on CUDA, float32 otherwise.
        vae_dtype: VAE dtype name or torch.dtype; None picks float32 for Wan (diffusers' Wan 2.1
            documentation loads AutoencoderKLWan in float32) and `dtype` otherwise. The pipelines
            cast latents to the VAE's dtype before decoding.

    Returns:
        (pipeline, details), where details contains the resolved "device", "dtype", "vae_dtype", "family",
        "model_fingerprint" (`stat_fingerprint` of the folder), "lora" ({"path", "adapted_modules",
        "fingerprint"}, or None) and "blade" (the BladeConfig as a dict, or None).
    """
    from blade.distill import load_lora
    from blade.models import load_pipeline, pipeline_family

    device = device or default_device()
    dtype = dtype or default_dtype(device)
    config = None if blade is None else blade_config_from_option(blade)  # fail on a bad config before loading
    family = pipeline_family(model)
    if vae_dtype is None:
        vae_dtype = "float32" if family == "wan" else dtype
    if str(vae_dtype).removeprefix("torch.") not in _DTYPES:
        raise ValueError(f"vae_dtype must be one of {sorted(_DTYPES)}, got {vae_dtype!r}")
    pipe = load_pipeline(model, dtype=dtype, device=device)
    pipe.vae.to(dtype=_DTYPES[str(vae_dtype).removeprefix("torch.")])
    lora_report = None
    if lora is not None:
        lora_report = {
            "path": str(lora),
            "adapted_modules": load_lora(pipe, lora, adapter_name="lora"),
            "fingerprint": stat_fingerprint(lora),
        }
    if config is not None:
        from blade.patching import apply_blade

        apply_blade(pipe.transformer, config, schedule=pipe.scheduler)
    details = {
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "vae_dtype": str(vae_dtype).removeprefix("torch."),
        "family": family,
        "model_fingerprint": stat_fingerprint(model),
        "lora": lora_report,
        "blade": None if config is None else config.to_dict(),
    }
    return pipe, details
