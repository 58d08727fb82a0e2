"""Notebook 02 runs end to end through papermill on a tiny Wan pipeline folder."""

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from blade.models import tiny_wan_pipeline

papermill = pytest.importorskip("papermill")

from tests.notebooks.helpers import ROOT, run_notebook  # noqa: E402

NOTEBOOK = ROOT / "notebooks" / "02_sparsity_masks.ipynb"


def _run(tmp_path, monkeypatch, kernel, parameters):
    return run_notebook(NOTEBOOK, tmp_path, monkeypatch, kernel, parameters)


def test_notebook_02_on_tiny_wan(tmp_path, monkeypatch, python3_kernel):
    model = tmp_path / "tiny-wan"
    tiny_wan_pipeline(seed=0).save_pretrained(model)
    config_file = tmp_path / "blade.yaml"
    # blocks of 8 so the 3 x 4 x 7 token grid (84 tokens, last block ragged) spans 11 blocks
    config_file.write_text(yaml.safe_dump(
        {"block_size": 8, "samples_per_block": 4, "max_ratio": 0.3, "pool_group": 8, "backend": "torch"}
    ))
    out = tmp_path / "out"

    executed = _run(tmp_path, monkeypatch, python3_kernel, {
        "model_path": str(model), "blade_config": str(config_file), "steps": 2, "guidance_scale": 5.0,
        "height": 64, "width": 112, "frames": 9, "capture_layer": 1, "sparsities": [0.5, 0.75],
        "out_dir": str(out), "run_id": "test", "interactive": False,
    })

    run = out / "test"
    for name in ("masks.png", "gilbert_order.png", "quality.png", "sparsity_by_layer.png"):
        assert (run / name).stat().st_size > 0, name
    summary = json.loads((run / "summary.json").read_text())
    assert summary["grid_thw"] == [3, 4, 7]
    # 2 steps x 2 CFG forwards x 2 layers, every call sparse
    assert summary["recorded_calls"] == summary["calls_checked"] == 8
    assert summary["curve_is_bijection"] is True
    strategies = {row["strategy"] for row in summary["quality"]}
    assert strategies == {"oracle_topk", "sliding_tile", "radial", "asa_sparse_only", "asa"}
    for row in summary["quality"]:
        assert 0.0 < row["recall"]["mean"] <= 1.0 + 1e-6, row

    # the saved recording is independent of the kernel: recompute one call's sparsity here
    saved = load_file(str(run / "recording" / "masks.safetensors"))
    mask = saved["0.block_mask"]
    assert mask.shape == (1, 2, 11, 11)
    torch.testing.assert_close(saved["0.sparsity"], 1.0 - mask.float().mean(dim=(-2, -1)) - 1.0 / 8)
    assert len(list((run / "video").glob("*.mp4"))) == 1

    cells = json.loads(executed.read_text())["cells"]
    assert "OK: 8 recorded calls match" in "".join(cells[-1]["outputs"][0]["text"])
    # with interactive=False the mask cell draws the static grid inline, not the slider widget
    mask_cell = next(cell for cell in cells if "".join(cell["source"]).startswith("grid_figure = plot_mask_grid"))
    output_types = [kind for output in mask_cell["outputs"] for kind in output.get("data", {})]
    assert "image/png" in output_types
    assert "application/vnd.jupyter.widget-view+json" not in output_types


def test_notebook_02_missing_model_message(tmp_path, monkeypatch, python3_kernel):
    with pytest.raises(papermill.PapermillExecutionError, match="no diffusers pipeline folder at .*make toy-teacher"):
        _run(tmp_path, monkeypatch, python3_kernel,
             {"model_path": str(tmp_path / "absent-model"), "out_dir": str(tmp_path / "out"), "interactive": False})
