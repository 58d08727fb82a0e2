import json

import pytest
import torch
from diffusers import WanPipeline
from safetensors.torch import load_file

from blade.toy.teacher import ToyTeacherConfig, load_config
from blade.toy.train import learning_rate, load_run_pipeline, stage_at, train_teacher


def _weights(folder, name):
    return load_file(str(folder / f"{name}.safetensors"))


def test_resume_matches_uninterrupted_run(tiny_config, tmp_path):
    """An interrupted run resumed from its checkpoint must end with the same weights as one that
    never stopped, including an interruption in the middle of the VAE phase and between stages."""
    straight = tmp_path / "straight"
    train_teacher(tiny_config, straight)
    resumed = tmp_path / "resumed"
    train_teacher(tiny_config, resumed, stop_after=2)  # inside the VAE phase
    train_teacher(tiny_config, resumed, stop_after=5)  # inside the first transformer stage
    train_teacher(tiny_config, resumed)
    last = f"step-{tiny_config.vae_steps + tiny_config.transformer_steps:07d}"
    for name in ("vae", "transformer", "text_encoder"):
        a = _weights(straight / "checkpoints" / last, name)
        b = _weights(resumed / "checkpoints" / last, name)
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=f"{name}.{key}")
    state = json.loads((resumed / "checkpoints" / last / "state.json").read_text())
    assert len(state["latents_mean"]) == tiny_config.latent_channels
    saved_config = json.loads((resumed / "checkpoints" / last / "config.json").read_text())
    assert ToyTeacherConfig.from_dict(saved_config) == tiny_config


def test_resume_with_other_config_raises(tiny_config, tmp_path):
    train_teacher(tiny_config, tmp_path, stop_after=1)
    import dataclasses

    with pytest.raises(ValueError, match="different config"):
        train_teacher(dataclasses.replace(tiny_config, lr=tiny_config.lr * 2), tmp_path)


def test_stage_schedule_and_lr(tiny_config):
    assert stage_at(tiny_config, 0) == tiny_config.stages[0]
    assert stage_at(tiny_config, 2) == tiny_config.stages[1]
    with pytest.raises(ValueError, match="past the last stage"):
        stage_at(tiny_config, 4)
    assert learning_rate(1.0, 0, 100, 10, 0.1) == pytest.approx(0.1)
    assert learning_rate(1.0, 10, 100, 10, 0.1) == pytest.approx(1.0)
    assert learning_rate(1.0, 100, 100, 10, 0.1) == pytest.approx(0.1)


def test_cli_train_then_evaluate(tiny_config, tmp_path):
    """The documented commands: train a run from a JSON config, export it, evaluate both folders."""
    from blade.cli import main

    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(tiny_config.to_dict()))
    run_dir, export = tmp_path / "run", tmp_path / "toy-wan"
    assert main(["toy-teacher", "train", "--run-dir", str(run_dir), "--export", str(export),
                 "--config", str(config_file)]) == 0
    pipeline = WanPipeline.from_pretrained(export)
    assert load_config(export) == tiny_config
    trained, _ = load_run_pipeline(run_dir)
    assert pipeline.vae.config.latents_std == trained.vae.config.latents_std
    for key, value in trained.transformer.state_dict().items():
        torch.testing.assert_close(pipeline.transformer.state_dict()[key], value, rtol=0, atol=0)
    for model in (export, run_dir):
        out = tmp_path / f"{model.name}.json"
        assert main(["toy-teacher", "evaluate", "--model", str(model), "--out", str(out),
                     "--steps", "2", "--limit", "2"]) == 0
        result = json.loads(out.read_text())
        assert (tmp_path / f"{model.name}-heldout.png").is_file()
        for split in ("heldin", "heldout"):
            aggregate = result[split]["aggregate"]
            assert aggregate["num_videos"] == 2
            assert 0.0 <= aggregate["attribute_accuracy"] <= 1.0
            assert aggregate["frechet_distance"] >= 0.0
        assert result["settings"]["num_frames"] == tiny_config.num_frames

    # One prompt per split has no Fréchet distance (a covariance needs two videos) but still scores.
    out = tmp_path / "single.json"
    assert main(["toy-teacher", "evaluate", "--model", str(export), "--out", str(out), "--steps", "2", "--limit", "1"]) == 0
    for split in ("heldin", "heldout"):
        aggregate = json.loads(out.read_text())[split]["aggregate"]
        assert aggregate["num_videos"] == 1
        assert aggregate["frechet_distance"] is None
        assert 0.0 <= aggregate["attribute_accuracy"] <= 1.0


def test_flow_matching_loss_against_reference(tiny_config):
    """Sigma follows the scheduler's shift, x_t = (1 - sigma) x0 + sigma noise, target noise - x0."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from blade.toy.teacher import build_pipeline
    from blade.toy.train import flow_matching_loss

    pipeline = build_pipeline(tiny_config)
    latents = torch.randn(2, tiny_config.latent_channels, 3, 4, 6)
    texts = ["a red circle moving left", ""]
    loss = flow_matching_loss(pipeline, latents, texts, tiny_config, torch.Generator().manual_seed(7))

    generator = torch.Generator().manual_seed(7)
    u = torch.rand(2, generator=generator)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=tiny_config.shift)
    # The scheduler maps an unshifted sigma s to shift s / (1 + (shift - 1) s).
    unshifted = torch.linspace(1.0, 0.05, 10)
    scheduler.set_timesteps(sigmas=unshifted.numpy())
    shift = tiny_config.shift
    torch.testing.assert_close(scheduler.sigmas[:-1], shift * unshifted / (1 + (shift - 1) * unshifted), rtol=1e-4, atol=1e-5)
    sigma = shift * u / (1 + (shift - 1) * u)
    noise = torch.randn(latents.shape, generator=generator)
    noisy = (1 - sigma.view(-1, 1, 1, 1, 1)) * latents + sigma.view(-1, 1, 1, 1, 1) * noise
    embeds, _ = pipeline.encode_prompt(texts, do_classifier_free_guidance=False, max_sequence_length=tiny_config.text_len)
    prediction = pipeline.transformer(noisy, sigma * 1000, embeds, return_dict=False)[0]
    expected = ((prediction - (noise - latents)) ** 2).mean()
    torch.testing.assert_close(loss, expected)


def test_vae_loss_reduces_to_plain_losses(tiny_config):
    """With foreground weight 1 the reconstruction term is torch's MSE of the decoded posterior
    mean, and the KL term is the closed-form KL of a diagonal Gaussian to N(0, 1), averaged per
    latent element."""
    import torch.nn.functional as F

    from blade.toy.data import make_videos, to_vae_layout
    from blade.toy.teacher import build_pipeline
    from blade.toy.train import decode_unclamped, vae_loss

    vae = build_pipeline(tiny_config).vae
    videos = to_vae_layout(make_videos(["a red circle moving left", "a cyan cross moving up"], 5, 16, 16, seed=0))
    loss = vae_loss(vae, videos, 0.5, foreground_weight=1.0)

    posterior = vae.encode(videos).latent_dist
    reconstruction = decode_unclamped(vae, posterior.mean)
    clamped = vae.decode(posterior.mean).sample
    torch.testing.assert_close(reconstruction.clamp(-1, 1), clamped)
    normal = torch.distributions.Normal(torch.zeros_like(posterior.mean), torch.ones_like(posterior.mean))
    kl = torch.distributions.kl_divergence(torch.distributions.Normal(posterior.mean, posterior.std), normal).mean()
    expected = F.mse_loss(reconstruction, videos) + 0.5 * kl
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    weighted = vae_loss(vae, videos, 0.5, foreground_weight=10.0)
    assert not torch.allclose(weighted, loss)
