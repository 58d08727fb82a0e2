"""Notebook 03 runs end to end through papermill on the tiny Wan teacher."""

import json
from pathlib import Path

import pytest

from tests.distill.conftest import tiny_config

papermill = pytest.importorskip("papermill")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "03_distillation.ipynb"


def test_notebook_03_on_tiny_wan(wan_embeddings, tmp_path, monkeypatch, python3_kernel):
    tiny = tiny_config(wan_embeddings, tmp_path).to_dict()
    overrides = {key: tiny[key] for key in (
        "latent_shape", "num_steps", "lora_rank", "lora_alpha", "max_train_steps", "batch_size", "mixed_precision",
        "gradient_checkpointing", "checkpoint_every", "keep_checkpoints", "log_every", "warmup_steps", "blade",
    )}
    out = tmp_path / "out"
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    executed = tmp_path / "executed.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOK), str(executed), kernel_name=python3_kernel, cwd=str(ROOT / "notebooks"), progress_bar=False,
        parameters={"model_path": "tiny-wan", "embeddings_dir": str(wan_embeddings), "out_dir": str(out),
                    "overrides": overrides, "teacher_steps": 3},
    )

    summary = json.loads((out / "notebook_03_summary.json").read_text())
    assert summary["steps"] == 4
    assert summary["checkpoints_sampled"] == 2  # steps 2 and 4, keep_checkpoints 2
    assert (out / "losses.png").stat().st_size > 0
    assert (out / "samples.png").stat().st_size > 0
    last_output = json.loads(executed.read_text())["cells"][-1]["outputs"][0]["text"]
    assert "OK: 4 logged learning rates match" in "".join(last_output)
