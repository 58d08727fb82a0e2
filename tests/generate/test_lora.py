import copy

import pytest
import torch
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors.torch import save_file

from blade.generate import load_lora
from blade.generate.lora import adapted_module_count
from blade.models import tiny_transformer_inputs

TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def _lora_state(pipe, seed=0) -> dict:
    """A random LoRA on a copy of the pipeline's transformer, as peft's state dict (no prefix)."""
    transformer = copy.deepcopy(pipe.transformer)
    torch.manual_seed(seed)
    # init_lora_weights=False draws lora_B at random too, so the adapter changes the output at once.
    transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=TARGETS, init_lora_weights=False))
    return get_peft_model_state_dict(transformer)


def _forward(pipe) -> torch.Tensor:
    with torch.no_grad():
        return pipe.transformer(**tiny_transformer_inputs(pipe))[0]


def test_lora_loads_and_changes_output(tiny_pipeline, tmp_path):
    state = _lora_state(tiny_pipeline)
    type(tiny_pipeline).save_lora_weights(tmp_path, transformer_lora_layers=state)
    before = _forward(tiny_pipeline)

    report = load_lora(tiny_pipeline, tmp_path)

    # every attention projection of both blocks: self- and cross-attention (Wan), joint attention (CogVideoX)
    expected_modules = len([key for key in state if ".lora_A." in key])
    assert report["adapted_modules"] == expected_modules
    assert report["file_modules"] == expected_modules
    assert adapted_module_count(tiny_pipeline.transformer, "lora") == expected_modules
    assert report["path"].endswith("pytorch_lora_weights.safetensors")
    assert not torch.allclose(_forward(tiny_pipeline), before, atol=1e-4)


def test_lora_file_path_and_scale(wan_pipeline, tmp_path):
    type(wan_pipeline).save_lora_weights(tmp_path, transformer_lora_layers=_lora_state(wan_pipeline))
    before = _forward(wan_pipeline)
    report = load_lora(wan_pipeline, tmp_path / "pytorch_lora_weights.safetensors", adapter_name="mine", scale=0.0)
    assert report["adapter_name"] == "mine"
    assert report["adapted_modules"] > 0
    # scale 0 switches the adapter's contribution off
    torch.testing.assert_close(_forward(wan_pipeline), before, rtol=0, atol=1e-6)


@pytest.mark.parametrize("prefix", ["base_model.model.", ""], ids=["peft_save_pretrained", "no_prefix"])
def test_lora_matching_zero_modules_is_an_error(wan_pipeline, tmp_path, prefix):
    """diffusers only warns about these files and then runs the plain model."""
    state = {prefix + key: value for key, value in _lora_state(wan_pipeline).items()}
    path = tmp_path / "lora.safetensors"
    save_file(state, path)
    before = _forward(wan_pipeline)

    with pytest.raises(ValueError, match=r"adapted 0 modules of WanTransformer3DModel .*keys 'transformer\.<module>"):
        load_lora(wan_pipeline, path)
    torch.testing.assert_close(_forward(wan_pipeline), before, rtol=0, atol=0)


def test_lora_for_missing_modules_names_the_file(wan_pipeline, tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"transformer.nothing.lora_A.weight": torch.zeros(4, 8),
               "transformer.nothing.lora_B.weight": torch.zeros(8, 4)}, path)
    with pytest.raises(ValueError, match=r"loading LoRA '.*other.safetensors' failed"):
        load_lora(wan_pipeline, path)


def test_lora_path_errors(wan_pipeline, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_lora(wan_pipeline, tmp_path / "missing.safetensors")
    with pytest.raises(FileNotFoundError, match="has no pytorch_lora_weights.safetensors"):
        load_lora(wan_pipeline, tmp_path)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00" * 16)
    with pytest.raises(ValueError, match="is not a valid safetensors file"):
        load_lora(wan_pipeline, corrupt)
    pickled = tmp_path / "lora.bin"
    pickled.write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="not a .safetensors file"):
        load_lora(wan_pipeline, pickled)
