import pytest
import torch
import torch.nn.functional as F

from blade import apply_blade, capture_attention_inputs
from blade.models import tiny_transformer_inputs
from tests.patching.helpers import attention_modules, preset, run


def _project_out(attn, attention_output):
    batch, heads, length, dim = attention_output.shape
    out = attention_output.transpose(1, 2).reshape(batch, length, heads * dim)  # [B, L, H * D]
    return attn.to_out[1](attn.to_out[0](out))


def test_captured_qkv_reproduce_module_output(tiny_pipeline, model_family):
    """Dense attention on the captured q, k, v, projected out, equals what the unpatched attn1 returned."""
    transformer = tiny_pipeline.transformer
    attn = attention_modules(transformer)[1]
    outputs = []
    handle = attn.register_forward_hook(lambda module, args, output: outputs.append(output))
    inputs = tiny_transformer_inputs(tiny_pipeline, batch_size=2, latent_frames=3, latent_height=6, latent_width=10)
    try:
        with capture_attention_inputs(transformer, layers=[1]) as capture:
            run(transformer, inputs)
    finally:
        handle.remove()

    assert len(capture.calls) == 1
    call = capture.calls[0]
    assert (call.layer, call.step, call.forward_index, call.grid_thw) == (1, None, 0, (3, 3, 5))
    text_tokens = 16 if model_family == "cogvideox" else 0
    assert call.text_tokens == text_tokens
    assert call.q.shape == (2, 2, text_tokens + 45, 32)

    with torch.no_grad():
        expected = _project_out(attn, F.scaled_dot_product_attention(call.q, call.k, call.v))
    if model_family == "wan":
        torch.testing.assert_close(expected, outputs[0], rtol=1e-5, atol=1e-5)
    else:
        video_out, encoder_out = outputs[0]
        torch.testing.assert_close(expected[:, text_tokens:], video_out, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(expected[:, :text_tokens], encoder_out, rtol=1e-5, atol=1e-5)
    video_q, _, _ = call.video_qkv()
    assert torch.equal(video_q, call.q[:, :, text_tokens:])


def test_capture_on_patched_model_selects_steps(wan_pipeline):
    """On an ASA-patched model the capture reads the registered schedule and keeps only the chosen step."""
    transformer = wan_pipeline.transformer
    apply_blade(transformer, preset("wan"), schedule=[999.0, 500.0])
    with capture_attention_inputs(transformer, layers=[0, 1], steps=[1]) as capture:
        run(transformer, tiny_transformer_inputs(wan_pipeline, timestep=999.0))
        run(transformer, tiny_transformer_inputs(wan_pipeline, timestep=500.0))
    assert [(call.layer, call.step, call.forward_index) for call in capture.calls] == [(0, 1, 1), (1, 1, 1)]
    assert capture.find(1, step=1) is capture.calls[1]
    with pytest.raises(KeyError, match="no captured call of layer 1 at step 0"):
        capture.find(1, step=0)
    # the hooks are gone after the block
    run(transformer, tiny_transformer_inputs(wan_pipeline, timestep=500.0))
    assert len(capture.calls) == 2


def test_capture_rejects_bad_selection(wan_pipeline):
    transformer = wan_pipeline.transformer
    with pytest.raises(ValueError, match=r"layers must be integers in \[0, 2\), got invalid entries \[2\]"):
        with capture_attention_inputs(transformer, layers=[2]):
            pass
    with pytest.raises(ValueError, match="steps=... needs the step index.*schedule=pipe.scheduler"):
        with capture_attention_inputs(transformer, layers=[0], steps=[0]):
            pass


def test_capture_budget_skips_calls(wan_pipeline, caplog):
    transformer = wan_pipeline.transformer
    with capture_attention_inputs(transformer, layers=[0, 1], max_bytes=0) as capture:
        run(transformer, tiny_transformer_inputs(wan_pipeline))
    assert capture.calls == []
    assert "attention capture reached max_bytes=0" in caplog.text
