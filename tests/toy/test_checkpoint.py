import json

import pytest
import torch

from blade.toy.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint


def _model_and_optimizer(seed):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Linear(7, 3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.95))
    for _ in range(3):
        model(torch.randn(4, 5)).pow(2).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    return model, optimizer


def test_round_trip_restores_weights_and_optimizer(tmp_path):
    model, optimizer = _model_and_optimizer(0)
    save_checkpoint(tmp_path, 3, {"net": model}, optimizer, {"phase": "x"}, config={"seed": 0})
    restored, restored_optimizer = _model_and_optimizer(1)
    state = load_checkpoint(latest_checkpoint(tmp_path), {"net": restored}, restored_optimizer)
    assert state["step"] == 3
    assert state["phase"] == "x"
    for a, b in zip(model.parameters(), restored.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # One more identical step must give identical weights, which needs the moments and step counts.
    batch = torch.randn(4, 5)
    for net, opt in ((model, optimizer), (restored, restored_optimizer)):
        net(batch).pow(2).sum().backward()
        opt.step()
    for a, b in zip(model.parameters(), restored.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert restored_optimizer.param_groups[0]["betas"] == (0.8, 0.95)


def test_keeps_newest_and_ignores_partial_writes(tmp_path):
    model, optimizer = _model_and_optimizer(0)
    assert latest_checkpoint(tmp_path) is None
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, {"net": model}, optimizer, {}, keep=2)
    # An interrupted write leaves only a hidden staging folder, which nothing points at.
    (tmp_path / "checkpoints" / ".step-0000004-abc").mkdir()
    folders = sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*"))
    assert folders == ["step-0000002", "step-0000003"]
    assert latest_checkpoint(tmp_path).name == "step-0000003"
    json.dump({"checkpoint": "step-0000009", "step": 9}, open(tmp_path / "latest.json", "w"))
    with pytest.raises(FileNotFoundError, match="no state.json"):
        latest_checkpoint(tmp_path)


def test_checkpoint_files_get_umask_permissions(tmp_path, umask_022):
    model, optimizer = _model_and_optimizer(0)
    folder = save_checkpoint(tmp_path, 3, {"net": model}, optimizer, {}, config={"seed": 0})
    assert folder.stat().st_mode & 0o777 == 0o755
    for name in ("net.safetensors", "optimizer.safetensors", "state.json", "config.json"):
        assert (folder / name).stat().st_mode & 0o777 == 0o644, name
    assert (tmp_path / "latest.json").stat().st_mode & 0o777 == 0o644
