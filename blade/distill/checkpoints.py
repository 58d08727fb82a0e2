"""Atomic, self-describing training checkpoints: tensors in safetensors, everything else in JSON.

A checkpoint is a folder `checkpoint-<step>` holding
    state.safetensors      LoRA weights of both adapters and both optimizers' tensors
    state.json             step, config, optimizer param groups, scheduler states, counters
    pytorch_lora_weights.safetensors  the student LoRA in diffusers format (for sampling at a checkpoint)
    rng-rank<r>.safetensors  the random generator states of rank r
It is assembled in a `.partial` folder and renamed into place, so a crash leaves either no checkpoint
or a complete one. Nothing is unpickled when loading.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from blade.io import atomic_save_safetensors, atomic_write_json

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^checkpoint-(\d+)$")
STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"


def checkpoint_name(step: int) -> str:
    """Return the folder name of the checkpoint after `step` optimizer steps."""
    return f"checkpoint-{step:07d}"


def list_checkpoints(root: str | Path) -> list[Path]:
    """Return the complete checkpoints under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(match.group(1)), path) for path in root.iterdir() if (match := _NAME.match(path.name)) and path.is_dir()]
    return [path for _, path in sorted(found)]


def latest_checkpoint(root: str | Path) -> Path | None:
    """Return the newest complete checkpoint under `root`, or None."""
    checkpoints = list_checkpoints(root)
    return checkpoints[-1] if checkpoints else None


def flatten_optimizer(state_dict: dict, prefix: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state dict into named tensors and a JSON-ready rest.

    Args:
        state_dict: `optimizer.state_dict()`.
        prefix: key prefix of the tensors, e.g. "optimizer.student".

    Returns:
        (tensors {prefix.state.<param>.<key>: tensor}, {"param_groups": ..., "scalars": {...}}).
    """
    tensors, scalars = {}, {}
    for index, values in state_dict["state"].items():
        for key, value in values.items():
            name = f"{prefix}.state.{index}.{key}"
            if torch.is_tensor(value):
                tensors[name] = value.detach().cpu().contiguous()
            else:
                scalars[name] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], rest: dict, prefix: str) -> dict:
    """Inverse of `flatten_optimizer`."""
    state: dict[int, dict] = {}
    marker = f"{prefix}.state."
    items = list(tensors.items()) + list(rest["scalars"].items())
    for name, value in items:
        if not name.startswith(marker):
            continue
        index, key = name[len(marker) :].split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": rest["param_groups"]}


def write_checkpoint(
    accelerator, root: str | Path, step: int, tensors: dict, state: dict, rng_tensors: dict, keep: int, write_extra=None
) -> Path:
    """Write a checkpoint together from every rank. Rank 0 writes the shared files.

    Args:
        accelerator: the run's `accelerate.Accelerator`.
        root: folder of the checkpoints.
        step: optimizer steps done.
        tensors: shared tensors (identical on every rank).
        state: JSON-ready shared state.
        rng_tensors: this rank's generator states.
        keep: number of newest checkpoints to keep. Older ones are deleted once the new one is in place.
        write_extra: optional callable run on rank 0 with the unfinished folder, for further files.

    Returns:
        The checkpoint folder.
    """
    root = Path(root)
    final = root / checkpoint_name(step)
    partial = root / f".{checkpoint_name(step)}.partial"
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    accelerator.wait_for_everyone()
    atomic_save_safetensors(partial / f"rng-rank{accelerator.process_index}.safetensors", rng_tensors)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_save_safetensors(partial / STATE_TENSORS, tensors)
        atomic_write_json(partial / STATE_JSON, {**state, "world_size": accelerator.num_processes})
        if write_extra is not None:
            write_extra(partial)
        if final.exists():
            shutil.rmtree(final)
        os.replace(partial, final)
        for old in list_checkpoints(root)[:-keep]:
            shutil.rmtree(old)
        logger.info("saved checkpoint %s", final)
    accelerator.wait_for_everyone()
    return final


def read_checkpoint(path: str | Path, rank: int) -> tuple[dict[str, torch.Tensor], dict, dict[str, torch.Tensor]]:
    """Read (shared tensors, shared state, this rank's generator states) of a checkpoint folder."""
    path = Path(path)
    state = json.loads((path / STATE_JSON).read_text(encoding="utf-8"))
    rng_file = path / f"rng-rank{rank}.safetensors"
    if not rng_file.is_file():
        raise ValueError(
            f"checkpoint {str(path)!r} was written by {state.get('world_size')} processes and has no state for "
            f"rank {rank}; resume with the same number of processes"
        )
    return load_file(str(path / STATE_TENSORS)), state, load_file(str(rng_file))
