import copy
import math

import pytest
import torch

from blade import BladeConfig, apply_blade, record_masks, remove_blade, set_schedule
from blade.models import tiny_transformer_inputs
from blade.patching import BladeWanAttnProcessor, dense_attention
from blade.patching.common import LatentGrid
from tests.patching.helpers import (
    BLOCK_SIZE,
    PROCESSOR_CLASSES,
    attention_modules,
    dense_config,
    preset,
    run,
    token_count,
)


@pytest.mark.parametrize("batch_size", [1, 2])
def test_dense_config_matches_unpatched(tiny_pipeline, model_family, batch_size):
    transformer = tiny_pipeline.transformer
    inputs = tiny_transformer_inputs(tiny_pipeline, batch_size=batch_size)
    expected = run(transformer, inputs)

    apply_blade(transformer, dense_config(backend="auto"))
    with record_masks(transformer) as recording:
        actual = run(transformer, inputs)

    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)
    # every layer went through ASA (not the dense fallback) and kept every block
    assert [call.layer for call in recording.calls] == list(range(len(attention_modules(transformer))))
    for call in recording.calls:
        assert not call.dense
        assert call.block_mask.all()


def test_dense_config_matches_unpatched_across_sizes(wan_pipeline):
    """The grid is read per call: one patched model serves several odd latent sizes in a row."""
    transformer = wan_pipeline.transformer
    sizes = [(5, 14, 18), (3, 10, 22), (1, 6, 6)]
    inputs = [
        tiny_transformer_inputs(wan_pipeline, latent_frames=f, latent_height=h, latent_width=w, seed=i)
        for i, (f, h, w) in enumerate(sizes)
    ]
    expected = [run(transformer, x) for x in inputs]
    apply_blade(transformer, dense_config())
    for x, reference in zip(inputs, expected):
        torch.testing.assert_close(run(transformer, x), reference, rtol=0, atol=1e-5)


def test_preset_is_finite_sparse_and_removable(tiny_pipeline, model_family):
    transformer = tiny_pipeline.transformer
    inputs = tiny_transformer_inputs(tiny_pipeline, batch_size=2)
    original_processors = [type(attn.processor) for attn in attention_modules(transformer)]
    expected = run(transformer, inputs)

    config = preset(model_family)
    apply_blade(transformer, config)
    assert all(isinstance(attn.processor, PROCESSOR_CLASSES[model_family]) for attn in attention_modules(transformer))
    with record_masks(transformer) as recording:
        sparse = run(transformer, inputs)

    assert torch.isfinite(sparse).all()
    assert not torch.allclose(sparse, expected, atol=1e-4)
    length, _ = token_count(inputs, model_family)
    blocks = math.ceil(length / BLOCK_SIZE)
    text_blocks = 1 if model_family == "cogvideox" else 0
    lowest = max(1, math.floor(blocks * config.min_ratio))
    highest = max(1, math.floor(blocks * config.max_ratio))
    for call in recording.calls:
        mask = call.block_mask
        assert mask.shape == (2, transformer.config.num_attention_heads, blocks, blocks)
        kept_per_row = mask[:, :, text_blocks:, text_blocks:].sum(dim=-1)
        assert kept_per_row.min() >= lowest - text_blocks
        assert kept_per_row.max() <= highest
        # sparsity as defined by ASA: 1 - kept block fraction - cost of the pooled global branch
        expected_sparsity = 1.0 - mask.float().mean() - 1.0 / config.pool_group
        torch.testing.assert_close(call.sparsity.float().mean(), expected_sparsity, rtol=0, atol=1e-6)
        assert call.sparsity.float().mean() > 0.5

    remove_blade(transformer)
    assert [type(attn.processor) for attn in attention_modules(transformer)] == original_processors
    assert torch.equal(run(transformer, inputs), expected)


def test_cogvideox_text_blocks_always_kept(cogvideox_pipeline):
    """Every video query block sees the text block, and text queries see every block."""
    transformer = cogvideox_pipeline.transformer
    apply_blade(transformer, preset("cogvideox"))
    with record_masks(transformer) as recording:
        run(transformer, tiny_transformer_inputs(cogvideox_pipeline, text_tokens=BLOCK_SIZE))
    for call in recording.calls:
        assert call.block_mask[:, :, :, 0].all()
        assert call.block_mask[:, :, 0, :].all()


def test_batch_of_two_equals_two_calls(tiny_pipeline, model_family):
    transformer = tiny_pipeline.transformer
    apply_blade(transformer, preset(model_family))
    batched = tiny_transformer_inputs(tiny_pipeline, batch_size=2)
    with record_masks(transformer) as recording:
        together = run(transformer, batched)
    singles = []
    for index in range(2):
        single = dict(batched)
        for name in ("hidden_states", "encoder_hidden_states", "timestep"):
            single[name] = batched[name][index : index + 1]
        with record_masks(transformer) as single_recording:
            singles.append(run(transformer, single))
        for joint_call, single_call in zip(recording.calls, single_recording.calls):
            assert torch.equal(joint_call.block_mask[index : index + 1], single_call.block_mask)
    torch.testing.assert_close(together, torch.cat(singles), rtol=0, atol=1e-5)


def test_dense_steps_follow_the_schedule(tiny_pipeline, model_family):
    transformer = tiny_pipeline.transformer
    schedule = [999.0, 700.0, 400.0]
    early = tiny_transformer_inputs(tiny_pipeline, timestep=995.0)
    late = tiny_transformer_inputs(tiny_pipeline, timestep=690.0)
    expected_early = run(transformer, early)
    expected_late = run(transformer, late)

    apply_blade(transformer, preset(model_family, dense_steps=1), schedule=schedule)
    with record_masks(transformer) as recording:
        patched_early = run(transformer, early)
        patched_late = run(transformer, late)

    assert torch.equal(patched_early, expected_early)
    assert not torch.allclose(patched_late, expected_late, atol=1e-4)
    assert [(call.step, call.dense) for call in recording.calls] == [(0, True), (0, True), (1, False), (1, False)]


def test_dense_layers_run_the_original_processor(wan_pipeline):
    transformer = wan_pipeline.transformer
    apply_blade(transformer, preset("wan", dense_layers=(1,)))
    with record_masks(transformer) as recording:
        run(transformer, tiny_transformer_inputs(wan_pipeline))
    assert [(call.layer, call.dense) for call in recording.calls] == [(0, False), (1, True)]
    assert recording.calls[1].block_mask is None
    assert torch.equal(recording.calls[1].sparsity, torch.zeros(1, 2))


def test_pipeline_steps_come_from_the_scheduler(tiny_pipeline, model_family):
    """Wan calls the transformer twice per step (CFG); the step index must not count calls."""
    apply_blade(tiny_pipeline.transformer, preset(model_family, dense_steps=1), schedule=tiny_pipeline.scheduler)
    with record_masks(tiny_pipeline.transformer, layers=[0]) as recording:
        tiny_pipeline(
            "a red ball",
            negative_prompt="",
            height=64,
            width=96,
            num_frames=9,
            num_inference_steps=3,
            guidance_scale=5.0,
            max_sequence_length=16,
            output_type="latent",
            generator=torch.Generator().manual_seed(0),
        )
    forwards_per_step = 2 if model_family == "wan" else 1
    steps = [call.step for call in recording.calls]
    assert steps == [step for step in range(3) for _ in range(forwards_per_step)]
    assert [call.dense for call in recording.calls] == [step == 0 for step in steps]


def test_reapply_replaces_config(wan_pipeline):
    transformer = wan_pipeline.transformer
    inputs = tiny_transformer_inputs(wan_pipeline)
    expected = run(transformer, inputs)
    apply_blade(transformer, preset("wan"))
    apply_blade(transformer, dense_config())
    torch.testing.assert_close(run(transformer, inputs), expected, rtol=0, atol=1e-5)
    remove_blade(transformer)
    assert torch.equal(run(transformer, inputs), expected)


def test_set_schedule_switches_step_source(wan_pipeline):
    transformer = wan_pipeline.transformer
    apply_blade(transformer, preset("wan"), schedule=[999.0, 500.0])
    set_schedule(transformer, torch.tensor([500.0, 1.0]))
    with record_masks(transformer) as recording:
        run(transformer, tiny_transformer_inputs(wan_pipeline, timestep=500.0))
    assert {call.step for call in recording.calls} == {0}


def test_rejects_unsupported_model():
    with pytest.raises(TypeError, match="WanTransformer3DModel and CogVideoXTransformer3DModel.*got Linear"):
        apply_blade(torch.nn.Linear(2, 2), BladeConfig.wan())


def test_rejects_non_config(wan_pipeline):
    with pytest.raises(TypeError, match="config must be a blade.BladeConfig, got dict"):
        apply_blade(wan_pipeline.transformer, {"block_size": 16})


def test_dense_steps_need_a_schedule(wan_pipeline):
    with pytest.raises(ValueError, match="dense_steps=2 needs the denoising step index; pass schedule="):
        apply_blade(wan_pipeline.transformer, preset("wan", dense_steps=2))


def test_rejects_dense_layers_outside_model(wan_pipeline):
    with pytest.raises(ValueError, match=r"dense_layers \[5\] are outside the model's 2 blocks"):
        apply_blade(wan_pipeline.transformer, preset("wan", dense_layers=(5,)))


def test_rejects_bad_schedule(wan_pipeline):
    with pytest.raises(ValueError, match="non-empty 1-D sequence of timesteps, got shape"):
        apply_blade(wan_pipeline.transformer, preset("wan"), schedule=[[1.0, 2.0]])


def test_remove_unpatched_raises(wan_pipeline):
    with pytest.raises(ValueError, match="not patched by blade"):
        remove_blade(wan_pipeline.transformer)


@pytest.mark.parametrize(
    ("family_name", "size", "message"),
    [
        ("wan", (5, 15, 18), r"latent height 15 is not divisible by the patch size 2 of WanTransformer3DModel; "
         r"valid nearby latent height values are \[14, 16\] \(pixel height 112 or 128 with an 8x VAE\)"),
        ("cogvideox", (5, 14, 17), r"latent width 17 is not divisible by the patch size 2 of "
         r"CogVideoXTransformer3DModel; valid nearby latent width values are \[16, 18\]"),
    ],
)
def test_invalid_latent_size_fails_early(wan_pipeline, cogvideox_pipeline, family_name, size, message):
    pipeline = wan_pipeline if family_name == "wan" else cogvideox_pipeline
    frames, height, width = size
    inputs = tiny_transformer_inputs(pipeline, latent_frames=frames, latent_height=14, latent_width=18)
    # resize the latents only: the check must fire before the model touches them
    shape = list(inputs["hidden_states"].shape)
    shape[-2], shape[-1] = height, width
    inputs["hidden_states"] = torch.randn(shape)
    inputs.pop("image_rotary_emb", None)
    apply_blade(pipeline.transformer, preset(family_name))
    with pytest.raises(ValueError, match=message):
        run(pipeline.transformer, inputs)


def test_mixed_timesteps_in_batch_rejected(wan_pipeline):
    apply_blade(wan_pipeline.transformer, preset("wan"), schedule=[999.0, 500.0, 1.0])
    inputs = tiny_transformer_inputs(wan_pipeline, batch_size=2)
    inputs["timestep"] = torch.tensor([999.0, 1.0])
    with pytest.raises(ValueError, match=r"mixes timesteps of different denoising steps \[0, 2\]"):
        run(wan_pipeline.transformer, inputs)


def test_attention_backend_reaches_dense_path(wan_pipeline):
    """diffusers' set_attention_backend writes each processor; ours forwards it to the original."""
    transformer = wan_pipeline.transformer
    apply_blade(transformer, preset("wan"))
    transformer.set_attention_backend("native")
    for attn in attention_modules(transformer):
        assert attn.processor.original._attention_backend == "native"


def test_deepcopy_of_patched_transformer_is_independent(wan_pipeline):
    """A copied student (e.g. the fake-score model of distillation) must track its own calls."""
    transformer = wan_pipeline.transformer
    inputs = tiny_transformer_inputs(wan_pipeline)
    expected = run(transformer, inputs)
    apply_blade(transformer, preset("wan"))
    sparse = run(transformer, inputs)

    copied = copy.deepcopy(transformer)
    with record_masks(copied) as recording:
        torch.testing.assert_close(run(copied, inputs), sparse, rtol=0, atol=0)
    assert len(recording.calls) == 2

    remove_blade(copied)
    assert torch.equal(run(copied, inputs), expected)
    assert torch.equal(run(transformer, inputs), sparse)


def test_apply_to_compiled_wrapper_patches_inner_model(wan_pipeline):
    transformer = wan_pipeline.transformer
    wrapper = torch.compile(transformer, backend="eager")  # compiles lazily, at the first call
    assert apply_blade(wrapper, preset("wan")) is wrapper
    assert all(isinstance(attn.processor, BladeWanAttnProcessor) for attn in attention_modules(transformer))
    remove_blade(wrapper)
    assert not any(isinstance(attn.processor, BladeWanAttnProcessor) for attn in attention_modules(transformer))


def test_rejects_latents_without_five_axes(wan_pipeline):
    apply_blade(wan_pipeline.transformer, preset("wan"))
    inputs = tiny_transformer_inputs(wan_pipeline)
    inputs["hidden_states"] = inputs["hidden_states"][:, :, 0]
    with pytest.raises(ValueError, match=r"expects hidden_states \[B, C, F, H, W\], got shape \(1, 4, 14, 18\)"):
        run(wan_pipeline.transformer, inputs)


@pytest.mark.parametrize(
    ("layout", "patch_thw", "latent_fhw", "grid"),
    [
        ("BCFHW", (1, 2, 2), (21, 60, 104), (21, 30, 52)),  # Wan2.1, 81 frames at 480x832
        ("BCFHW", (1, 2, 2), (21, 48, 80), (21, 24, 40)),  # Wan2.1, 81 frames at 384x640
        ("BFCHW", (1, 2, 2), (13, 60, 90), (13, 30, 45)),  # CogVideoX-5B, 49 frames at 480x720
        ("BFCHW", (2, 2, 2), (14, 96, 170), (7, 48, 85)),  # CogVideoX1.5 (patch_size_t 2), 768x1360
    ],
)
def test_latent_grid_of_released_sizes(layout, patch_thw, latent_fhw, grid):
    """Full-size latents (as meta tensors, no memory) map to the token grids of the released models."""
    frames, height, width = latent_fhw
    shape = (1, 16, frames, height, width) if layout == "BCFHW" else (1, frames, 16, height, width)
    reader = LatentGrid("Model", layout, patch_thw)
    assert reader({"hidden_states": torch.empty(shape, device="meta")}) == grid


def test_dense_attention_gives_unpatched_output(tiny_pipeline, model_family):
    transformer = tiny_pipeline.transformer
    inputs = tiny_transformer_inputs(tiny_pipeline, batch_size=1)
    expected = run(transformer, inputs)
    apply_blade(transformer, preset(model_family))
    sparse = run(transformer, inputs)

    with dense_attention(transformer):
        torch.testing.assert_close(run(transformer, inputs), expected, rtol=0, atol=0)
    torch.testing.assert_close(run(transformer, inputs), sparse, rtol=0, atol=0)

    with pytest.raises(RuntimeError, match="inside"):
        with dense_attention(transformer):
            raise RuntimeError("inside")
    torch.testing.assert_close(run(transformer, inputs), sparse, rtol=0, atol=0)


def test_dense_attention_rejects_unpatched(wan_pipeline):
    with pytest.raises(ValueError, match="dense_attention needs a transformer patched with blade.apply_blade"):
        with dense_attention(wan_pipeline.transformer):
            pass
