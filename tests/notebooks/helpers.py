"""Run a notebook of this checkout through papermill with structured parameters, as `papermill -f` does."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def run_notebook(notebook: Path, tmp_path: Path, monkeypatch, kernel: str, parameters: dict) -> Path:
    """Execute `notebook` with `parameters` written to and read back from a YAML file; return the executed copy."""
    import papermill

    # The kernel must import blade from this checkout, whatever an editable install points at.
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(parameters), encoding="utf-8")
    output = tmp_path / "executed.ipynb"
    papermill.execute_notebook(
        str(notebook), str(output), parameters=yaml.safe_load(params_file.read_text(encoding="utf-8")),
        kernel_name=kernel, cwd=str(ROOT / "notebooks"), progress_bar=False,
    )
    return output
