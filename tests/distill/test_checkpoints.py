"""Checkpoint files: optimizer state through safetensors + JSON, atomic folders, keeping the last M."""

import pytest
import torch
from accelerate import Accelerator

from blade.distill import checkpoints


def _accelerator():
    return Accelerator(cpu=True, mixed_precision="no")


def test_optimizer_state_round_trip():
    parameters = [torch.nn.Parameter(torch.randn(3, 5)), torch.nn.Parameter(torch.randn(7))]
    optimizer = torch.optim.AdamW(parameters, lr=1e-3, betas=(0.0, 0.95))
    for _ in range(2):
        sum(p.square().sum() for p in parameters).backward()
        optimizer.step()
    tensors, rest = checkpoints.flatten_optimizer(optimizer.state_dict(), "optimizer.x")
    restored = torch.optim.AdamW([torch.nn.Parameter(p.detach().clone()) for p in parameters], lr=1.0)
    restored.load_state_dict(checkpoints.unflatten_optimizer(tensors, rest, "optimizer.x"))
    for a, b in zip(optimizer.state.values(), restored.state.values()):
        assert a.keys() == b.keys()
        assert all(torch.equal(a[key], b[key]) for key in a)
    assert tuple(restored.param_groups[0]["betas"]) == (0.0, 0.95)


def test_checkpoints_are_atomic_and_pruned(tmp_path):
    accelerator = _accelerator()
    for step in (2, 4, 6):
        checkpoints.write_checkpoint(accelerator, tmp_path, step, {"w": torch.full((2,), float(step))},
                                     {"step": step}, {"cpu": torch.get_rng_state()}, keep=2)
    assert [p.name for p in checkpoints.list_checkpoints(tmp_path)] == ["checkpoint-0000004", "checkpoint-0000006"]
    # An interrupted write leaves only a hidden .partial folder, which is never listed or resumed from.
    (tmp_path / ".checkpoint-0000008.partial").mkdir()
    assert checkpoints.latest_checkpoint(tmp_path).name == "checkpoint-0000006"
    tensors, state, rng = checkpoints.read_checkpoint(checkpoints.latest_checkpoint(tmp_path), rank=0)
    assert state == {"step": 6, "world_size": 1} and torch.equal(tensors["w"], torch.full((2,), 6.0))
    assert torch.equal(rng["cpu"], torch.get_rng_state())


def test_write_interrupted_midway_keeps_last_checkpoint(tmp_path):
    accelerator = _accelerator()
    checkpoints.write_checkpoint(accelerator, tmp_path, 2, {"w": torch.full((2,), 2.0)}, {"step": 2},
                                 {"cpu": torch.get_rng_state()}, keep=2)

    def crash(folder):
        # The shared tensors and state are written by now, and the run dies before the rename.
        assert (folder / checkpoints.STATE_TENSORS).is_file()
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        checkpoints.write_checkpoint(accelerator, tmp_path, 4, {"w": torch.full((2,), 4.0)}, {"step": 4},
                                     {"cpu": torch.get_rng_state()}, keep=2, write_extra=crash)
    assert (tmp_path / ".checkpoint-0000004.partial").is_dir()
    assert [p.name for p in checkpoints.list_checkpoints(tmp_path)] == ["checkpoint-0000002"]
    tensors, state, _ = checkpoints.read_checkpoint(checkpoints.latest_checkpoint(tmp_path), rank=0)
    assert state == {"step": 2, "world_size": 1}
    assert torch.equal(tensors["w"], torch.full((2,), 2.0))

    # Writing step 4 again replaces the leftover partial folder.
    checkpoints.write_checkpoint(accelerator, tmp_path, 4, {"w": torch.full((2,), 4.0)}, {"step": 4},
                                 {"cpu": torch.get_rng_state()}, keep=2)
    assert not (tmp_path / ".checkpoint-0000004.partial").exists()
    assert checkpoints.latest_checkpoint(tmp_path).name == "checkpoint-0000004"
