"""Role switching on one base transformer against the unpatched model, and LoRA files."""

import copy

import pytest
import torch
from safetensors.torch import save_file

from blade import BladeConfig, apply_blade
from blade.distill import DistillModels, load_lora, save_lora
from blade.models import tiny_transformer_inputs, tiny_wan_pipeline

SMALL_ASA = BladeConfig.wan(block_size=8, samples_per_block=4, max_ratio=0.5, pool_group=4)


def _inputs(pipeline):
    return tiny_transformer_inputs(pipeline, batch_size=2, latent_frames=3, latent_height=6, latent_width=10, timestep=613.0)


def _run(transformer, inputs):
    with torch.no_grad():
        return transformer(**inputs)[0]


@pytest.fixture
def wan_setup():
    pipeline = tiny_wan_pipeline(seed=0)
    inputs = _inputs(pipeline)
    dense = _run(pipeline.transformer, inputs)
    reference = copy.deepcopy(pipeline.transformer)
    apply_blade(reference, SMALL_ASA)
    sparse = _run(reference, inputs)
    models = DistillModels(pipeline.transformer, SMALL_ASA, lora_rank=4, lora_alpha=8, seed=3)
    return pipeline, models, inputs, dense, sparse


def test_roles_against_the_unpatched_and_patched_base(wan_setup):
    pipeline, models, inputs, dense, sparse = wan_setup
    assert not torch.allclose(dense, sparse, atol=1e-4)  # ASA differs from dense at this size
    with models.role("teacher"):
        assert torch.equal(_run(models.transformer, inputs), dense)
    # Both adapters start with lora_B = 0: student and fake equal the ASA base.
    for role in ("student", "fake"):
        with models.role(role):
            torch.testing.assert_close(_run(models.transformer, inputs), sparse, rtol=0, atol=1e-6)

    with torch.no_grad():
        for parameter in models.parameters("student"):
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(1)))
    with models.role("student"):
        student = _run(models.transformer, inputs)
    with models.role("fake"):
        torch.testing.assert_close(_run(models.transformer, inputs), sparse, rtol=0, atol=1e-6)
        with models.role("teacher"):
            assert torch.equal(_run(models.transformer, inputs), dense)
        assert models.active_role == "fake"
        torch.testing.assert_close(_run(models.transformer, inputs), sparse, rtol=0, atol=1e-6)
    assert not torch.allclose(student, sparse, atol=1e-4)


def test_both_adapters_start_identical_and_trainable(wan_setup):
    _, models, _, _, _ = wan_setup
    student, fake = models.parameters("student"), models.parameters("fake")
    assert len(student) == len(fake) == 2 * 2 * 4 * 2  # 2 blocks x (attn1, attn2) x 4 projections x (A, B)
    assert all(torch.equal(a, b) for a, b in zip(student, fake))
    assert all(p.requires_grad for p in student + fake)
    with pytest.raises(ValueError, match="role must be one of"):
        with models.role("critic"):
            pass


def test_backward_in_a_role_reaches_only_its_adapter(wan_setup):
    _, models, inputs, _, _ = wan_setup
    with models.role("student"):
        out = models.transformer(**inputs)[0]
        with torch.no_grad(), models.role("fake"):
            models.transformer(**inputs)
        out.square().mean().backward()
    assert all(p.grad is not None for p in models.parameters("student"))
    assert all(p.grad is None for p in models.parameters("fake"))


def test_lora_round_trip_through_the_diffusers_format(wan_setup, tmp_path, umask_022):
    pipeline, models, inputs, _, _ = wan_setup
    with torch.no_grad():
        for parameter in models.parameters("student"):
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(2)))
    with models.role("student"):
        expected = _run(models.transformer, inputs)
    path = save_lora(models.transformer, tmp_path)
    assert path.name == "pytorch_lora_weights.safetensors"
    assert path.stat().st_mode & 0o777 == 0o644

    fresh = tiny_wan_pipeline(seed=0)
    apply_blade(fresh.transformer, SMALL_ASA)
    assert load_lora(fresh, tmp_path) == 2 * 2 * 4
    torch.testing.assert_close(_run(fresh.transformer, inputs), expected, rtol=0, atol=1e-5)


def test_lora_matching_no_module_is_an_error(tmp_path):
    """peft's save_pretrained keys (base_model.model.) load nothing through load_lora_weights, silently."""
    save_file({"base_model.model.blocks.0.attn1.to_q.lora_A.weight": torch.zeros(4, 64)},
              str(tmp_path / "pytorch_lora_weights.safetensors"))
    with pytest.raises(ValueError, match="matches none of the WanTransformer3DModel modules"):
        load_lora(tiny_wan_pipeline(seed=0), tmp_path)
    with pytest.raises(FileNotFoundError, match="no LoRA file"):
        load_lora(tiny_wan_pipeline(seed=0), tmp_path / "missing")


def test_inference_reproduces_the_training_rollout(wan_setup, tmp_path):
    """The loaded student must sample with the very sampler and timesteps it was trained on."""
    from blade.distill.inference import student_latents
    from blade.distill.sampling import standard_normal, student_rollout
    from blade.distill.schedules import FlowMatchSchedule

    pipeline, models, inputs, _, _ = wan_setup
    with torch.no_grad():
        for parameter in models.parameters("student"):
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(4)))
    embeds = inputs["encoder_hidden_states"]
    shape = (4, 3, 6, 10)
    schedule = FlowMatchSchedule(3.0)
    generator = torch.Generator().manual_seed(9)
    noise = standard_normal(torch.empty(2, *shape), generator)

    def denoise(x, t):
        output = models.transformer(hidden_states=x, timestep=schedule.model_timestep(t),
                                    encoder_hidden_states=embeds, return_dict=False)[0]
        return schedule.to_x0_eps(output, x, t)

    with models.role("student"):
        trained = student_rollout(denoise, noise, schedule, 4, 0.9, generator).states[-1]
    save_lora(models.transformer, tmp_path)

    fresh = tiny_wan_pipeline(seed=0)
    apply_blade(fresh.transformer, SMALL_ASA)
    load_lora(fresh, tmp_path)
    sampled = student_latents(fresh, embeds, shape, num_steps=4, eta=0.9, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(sampled, trained, rtol=0, atol=1e-4)


def test_decode_latents_matches_the_pipeline_output():
    from blade.distill.inference import decode_latents

    pipeline = tiny_wan_pipeline(seed=0)
    settings = dict(prompt="a red cube", num_inference_steps=2, height=32, width=48, num_frames=5, guidance_scale=1.0)
    latents = pipeline(**settings, generator=torch.Generator().manual_seed(0), output_type="latent").frames
    video = pipeline(**settings, generator=torch.Generator().manual_seed(0), output_type="np").frames
    decoded = decode_latents(pipeline, latents)
    assert decoded.shape == video.shape == (1, 5, 32, 48, 3)
    assert abs(decoded - video).max() < 1e-5
