"""Fixtures for the prompt embedding tests."""

from pathlib import Path

import pytest
from tiny_text_encoders import build_pipeline_folder


@pytest.fixture(scope="session")
def pipeline_folders(tmp_path_factory) -> dict[str, Path]:
    """One tiny pipeline folder per family, built once per test session."""
    root = tmp_path_factory.mktemp("pipelines")
    return {family: build_pipeline_folder(root, family) for family in ("wan", "cogvideox", "other")}
