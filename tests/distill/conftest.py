"""Fixtures of the distillation tests: one thread, prompt embeddings of the tiny Wan pipeline, a tiny run config."""

import pytest

from blade.distill import DistillConfig
from blade.prompts import embed_prompts

PROMPTS = [f"a {colour} cube turning slowly, take {i}" for i, colour in enumerate(["red", "green", "blue"] * 3)]


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


@pytest.fixture(autouse=True)
def _fresh_accelerator_state():
    # accelerate keeps one process-wide state; a run with another mixed precision needs it reset.
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(scope="session")
def wan_embeddings(tiny_pipeline_dirs, tmp_path_factory):
    """Folder of `blade embed` output for 9 prompts with the tiny Wan pipeline's encoder (16 tokens)."""
    folder = tmp_path_factory.mktemp("distill_embeddings")
    prompt_file = folder / "prompts.txt"
    prompt_file.write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    embed_prompts(tiny_pipeline_dirs["wan"], prompt_file, folder / "embeddings", max_length=16, progress=False)
    return folder / "embeddings"


def tiny_config(embeddings, output_dir, **overrides) -> DistillConfig:
    """A few-second distillation run on the tiny Wan teacher, odd latent sizes, batch 2."""
    settings = dict(
        model="tiny-wan",
        embeddings=str(embeddings),
        latent_shape=(4, 3, 6, 10),
        output_dir=str(output_dir),
        num_steps=4,
        lora_rank=4,
        lora_alpha=4,
        max_train_steps=4,
        batch_size=2,
        mixed_precision="no",
        gradient_checkpointing=False,
        fake_loss_threshold=None,
        checkpoint_every=2,
        keep_checkpoints=2,
        log_every=1,
        warmup_steps=1,
        blade={"preset": "wan", "block_size": 8, "samples_per_block": 4, "max_ratio": 0.5, "pool_group": 4},
    )
    settings.update(overrides)
    return DistillConfig(**settings)
