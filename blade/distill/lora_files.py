"""Save a trained adapter in diffusers' LoRA format and load one, failing loudly when nothing matches.

The file is `pytorch_lora_weights.safetensors` with keys `transformer.<module>.lora_A.weight` and
`.lora_B.weight`, written by the pipeline class's `save_lora_weights` from peft's
`get_peft_model_state_dict`. A peft `save_pretrained` folder would load nothing through
`pipe.load_lora_weights`, with only a warning, hence the key check in `load_lora`.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from safetensors import safe_open

from blade.io import apply_default_permissions, atomic_write

logger = logging.getLogger(__name__)

LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
_PIPELINE_CLASSES = {"WanTransformer3DModel": "WanPipeline", "CogVideoXTransformer3DModel": "CogVideoXPipeline"}


def _pipeline_class(transformer):
    import diffusers

    name = _PIPELINE_CLASSES.get(type(transformer).__name__)
    if name is None:
        raise TypeError(f"no LoRA format known for {type(transformer).__name__}; expected one of {sorted(_PIPELINE_CLASSES)}")
    return getattr(diffusers, name)


def save_lora(transformer, folder: str | Path, adapter_name: str = "student") -> Path:
    """Write one adapter of `transformer` as `folder/pytorch_lora_weights.safetensors` (atomic replace).

    Args:
        transformer: a Wan or CogVideoX transformer carrying peft adapter `adapter_name`.
        folder: output folder, created if missing.
        adapter_name: the adapter to save.

    Returns:
        The path of the written file.
    """
    from peft.utils import get_peft_model_state_dict

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = get_peft_model_state_dict(transformer, adapter_name=adapter_name)
    if not state:
        raise ValueError(f"transformer has no LoRA weights for adapter {adapter_name!r}")
    state = {key: value.detach().to("cpu").contiguous() for key, value in state.items()}
    # The adapter's LoraConfig travels in the file's metadata: without it the loader assumes
    # alpha = rank and rescales every LoRA whose alpha differs from its rank.
    metadata = {
        key: sorted(value) if isinstance(value, (set, frozenset)) else value
        for key, value in transformer.peft_config[adapter_name].to_dict().items()
    }
    with tempfile.TemporaryDirectory(dir=folder, prefix=".lora-") as temp:
        _pipeline_class(transformer).save_lora_weights(
            temp, transformer_lora_layers=state, safe_serialization=True, transformer_lora_adapter_metadata=metadata
        )
        written, target = Path(temp) / LORA_WEIGHT_NAME, folder / LORA_WEIGHT_NAME
        apply_default_permissions(written)
        os.replace(written, target)
    return target


def _module_of(key: str) -> str:
    module = key.split(".lora_")[0]
    return module.removeprefix("transformer.")


def load_lora(pipeline, path: str | Path, adapter_name: str = "student") -> int:
    """Load a diffusers-format LoRA into `pipeline.transformer`, raising when its keys match no module.

    Args:
        pipeline: a Wan or CogVideoX pipeline (patched with `apply_blade` or not).
        path: a `pytorch_lora_weights.safetensors` file or the folder holding one.
        adapter_name: name of the loaded adapter.

    Returns:
        The number of LoRA modules loaded.

    Raises:
        ValueError: the file has no LoRA keys, or none of them names a module of the transformer.
    """
    path = Path(path)
    file = path / LORA_WEIGHT_NAME if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"no LoRA file at {str(file)!r}; expected {LORA_WEIGHT_NAME} from blade distill")
    with safe_open(str(file), framework="pt") as handle:
        keys = list(handle.keys())
    lora_modules = {_module_of(key) for key in keys if ".lora_A." in key or ".lora_B." in key}
    module_names = {name for name, _ in pipeline.transformer.named_modules()}
    matched = lora_modules & module_names
    if not matched:
        example = sorted(lora_modules)[:3] or keys[:3]
        raise ValueError(
            f"the LoRA {str(file)!r} matches none of the {type(pipeline.transformer).__name__} modules "
            f"(its keys name e.g. {example}); expected diffusers-format keys 'transformer.<module>.lora_A.weight' "
            "as written by blade distill or save_lora_weights"
        )
    if len(matched) < len(lora_modules):
        raise ValueError(
            f"{len(lora_modules) - len(matched)} of {len(lora_modules)} LoRA modules in {str(file)!r} name no "
            f"module of the transformer, e.g. {sorted(lora_modules - matched)[:3]}; was it trained for another model?"
        )
    pipeline.load_lora_weights(str(file.parent), weight_name=file.name, adapter_name=adapter_name)
    if adapter_name not in getattr(pipeline.transformer, "peft_config", {}):
        raise ValueError(f"loading {str(file)!r} added no adapter {adapter_name!r} to the transformer")
    logger.info("loaded LoRA %s into %d modules as adapter %r", file, len(matched), adapter_name)
    return len(matched)


def copy_lora(source: str | Path, folder: str | Path) -> Path:
    """Copy a LoRA file into `folder` as `pytorch_lora_weights.safetensors` (atomic replace)."""
    return atomic_write(Path(folder) / LORA_WEIGHT_NAME, lambda temporary: shutil.copyfile(source, temporary))
