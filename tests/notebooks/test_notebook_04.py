"""Notebook 04 runs end to end through papermill on a tiny toy teacher and student LoRA."""

import json
from pathlib import Path

import pytest
import yaml

papermill = pytest.importorskip("papermill")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "04_evaluation.ipynb"


def _run(tmp_path, monkeypatch, kernel, parameters):
    # The kernel must import blade from this checkout, whatever an editable install points at.
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(parameters), encoding="utf-8")
    output = tmp_path / "executed.ipynb"
    # the same structured parameters `papermill -f params.yaml` reads
    papermill.execute_notebook(
        str(NOTEBOOK), str(output), parameters=yaml.safe_load(params_file.read_text(encoding="utf-8")),
        kernel_name=kernel, cwd=str(ROOT / "notebooks"), progress_bar=False,
    )
    return output


def test_notebook_04_runs_and_then_shows_the_finished_run(tmp_path, monkeypatch, python3_kernel, toy_model, toy_lora):
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
