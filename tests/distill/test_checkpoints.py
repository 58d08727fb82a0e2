"""Checkpoint files: optimizer state through safetensors + JSON, atomic folders, keeping the last M."""

import torch

from blade.distill import checkpoints


class _SingleProcess:
    """The part of accelerate.Accelerator that write_checkpoint uses, for one process."""

    is_main_process = True
    process_index = 0
    num_processes = 1

    def wait_for_everyone(self):
        pass


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
    accelerator = _SingleProcess()
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
