import torch

import blade.patching.common as common
from blade import apply_blade, record_masks
from blade.models import tiny_transformer_inputs
from tests.patching.helpers import attention_modules, preset


def _gradients(transformer, inputs):
    transformer.zero_grad(set_to_none=True)
    output = transformer(**inputs)[0]
    output.square().mean().backward()
    return {name: parameter.grad.clone() for name, parameter in transformer.named_parameters() if parameter.grad is not None}


def test_checkpointing_recomputes_same_masks_and_gradients(tiny_pipeline, model_family, monkeypatch):
    """Under gradient checkpointing the recomputed forward must draw the same samples, hence the same
    masks, or the gradients would belong to a different sparse attention than the forward's."""
    transformer = tiny_pipeline.transformer
    apply_blade(transformer, preset(model_family))
    inputs = tiny_transformer_inputs(tiny_pipeline, batch_size=2)
    asa_calls = []
    asa = common.run_asa

    def counting_asa(*args, **kwargs):
        asa_calls.append(kwargs["grid_thw"])
        return asa(*args, **kwargs)

    monkeypatch.setattr(common, "run_asa", counting_asa)
    layers = len(attention_modules(transformer))

    with record_masks(transformer) as plain_recording:
        plain = _gradients(transformer, inputs)
    assert len(asa_calls) == layers

    transformer.enable_gradient_checkpointing()
    asa_calls.clear()
    with record_masks(transformer) as checkpointed_recording:
        checkpointed = _gradients(transformer, inputs)
    assert len(asa_calls) == 2 * layers  # forward, then the recomputation during backward
    assert len(checkpointed_recording.calls) == layers  # the recomputation is not recorded twice

    for plain_call, checkpointed_call in zip(plain_recording.calls, checkpointed_recording.calls):
        assert torch.equal(plain_call.block_mask, checkpointed_call.block_mask)
    assert plain.keys() == checkpointed.keys()
    assert len(plain) > 0
    for name, gradient in plain.items():
        torch.testing.assert_close(checkpointed[name], gradient, rtol=1e-5, atol=1e-7, msg=name)
