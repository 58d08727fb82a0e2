"""`blade bench masks` on a tiny grid, and the synthetic inputs it runs on."""

import json

import pytest
import torch

from blade.bench.masks import QUICK_SETTINGS, settings_from_arguments
from blade.bench.synthetic import synthetic_video_attention
from blade.cli import main


def test_cli_writes_json_and_figure(tmp_path):
    exit_code = main(
        [
            "bench", "masks", "--grid", "3,8,12", "--heads", "2", "--block-size", "32", "--samples-per-block", "8",
            "--pool-group", "6", "--sparsities", "0.5,0.75", "--backend", "torch", "--timing-length", "1024",
            "--timing-heads", "2", "--timing-samples", "8,16", "--repeats", "1", "--out-dir", str(tmp_path),
        ]
    )
    assert exit_code == 0
    report = json.loads((tmp_path / "masks.json").read_text())
    assert (tmp_path / "masks.png").stat().st_size > 0
    assert report["inputs"]["kind"] == "synthetic"
    assert "SYNTHETIC" in report["inputs"]["note"]
    rows = {(row["target_sparsity"], row["strategy"]): row for row in report["quality"]}
    names = {"oracle_topk", "sliding_tile", "radial", "asa_sparse_only", "asa"}
    assert set(rows) == {(s, name) for s in (0.5, 0.75) for name in names}
    # 288 tokens in blocks of 32: 9 key blocks, budget floor(9 * 0.25) = 2 at sparsity 0.75
    assert rows[(0.75, "sliding_tile")]["kept_fraction"] == pytest.approx(2 / 9, abs=1e-4)
    for sparsity in (0.5, 0.75):
        oracle = rows[(sparsity, "oracle_topk")]["recall"]["mean"]
        assert rows[(sparsity, "asa_sparse_only")]["recall"]["mean"] <= oracle + 1e-6
        assert 0 < rows[(sparsity, "asa_sparse_only")]["recall_vs_oracle"] <= 1 + 1e-6
        asa = rows[(sparsity, "asa")]
        assert asa["global_branch"] is True
        assert asa["reported_sparsity"] == pytest.approx(1 - asa["kept_fraction"] - 1 / 6, abs=1e-4)
    timing = report["estimation_cost"]
    assert [row["samples_per_block"] for row in timing["rows"]] == [8, 16]
    for row in timing["rows"]:
        # one round: the fraction is that round's estimate plus selection over its dense time
        expected = (row["estimate_seconds"] + row["select_seconds"]) / timing["dense_sdpa_seconds"]
        assert row["fraction_of_dense"] == pytest.approx(expected, rel=1e-3, abs=1e-5)
        assert row["fraction_of_dense_per_round"] == [row["fraction_of_dense"]]
    assert "estimation_fraction_16_samples" in report["acceptance"]
    assert not list(tmp_path.glob("*.tmp*"))


def test_settings_from_arguments():
    settings = settings_from_arguments(True, heads=5, grid=None)
    assert settings.heads == 5
    assert settings.grid == QUICK_SETTINGS.grid
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\), got 1.2"):
        settings_from_arguments(False, sparsities=(0.5, 1.2))


def test_synthetic_inputs_have_local_and_sink_structure():
    grid = (4, 10, 12)
    q, k, v = synthetic_video_attention(grid, heads=2, generator=torch.Generator().manual_seed(0))
    assert q.shape == k.shape == v.shape == (1, 2, 480, 64)
    logits = q[0, 0] @ k[0, 0].T / 8.0  # [L, L], head 0 is the sharp local profile
    raster = torch.arange(480)
    coordinates = torch.stack([raster // 120, (raster // 12) % 10, raster % 12], dim=1).float()
    distance = torch.cdist(coordinates, coordinates)
    near = logits[(distance > 0) & (distance <= 1)].mean()
    far = logits[distance >= 5].mean()
    assert float(near) > float(far) + 3.0
    # sink keys get a high logit from every query on average
    column_means = logits.mean(dim=0)
    assert float(column_means.topk(4).values.min()) > float(column_means.median()) + 1.0


def test_synthetic_rejects_small_head_dim():
    with pytest.raises(ValueError, match="head_dim must be at least 53"):
        synthetic_video_attention((2, 3, 4), heads=1, head_dim=32, generator=torch.Generator())


def test_cli_rejects_invalid_sparsity_without_traceback(tmp_path, caplog):
    from blade.cli import main

    exit_code = main(["bench", "masks", "--sparsities", "1.5", "--out-dir", str(tmp_path)])
    assert exit_code == 2
    assert "sparsity must be in [0, 1), got 1.5" in caplog.text
    assert not (tmp_path / "masks.json").exists()
