"""Shared fixtures: the gpu marker, tiny seeded Wan and CogVideoX pipelines, saved once per session
and loaded back through `blade.models.load_pipeline`, as a user would load a downloaded pipeline
folder, the `python3` kernel that the notebook tests run papermill with, and a tiny saved toy teacher
with a student LoRA for `blade evaluate` and notebook 04."""

import copy
import os
import subprocess
import sys

import pytest
import torch

from blade.models import load_pipeline, tiny_cogvideox_pipeline, tiny_wan_pipeline

_BUILDERS = {"wan": tiny_wan_pipeline, "cogvideox": tiny_cogvideox_pipeline}


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def umask_022():
    """Set the process umask to 022, the common default, for one test and restore it afterwards."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.fixture(scope="session")
def tiny_pipeline_dirs(tmp_path_factory):
    """Family name -> folder holding the saved tiny pipeline."""
    folders = {}
    for family, build in _BUILDERS.items():
        folder = tmp_path_factory.mktemp(f"tiny_{family}")
        build(seed=0).save_pretrained(folder)
        folders[family] = folder
    return folders


@pytest.fixture(scope="session")
def _loaded_pipelines(tiny_pipeline_dirs):
    return {family: load_pipeline(folder) for family, folder in tiny_pipeline_dirs.items()}


@pytest.fixture(params=["wan", "cogvideox"])
def model_family(request):
    """Parametrises a test over both supported model families."""
    return request.param


@pytest.fixture
def tiny_pipeline(_loaded_pipelines, model_family):
    """A fresh copy of the loaded tiny pipeline of `model_family`; tests may patch and train it freely."""
    return copy.deepcopy(_loaded_pipelines[model_family])


@pytest.fixture
def wan_pipeline(_loaded_pipelines):
    return copy.deepcopy(_loaded_pipelines["wan"])


@pytest.fixture
def cogvideox_pipeline(_loaded_pipelines):
    return copy.deepcopy(_loaded_pipelines["cogvideox"])


@pytest.fixture(scope="session")
def python3_kernel():
    """Make sure a `python3` kernelspec exists, installing ipykernel's into this environment if not."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--sys-prefix", "--name", "python3"], check=True)
    return "python3"


@pytest.fixture
def one_thread():
    """Run the test with one torch thread: the tiny models' matrices are so small that two threads spend
    most of their time synchronising (12 ms instead of 35 us per 64-wide linear on a shared 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def toy_model(tmp_path_factory):
    """A saved toy teacher (random weights, one block) generating 5 x 16 x 32 videos: 3 x 8 x 16 latents, 96 tokens."""
    import dataclasses

    from blade.toy.teacher import ToyTeacherConfig, build_pipeline, save_pipeline

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
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # peft draws the random LoRA weights from the global generator
        pipeline.transformer.add_adapter(
            LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False),
            adapter_name="student",
        )
    return save_lora(pipeline.transformer, tmp_path_factory.mktemp("toy_lora"))
