"""Fixtures of the evaluation tests: one thread (the toy teacher and LoRA fixtures live in tests/conftest.py)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # The tiny models' matrices are so small that a second thread mostly adds synchronisation.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
