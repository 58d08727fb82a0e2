"""Atomic, resumable training checkpoints: safetensors weights plus a JSON state file.

A checkpoint is a folder ``checkpoints/step-XXXXXXX`` written under a temporary name and renamed into
place, then ``latest.json`` is replaced to point at it, so an interruption at any moment leaves the
previous checkpoint intact and readable.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from blade.io import apply_default_permissions, atomic_write_json

logger = logging.getLogger(__name__)

LATEST = "latest.json"


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Split an optimizer state into flat tensors (``"<param index>.<name>"``) and JSON param groups."""
    state = optimizer.state_dict()
    tensors = {}
    for index, entries in state["state"].items():
        for name, value in entries.items():
            tensor = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"{index}.{name}"] = tensor.contiguous()
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state["param_groups"]]
    return tensors, groups


def load_optimizer_tensors(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]) -> None:
    """Inverse of ``optimizer_tensors``: restore the state into ``optimizer``."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = tensor
    restored_groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in groups]
    optimizer.load_state_dict({"state": state, "param_groups": restored_groups})


def save_checkpoint(
    run_dir: str | os.PathLike,
    step: int,
    models: dict[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer | None,
    state: dict,
    config: dict | None = None,
    keep: int = 2,
) -> Path:
    """Write one checkpoint and point ``latest.json`` at it; keep the newest ``keep`` checkpoints.

    Args:
        run_dir: training run folder.
        step: global step the checkpoint resumes from (steps already taken).
        models: name -> module, each saved as ``<name>.safetensors`` (tied weights handled).
        optimizer: saved as ``optimizer.safetensors`` with its param groups in ``state.json``.
        state: JSON-serialisable training state (phase, counters, statistics).
        config: the run's configuration, written as ``config.json`` so each checkpoint is
            self-describing; None skips it.
        keep: number of checkpoints kept on disk.

    Returns:
        The checkpoint folder.
    """
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:07d}"
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=root))
    for name, module in models.items():
        save_model(module, str(staging / f"{name}.safetensors"))
    payload = dict(state, step=step)
    if optimizer is not None:
        tensors, groups = optimizer_tensors(optimizer)
        save_file(tensors, str(staging / "optimizer.safetensors"))
        payload["optimizer_param_groups"] = groups
    if config is not None:
        atomic_write_json(staging / "config.json", config)
    atomic_write_json(staging / "state.json", payload)
    apply_default_permissions(staging)
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    atomic_write_json(Path(run_dir) / LATEST, {"checkpoint": final.name, "step": step})
    for old in sorted(p for p in root.glob("step-*") if p.is_dir())[:-keep]:
        shutil.rmtree(old)
    logger.info("checkpoint saved: %s", final)
    return final


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """Return the folder ``latest.json`` points at, or None when the run has no checkpoint yet."""
    pointer = Path(run_dir) / LATEST
    if not pointer.is_file():
        return None
    name = json.loads(pointer.read_text(encoding="utf-8"))["checkpoint"]
    folder = Path(run_dir) / "checkpoints" / name
    if not (folder / "state.json").is_file():
        raise FileNotFoundError(f"{pointer} points at {folder}, which has no state.json; delete {pointer} to restart")
    return folder


def load_checkpoint(
    folder: str | os.PathLike,
    models: dict[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer | None = None,
) -> dict:
    """Load weights (and optimizer state when given and present) from ``folder``; return its state."""
    folder = Path(folder)
    state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    for name, module in models.items():
        missing, unexpected = load_model(module, str(folder / f"{name}.safetensors"), strict=True)
        del missing, unexpected
    optimizer_file = folder / "optimizer.safetensors"
    if optimizer is not None and optimizer_file.is_file():
        load_optimizer_tensors(optimizer, load_file(str(optimizer_file)), state["optimizer_param_groups"])
    return state
