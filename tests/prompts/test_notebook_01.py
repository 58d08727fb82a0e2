import json
from pathlib import Path

import pytest
from tiny_text_encoders import build_pipeline_folder

import papermill

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "01_prompt_embeddings.ipynb"


def _run(tmp_path, monkeypatch, kernel, parameters):
    # The kernel must import blade from this checkout, whatever an editable install points at.
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    output = tmp_path / "executed.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOK), str(output), parameters=parameters, kernel_name=kernel,
        cwd=str(ROOT / "notebooks"), progress_bar=False,
    )
    return output


def test_notebook_01_on_tiny_pipeline(tmp_path, monkeypatch, python3_kernel):
    model = build_pipeline_folder(tmp_path, "wan", tokenizer_max_length=48)
    prompts = tmp_path / "prompts.txt"
    lines = ["a red circle moving left", "a blue square moving up", "", "a red circle moving left",
             "a green triangle moving down", "a cyan cross moving right", "a spinning top"]
    prompts.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out"

    executed = _run(tmp_path, monkeypatch, python3_kernel,
                    {"model_path": str(model), "prompts_file": str(prompts), "out_dir": str(out), "batch_size": 3})

    summary = json.loads((out / "notebook_01_summary.json").read_text())
    assert summary["unique_prompts_in_file"] == 5
    assert summary["stored_prompts"] == 5
    assert summary["max_length"] == 48
    assert (out / "token_lengths.png").stat().st_size > 0
    assert (out / "pca_by_colour.png").stat().st_size > 0
    last_output = json.loads(executed.read_text())["cells"][-1]["outputs"][0]["text"]
    assert "OK: 5 unique prompts stored once each" in "".join(last_output)


def test_notebook_01_missing_model_message(tmp_path, monkeypatch, python3_kernel):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle moving left\n", encoding="utf-8")
    with pytest.raises(papermill.PapermillExecutionError, match="no diffusers pipeline folder at .*make toy-teacher"):
        _run(tmp_path, monkeypatch, python3_kernel,
             {"model_path": str(tmp_path / "absent-model"), "prompts_file": str(prompts), "out_dir": str(tmp_path / "out")})
