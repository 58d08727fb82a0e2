"""Fixtures of the evaluation tests (the toy teacher and LoRA fixtures live in tests/conftest.py)."""

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield
