"""Atomic writes: the target is either the old file or the complete new one, with normal permissions."""

import os

import pytest
import torch
from safetensors.torch import load_file

from blade.io import apply_default_permissions, atomic_save_safetensors, atomic_write, atomic_write_json, atomic_write_text


def test_written_file_gets_umask_permissions(tmp_path, umask_022):
    path = atomic_write_json(tmp_path / "sub" / "data.json", {"a": 1})
    assert path.read_text() == '{\n  "a": 1\n}\n'
    assert path.stat().st_mode & 0o777 == 0o644


def test_failed_write_keeps_old_file(tmp_path):
    path = atomic_write_text(tmp_path / "note.txt", "old")

    def failing_write(temporary):
        temporary.write_text("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, failing_write)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["note.txt"]


def test_temporary_keeps_requested_suffix(tmp_path):
    seen = []
    atomic_write(tmp_path / "clip.mp4", lambda temporary: (seen.append(temporary.name), temporary.write_bytes(b"x")), suffix=".mp4")
    assert seen[0].endswith(".mp4")
    assert seen[0].startswith(".clip.mp4.")


def test_safetensors_round_trip(tmp_path):
    tensors = {"w": torch.arange(6, dtype=torch.float32).view(2, 3).t()}  # non-contiguous on purpose
    path = atomic_save_safetensors(tmp_path / "w.safetensors", tensors, metadata={"k": "v"})
    assert torch.equal(load_file(path)["w"], tensors["w"])


def test_default_permissions_reach_nested_entries(tmp_path, umask_022):
    folder = tmp_path / "staging"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "weights.safetensors").write_bytes(b"x")
    os.chmod(folder / "sub" / "weights.safetensors", 0o600)
    os.chmod(folder / "sub", 0o700)
    apply_default_permissions(folder)
    assert (folder / "sub").stat().st_mode & 0o777 == 0o755
    assert (folder / "sub" / "weights.safetensors").stat().st_mode & 0o777 == 0o644
