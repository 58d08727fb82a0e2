import argparse
import json

import pytest
import torch

from blade.bench.masks import add_masks_arguments, register_masks, run_masks_benchmark
from blade.bench.synthetic import synthetic_video_attention


def _quick_args(tmp_path, *extra):
    parser = argparse.ArgumentParser()
    add_masks_arguments(parser)
    return parser.parse_args(
        [
            "--output", str(tmp_path / "bench" / "masks.json"),
            "--grid", "3", "8", "12",
            "--heads", "2",
            "--block-size", "32",
            "--samples-per-block", "8",
            "--pool-group", "6",
            "--sparsities", "0.5", "0.75",
            "--backend", "torch",
            "--timing-length", "1024",
            "--timing-heads", "2",
            "--timing-samples", "8", "16",
            "--repeats", "1",
            *extra,
        ]
    )


def test_masks_benchmark_writes_json(tmp_path):
    args = _quick_args(tmp_path)
    assert run_masks_benchmark(args) == 0
    report = json.loads((tmp_path / "bench" / "masks.json").read_text())
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
    assert all(row["fraction_of_dense"] > 0 for row in timing["rows"])
    assert "estimation_fraction_16_samples" in report["acceptance"]
    assert not list((tmp_path / "bench").glob("*.tmp"))


def test_register_masks_sets_handler():
    parser = argparse.ArgumentParser()
    register_masks(parser.add_subparsers(dest="what"))
    args = parser.parse_args(["masks", "--heads", "3"])
    assert args.handler is run_masks_benchmark
    assert args.heads == 3
    assert args.sparsities == [0.5, 0.75, 0.9]


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
