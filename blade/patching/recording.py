"""Record ASA's block masks, block scores and sparsity during a run, and save or load them.

Only block-level tensors are kept ([B, H, n_q_blocks, n_k_blocks] per call), never token-level
attention, and a byte budget caps what is stored: past it, calls keep only their sparsity.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from blade.io import atomic_write

logger = logging.getLogger(__name__)

_INDEX_FILE = "recording.json"
_TENSOR_FILE = "masks.safetensors"
_FORMAT_VERSION = 1


@dataclass
class RecordedCall:
    """One recorded attention call.

    Attributes:
        layer: transformer block index.
        step: denoising step index on the registered schedule, or None without a schedule.
        forward_index: which transformer forward since patching (two CFG forwards of Wan differ).
        dense: the call ran the original dense attention (a dense step or layer), so it has no mask.
        sparsity: float32 [B, H], ASA's reported sparsity for the call (0 for a dense call).
        kept_fraction: float32 [B, H], fraction of block pairs kept (1 for a dense call).
        block_mask: bool [B, H_selected, n_q_blocks, n_k_blocks], or None (dense call, or the byte
            budget was exhausted). Blocks index ASA's curve-ordered sequence, not raster order.
        block_scores: float32 [B, H_selected, n_q_blocks, n_k_blocks] estimated block importance, or None.
    """

    layer: int
    step: int | None
    forward_index: int
    dense: bool
    sparsity: torch.Tensor
    kept_fraction: torch.Tensor
    block_mask: torch.Tensor | None = None
    block_scores: torch.Tensor | None = None


@dataclass
class MaskRecording:
    """The calls recorded by `record_masks`, with the selection that produced them.

    Attributes:
        calls: recorded calls in execution order.
        heads: recorded head indices, or None for all heads.
        metadata: JSON-serialisable facts about the run (family, config, grid of each forward).
    """

    calls: list[RecordedCall] = field(default_factory=list)
    heads: list[int] | None = None
    metadata: dict = field(default_factory=dict)

    def sparsity_by_layer(self) -> dict[int, float]:
        """Return the mean recorded sparsity of each layer over all its recorded calls."""
        per_layer: dict[int, list[float]] = {}
        for call in self.calls:
            per_layer.setdefault(call.layer, []).append(call.sparsity.float().mean().item())
        return {layer: sum(values) / len(values) for layer, values in sorted(per_layer.items())}

    def to_disk(self, path) -> Path:
        """Write the recording to folder `path` as masks.safetensors plus recording.json.

        Each file is written to a temporary name first and moved into place, so an interrupted
        write never leaves a truncated file. Returns the folder.
        """
        from safetensors.torch import save_file

        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {}
        entries = []
        for index, call in enumerate(self.calls):
            tensors[f"{index}.sparsity"] = call.sparsity.contiguous()
            tensors[f"{index}.kept_fraction"] = call.kept_fraction.contiguous()
            if call.block_mask is not None:
                tensors[f"{index}.block_mask"] = call.block_mask.contiguous()
            if call.block_scores is not None:
                tensors[f"{index}.block_scores"] = call.block_scores.contiguous()
            entries.append(
                {"layer": call.layer, "step": call.step, "forward_index": call.forward_index, "dense": call.dense}
            )
        index_data = {"format_version": _FORMAT_VERSION, "heads": self.heads, "metadata": self.metadata, "calls": entries}

        atomic_write(folder / _TENSOR_FILE, lambda temp: save_file(tensors, temp))
        atomic_write(folder / _INDEX_FILE, lambda temp: Path(temp).write_text(json.dumps(index_data, indent=1)))
        return folder

    @classmethod
    def from_disk(cls, path) -> "MaskRecording":
        """Load a recording written by `to_disk` from folder `path`."""
        from safetensors.torch import load_file

        folder = Path(path)
        index_file = folder / _INDEX_FILE
        tensor_file = folder / _TENSOR_FILE
        if not index_file.is_file() or not tensor_file.is_file():
            raise FileNotFoundError(
                f"{str(folder)!r} is not a mask recording: expected {_INDEX_FILE} and {_TENSOR_FILE} written by "
                "MaskRecording.to_disk"
            )
        index_data = json.loads(index_file.read_text())
        if index_data.get("format_version") != _FORMAT_VERSION:
            raise ValueError(
                f"{str(index_file)!r} has format_version {index_data.get('format_version')!r}, expected {_FORMAT_VERSION}"
            )
        tensors = load_file(str(tensor_file))
        calls = [
            RecordedCall(
                layer=entry["layer"],
                step=entry["step"],
                forward_index=entry["forward_index"],
                dense=entry["dense"],
                sparsity=tensors[f"{index}.sparsity"],
                kept_fraction=tensors[f"{index}.kept_fraction"],
                block_mask=tensors.get(f"{index}.block_mask"),
                block_scores=tensors.get(f"{index}.block_scores"),
            )
            for index, entry in enumerate(index_data["calls"])
        ]
        return cls(calls=calls, heads=index_data["heads"], metadata=index_data["metadata"])


def load_recording(path) -> MaskRecording:
    """Load a recording written by `MaskRecording.to_disk` (see `MaskRecording.from_disk`)."""
    return MaskRecording.from_disk(path)


class MaskRecorder:
    """Collects recorded calls for an active `record_masks` block; used by the patched processors."""

    def __init__(self, recording: MaskRecording, layers, heads, steps, max_bytes: int):
        self.recording = recording
        self.layers = None if layers is None else frozenset(layers)
        self.heads = None if heads is None else list(heads)
        self.steps = None if steps is None else frozenset(steps)
        self.max_bytes = max_bytes
        self.stored_bytes = 0
        self._seen: set[tuple[int, int]] = set()
        self._budget_warning_logged = False

    def wants(self, layer: int, context) -> bool:
        """Return whether the call of `layer` in the current forward is selected and not yet recorded.

        A gradient-checkpointing recomputation repeats a (forward, layer) pair and is skipped.
        """
        if self.layers is not None and layer not in self.layers:
            return False
        if self.steps is not None and context.step not in self.steps:
            return False
        return (context.forward_index, layer) not in self._seen

    def _new_call(self, layer, context, dense, sparsity, kept_fraction) -> RecordedCall:
        self._seen.add((context.forward_index, layer))
        grids = self.recording.metadata.setdefault("grid_thw_by_forward", {})
        grids[str(context.forward_index)] = list(context.grid_thw)
        call = RecordedCall(
            layer=layer,
            step=context.step,
            forward_index=context.forward_index,
            dense=dense,
            sparsity=sparsity,
            kept_fraction=kept_fraction,
        )
        self.recording.calls.append(call)
        return call

    def add_dense(self, layer: int, context, batch_size: int, heads: int) -> None:
        """Record a call that ran dense attention: sparsity 0 and kept fraction 1, float32 [B, H]."""
        shape = (batch_size, heads)
        self._new_call(layer, context, True, torch.zeros(shape), torch.ones(shape))

    def add(self, layer: int, context, stats: dict) -> None:
        """Record an ASA call from its stats ("sparsity", "kept_fraction", "block_mask", "block_scores")."""
        call = self._new_call(
            layer,
            context,
            False,
            stats["sparsity"].detach().to("cpu", torch.float32),
            stats["kept_fraction"].detach().to("cpu", torch.float32),
        )
        mask = stats["block_mask"].detach()
        scores = stats["block_scores"].detach()
        if self.heads is not None:
            head_index = torch.tensor(self.heads, device=mask.device, dtype=torch.long)  # float when empty
            mask = mask.index_select(1, head_index)  # [B, H_selected, n_q, n_k]
            scores = scores.index_select(1, head_index)
        size = mask.numel() * mask.element_size() + scores.numel() * 4
        if self.stored_bytes + size > self.max_bytes:
            if not self._budget_warning_logged:
                logger.warning(
                    "mask recording reached max_bytes=%d; later calls keep only their sparsity. Narrow "
                    "layers, heads or steps, or raise max_bytes",
                    self.max_bytes,
                )
                self._budget_warning_logged = True
            return
        self.stored_bytes += size
        call.block_mask = mask.to("cpu", torch.bool)
        call.block_scores = scores.to("cpu", torch.float32)


def _check_indices(name, values, upper):
    if values is None:
        return None
    values = list(values)
    bad = [value for value in values if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < upper]
    if bad:
        raise ValueError(f"{name} must be integers in [0, {upper}), got invalid entries {bad}")
    return values


@contextlib.contextmanager
def record_masks(transformer, *, layers=None, heads=None, steps=None, max_bytes: int = 512 * 2**20):
    """Record block masks, block scores and sparsity of a patched transformer's attention calls.

    Args:
        transformer: a transformer patched with `apply_blade`.
        layers: block indices to record, or None for all.
        heads: head indices whose masks and scores are kept, or None for all (sparsity covers all heads).
        steps: denoising step indices to record, or None for all; needs a schedule registered with
            `apply_blade(..., schedule=...)`.
        max_bytes: budget for stored masks and scores, 5 bytes per block pair (1 for the bool mask,
            4 for the float32 score). Calls beyond it keep only their sparsity, with one warning.

    Yields:
        A `MaskRecording` that fills while the block runs. Recorded tensors are copied to the CPU,
        which synchronises the device on every recorded call.

    Raises:
        ValueError: the transformer is not patched, a recording is already active on it, or the
            selection is invalid.
    """
    from blade.patching.apply import blade_state, num_heads, num_layers

    state = blade_state(transformer)
    if state is None:
        raise ValueError("record_masks needs a transformer patched with blade.apply_blade(transformer, config)")
    if state.recorder is not None:
        raise ValueError("a record_masks block is already active on this transformer; exit it before starting another")
    layers = _check_indices("layers", layers, num_layers(transformer))
    heads = _check_indices("heads", heads, num_heads(transformer))
    if steps is not None and state.schedule is None:
        raise ValueError(
            "steps=... needs the step index, which comes from the denoising schedule; pass "
            "schedule=pipe.scheduler to blade.apply_blade or use blade.set_schedule(transformer, pipe.scheduler)"
        )
    if steps is not None:
        steps = [int(step) for step in steps]
    if not isinstance(max_bytes, int) or max_bytes < 0:
        raise ValueError(f"max_bytes must be an int >= 0, got {max_bytes!r}")

    recording = MaskRecording(heads=heads, metadata={"family": state.family, "config": state.config.to_dict()})
    state.recorder = MaskRecorder(recording, layers, heads, steps, max_bytes)
    try:
        yield recording
    finally:
        state.recorder = None
