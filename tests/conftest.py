"""Shared fixtures: the gpu marker, tiny seeded Wan and CogVideoX pipelines, saved once per session
and loaded back through `blade.models.load_pipeline`, as a user would load a downloaded pipeline
folder, and the `python3` kernel that the notebook tests run papermill with."""

import copy
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
