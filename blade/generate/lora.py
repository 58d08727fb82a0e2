"""Load a LoRA into a pipeline's transformer and fail loudly when it adapts nothing.

diffusers' `load_lora_weights` only logs a warning when no key of the file belongs to the
transformer (for example a peft `save_pretrained` file whose keys start with `base_model.model.`,
or keys without the `transformer.` prefix), and the pipeline then runs without the LoRA.
"""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)

# The file name diffusers' `save_lora_weights` writes and `load_lora_weights` looks for in a folder.
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"


def lora_weights_file(path) -> Path:
    """Return the safetensors file of a LoRA given as a file or a `save_lora_weights` folder.

    Raises:
        FileNotFoundError: the path, or the weights file in the folder, does not exist.
        ValueError: the file is not a .safetensors file.
    """
    path = Path(path)
    if path.is_dir():
        candidate = path / LORA_WEIGHT_NAME
        if not candidate.is_file():
            raise FileNotFoundError(
                f"LoRA folder {str(path)!r} has no {LORA_WEIGHT_NAME}; pass the .safetensors file or the folder "
                "that `save_lora_weights` wrote"
            )
        return candidate
    if not path.is_file():
        raise FileNotFoundError(f"LoRA file {str(path)!r} not found")
    if path.suffix != ".safetensors":
        raise ValueError(
            f"LoRA file {str(path)!r} is not a .safetensors file; blade loads weights only with safetensors "
            "(convert it with safetensors.torch.save_file)"
        )
    return path


def adapted_module_count(transformer, adapter_name: str) -> int:
    """Return how many modules of `transformer` carry LoRA weights of `adapter_name`."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    count = 0
    for module in transformer.modules():
        if isinstance(module, BaseTunerLayer) and adapter_name in getattr(module, "lora_A", {}):
            count += 1
    return count


def _lora_module_names(keys) -> set[str]:
    # "transformer.blocks.0.attn1.to_q.lora_A.weight" -> "transformer.blocks.0.attn1.to_q"
    names = set()
    for key in keys:
        for marker in (".lora_A.", ".lora_down.", ".lora.down."):
            if marker in key:
                names.add(key.split(marker)[0])
    return names


def load_lora(pipe, path, *, adapter_name: str = "lora", scale: float = 1.0) -> dict:
    """Load a diffusers-format LoRA into `pipe.transformer` and activate it.

    Args:
        pipe: a diffusers pipeline with LoRA support (WanPipeline, CogVideoXPipeline).
        path: a .safetensors file, or a folder containing `pytorch_lora_weights.safetensors`, with
            keys `transformer.<module>.lora_A.weight` / `lora_B.weight` (what
            `WanPipeline.save_lora_weights(folder, transformer_lora_layers=...)` writes).
        adapter_name: name of the adapter in the transformer's peft config.
        scale: adapter weight.

    Returns:
        {"path", "adapter_name", "scale", "file_modules" (LoRA modules in the file),
        "adapted_modules" (transformer modules that received them)}.

    Raises:
        FileNotFoundError: the file or folder does not exist.
        ValueError: the file is not safetensors, or no module of the transformer was adapted.
    """
    from safetensors import SafetensorError, safe_open

    weights_file = lora_weights_file(path)
    try:
        with safe_open(str(weights_file), framework="pt") as handle:
            keys = list(handle.keys())
    except SafetensorError as error:
        raise ValueError(f"LoRA file {str(weights_file)!r} is not a valid safetensors file ({error})") from error
    file_modules = _lora_module_names(keys)
    transformer = pipe.transformer
    existing = set(getattr(transformer, "peft_config", None) or {})
    if adapter_name in existing:
        raise ValueError(f"the transformer already has an adapter named {adapter_name!r}; pass another adapter_name")

    try:
        pipe.load_lora_weights(str(weights_file), adapter_name=adapter_name)
    except ValueError as error:
        # peft raises its own ValueError subclass when target modules are missing; add the file name.
        raise ValueError(f"loading LoRA {str(weights_file)!r} failed: {error}") from error

    adapted = adapted_module_count(transformer, adapter_name)
    if adapted == 0:
        example = keys[0] if keys else "(no keys)"
        raise ValueError(
            f"LoRA {str(weights_file)!r} adapted 0 modules of {type(transformer).__name__} ({len(keys)} keys, e.g. "
            f"{example!r}); diffusers expects keys 'transformer.<module>.lora_A.weight' / 'lora_B.weight'. Save "
            "the LoRA with pipe.save_lora_weights(folder, transformer_lora_layers="
            "peft.utils.get_peft_model_state_dict(transformer)), not with peft's save_pretrained"
        )
    transformer_modules = {name for name in file_modules if name.startswith("transformer.")}
    if adapted < len(transformer_modules):
        logger.warning(
            "LoRA %s: the file has %d transformer modules but only %d were adapted; the rest were ignored",
            weights_file, len(transformer_modules), adapted,
        )
    pipe.set_adapters([adapter_name], adapter_weights=[scale])
    logger.info("loaded LoRA %s into %d transformer modules (adapter %r, scale %g)", weights_file, adapted,
                adapter_name, scale)
    return {
        "path": str(weights_file),
        "adapter_name": adapter_name,
        "scale": scale,
        "file_modules": len(file_modules),
        "adapted_modules": adapted,
    }
