import dataclasses

import pytest

from blade.toy.teacher import ToyTeacherConfig, TrainStage


@pytest.fixture
def tiny_config() -> ToyTeacherConfig:
    """A toy teacher small enough to train a few steps in seconds (one block, 16 x 16 frames)."""
    return dataclasses.replace(
        ToyTeacherConfig(),
        num_layers=1,
        head_dim=32,
        ffn_dim=64,
        text_dim=32,
        text_layers=1,
        text_ffn_dim=32,
        vae_base_dim=8,
        num_frames=5,
        height=16,
        width=16,
        vae_steps=3,
        vae_batch_size=2,
        warmup_steps=2,
        stages=(TrainStage(num_frames=5, height=8, width=8, batch_size=2, steps=2),
                TrainStage(num_frames=5, height=16, width=12, batch_size=2, steps=2)),
        log_every=2,
        checkpoint_every=2,
    )
