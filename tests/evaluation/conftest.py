"""Fixtures of the evaluation tests: a tiny toy teacher folder and a tiny student LoRA saved for it."""

import dataclasses

import pytest
import torch

from blade.toy.teacher import ToyTeacherConfig, build_pipeline, save_pipeline


@pytest.fixture(autouse=True)
def _one_thread():
    # The tiny models' matrices are so small that a second thread mostly adds synchronisation.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def toy_model(tmp_path_factory):
    """A saved toy teacher (random weights, one block) generating 5 x 16 x 32 videos: 3 x 8 x 16 latents, 96 tokens."""
    config = dataclasses.replace(
        ToyTeacherConfig(), num_layers=1, head_dim=32, ffn_dim=64, text_dim=32, text_layers=1, text_ffn_dim=32,
        vae_base_dim=8, num_frames=5, height=16, width=32,
    )
    folder = tmp_path_factory.mktemp("toy_eval") / "toy-wan"
    save_pipeline(build_pipeline(config), config, folder)
    return folder


@pytest.fixture(scope="session")
def toy_lora(toy_model, tmp_path_factory):
    """A rank-4 student LoRA with non-zero random weights, saved with blade's own `save_lora`."""
    from peft import LoraConfig

    from blade.distill import save_lora
    from blade.models import load_pipeline

    pipeline = load_pipeline(toy_model)
    torch.manual_seed(0)
    pipeline.transformer.add_adapter(
        LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False),
        adapter_name="student",
    )
    return save_lora(pipeline.transformer, tmp_path_factory.mktemp("toy_lora"))
