"""Notebook 04 runs end to end through papermill on a tiny toy teacher and student LoRA."""

import json

import pytest
import yaml

papermill = pytest.importorskip("papermill")

from tests.notebooks.helpers import ROOT, run_notebook  # noqa: E402

NOTEBOOK = ROOT / "notebooks" / "04_evaluation.ipynb"


def _run(tmp_path, monkeypatch, kernel, parameters):
    return run_notebook(NOTEBOOK, tmp_path, monkeypatch, kernel, parameters)


def test_notebook_04_runs_and_reloads(tmp_path, monkeypatch, python3_kernel, toy_model, toy_lora):
    config_file = tmp_path / "eval.yaml"
    config_file.write_text(yaml.safe_dump({
        "model": str(toy_model), "lora": str(toy_lora),
        "blade": {"preset": "wan", "block_size": 8, "samples_per_block": 4, "max_ratio": 0.3, "pool_group": 4},
        "prompts": "toy:heldout", "max_prompts": 2, "teacher_steps": 2, "student_steps": 2,
        "training_free": ["radial"], "out_dir": str(tmp_path / "eval"), "run_id": "nb",
    }))
    executed = _run(tmp_path, monkeypatch, python3_kernel, {"config_file": str(config_file), "grid_columns": 2})

    run = tmp_path / "eval" / "nb"
    metrics = json.loads((run / "metrics.json").read_text())
    assert [entry["name"] for entry in metrics["variants"]] == ["teacher", "teacher_8step", "student_asa", "free_radial"]
    check = json.loads((run / "notebook_04_check.json").read_text())
    assert check["worst_speedup_error"] <= 1e-9
    cells = json.loads(executed.read_text())["cells"]
    assert "OK: 4 speedups match" in "".join(cells[-1]["outputs"][0]["text"])
    images = [output for cell in cells for output in cell.get("outputs", []) if "image/png" in output.get("data", {})]
    assert len(images) >= 2  # the speed / quality plot and the frame grid

    # a second run shows the finished folder without sampling anything
    (run / "variants" / "teacher" / "videos.safetensors").rename(run / "moved.safetensors")
    with pytest.raises(papermill.PapermillExecutionError, match="No such file"):
        _run(tmp_path, monkeypatch, python3_kernel, {"run_dir": str(run)})
    (run / "moved.safetensors").rename(run / "variants" / "teacher" / "videos.safetensors")
    _run(tmp_path, monkeypatch, python3_kernel, {"run_dir": str(run)})


def test_notebook_04_missing_run_folder_message(tmp_path, monkeypatch, python3_kernel):
    with pytest.raises(papermill.PapermillExecutionError, match="no metrics.json in .*finished blade evaluate run"):
        _run(tmp_path, monkeypatch, python3_kernel, {"run_dir": str(tmp_path / "absent")})
