"""CUDA checks of the patched tiny models. NOTE: not yet run on a GPU; the tolerances are estimates."""

import copy

import pytest
import torch

from blade import apply_blade, record_masks
from blade.models import tiny_transformer_inputs
from tests.patching.helpers import dense_config, preset, run


def _to_cuda(inputs, dtype):
    moved = {}
    for name, value in inputs.items():
        if isinstance(value, torch.Tensor):
            moved[name] = value.to("cuda", dtype if value.is_floating_point() and name != "timestep" else value.dtype)
        elif isinstance(value, tuple):
            moved[name] = tuple(part.to("cuda") for part in value)
        else:
            moved[name] = value
    return moved


@pytest.mark.gpu
def test_dense_config_matches_unpatched_on_cuda(tiny_pipeline, model_family):
    transformer = tiny_pipeline.transformer.to("cuda")
    inputs = _to_cuda(tiny_transformer_inputs(tiny_pipeline, batch_size=2), torch.float32)
    expected = run(transformer, inputs)
    apply_blade(transformer, dense_config(backend="auto"))
    torch.testing.assert_close(run(transformer, inputs), expected, rtol=0, atol=1e-4)


@pytest.mark.gpu
def test_preset_bfloat16_on_cuda(tiny_pipeline, model_family):
    transformer = copy.deepcopy(tiny_pipeline.transformer).to("cuda", torch.bfloat16)
    inputs = _to_cuda(tiny_transformer_inputs(tiny_pipeline, batch_size=2), torch.bfloat16)
    apply_blade(transformer, preset(model_family))
    with record_masks(transformer) as recording:
        out = run(transformer, inputs)
    assert out.dtype == torch.bfloat16
    assert torch.isfinite(out).all()
    assert all(call.sparsity.mean() > 0.5 for call in recording.calls)
