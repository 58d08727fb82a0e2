"""The toy teacher shipped in data/models/toy-wan: loadable like a real Wan folder, and its VAE keeps colours."""

from pathlib import Path

import pytest
import torch

SHIPPED = Path(__file__).resolve().parents[2] / "data" / "models" / "toy-wan"


@pytest.fixture(scope="module")
def shipped():
    if not (SHIPPED / "model_index.json").is_file():
        pytest.fail(f"{SHIPPED} is missing; run `make toy-teacher` or restore it from git")
    from blade.models import load_pipeline

    return load_pipeline(SHIPPED)


def test_shipped_folder_size_and_config(shipped):
    from blade.toy.teacher import ToyTeacherConfig, load_config

    size = sum(p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file())
    assert size <= 25 * 2**20, f"{SHIPPED} holds {size / 2**20:.1f} MiB, over the 25 MiB limit"
    config = load_config(SHIPPED)
    assert isinstance(config, ToyTeacherConfig)
    assert type(shipped).__name__ == "WanPipeline"
    assert shipped.transformer.config.num_layers == config.num_layers
    assert shipped.vae.config.z_dim == config.latent_channels
    # Trained latent statistics, not the untrained defaults of 0 and 1.
    assert shipped.vae.config.latents_std != [1.0] * config.latent_channels


def test_shipped_vae_reconstructs_colours(shipped):
    """Encode and decode procedural clips of every colour, then check that ToyBench reads back each prompt's colour."""
    from blade.toy.bench import score_video
    from blade.toy.data import make_videos, to_vae_layout
    from blade.toy.prompts import COLOURS

    prompts = [f"a {colour} square moving right" for colour in COLOURS]
    videos = make_videos(prompts, 9, 32, 32, seed=11)  # [B, T, H, W, 3]
    with torch.no_grad():
        latents = shipped.vae.encode(to_vae_layout(videos)).latent_dist.mode()
        decoded = shipped.vae.decode(latents).sample.permute(0, 2, 3, 4, 1)  # [B, T, H, W, 3]
    assert all(score_video(video, prompt).colour_correct for video, prompt in zip(decoded, prompts))
