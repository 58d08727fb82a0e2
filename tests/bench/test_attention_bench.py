"""`blade bench attention` on a tiny grid: report structure and derived numbers."""

import json

import pytest

from blade.bench.attention import AttentionBenchSettings, format_table, run_attention_benchmark
from blade.cli import main


def test_cli_writes_json_table_and_figure(tmp_path):
    exit_code = main(
        [
            "bench", "attention", "--lengths", "300", "--heads", "2", "--head-dims", "32",
            "--sparsities", "0.5", "--dtypes", "float32", "--backends", "torch", "--repeats", "1",
            "--out-dir", str(tmp_path),
        ]
    )
    assert exit_code == 0
    report = json.loads((tmp_path / "attention.json").read_text())
    assert report["machine"]["logical_cpus"] >= 1
    assert (tmp_path / "attention.png").stat().st_size > 0
    assert "| float32 | 32 | 300 | forward | 0.50 | torch |" in (tmp_path / "attention.md").read_text()
    modes = {(row["backend"], row["mode"]) for row in report["results"]}
    assert modes == {("dense", "forward"), ("dense", "forward_backward"), ("torch", "forward"), ("torch", "forward_backward")}


def test_speedups_are_dense_over_backend_medians():
    settings = AttentionBenchSettings(
        lengths=(256,), heads=2, head_dims=(32,), sparsities=(0.75,), dtypes=("float32",),
        modes=("forward",), backends=("torch",), repeats=3,
    )
    report = run_attention_benchmark(settings, progress=False)
    dense, sparse = report["results"]
    assert dense["backend"] == "dense"
    assert sparse["backend"] == "torch"
    assert len(sparse["times_s"]) == 3
    assert sparse["median_s"] == sorted(sparse["times_s"])[1]
    assert sparse["speedup_vs_dense"] == pytest.approx(dense["median_s"] / sparse["median_s"])
    # 256 tokens make 2 blocks per row; keeping round(0.25 * 2) -> at least 1 of 2 gives kept 0.5
    assert sparse["kept_fraction"] == pytest.approx(0.5)
    assert sparse["ideal_speedup"] == pytest.approx(2.0)
    assert "| float32 | 32 | 256 | forward | 0.75 | torch |" in format_table(report)


def test_unsupported_backend_is_recorded_as_skipped():
    settings = AttentionBenchSettings(
        lengths=(256,), heads=1, head_dims=(32,), sparsities=(0.5,), dtypes=("float32",),
        modes=("forward_backward",), backends=("bsa",), repeats=1,
    )
    report = run_attention_benchmark(settings, progress=False)
    skipped = [row for row in report["results"] if row["backend"] == "bsa"]
    assert len(skipped) == 1
    assert "not available on cpu" in skipped[0]["skipped"]


def test_invalid_settings_are_rejected():
    with pytest.raises(ValueError, match="dtype must be one of .* got 'float8'"):
        run_attention_benchmark(AttentionBenchSettings(dtypes=("float8",)), progress=False)


def test_cli_rejects_invalid_sparsity_without_traceback(tmp_path, caplog):
    exit_code = main(["bench", "attention", "--sparsities", "1.5", "--out-dir", str(tmp_path)])
    assert exit_code == 2
    assert "sparsity must be in [0, 1), got 1.5" in caplog.text
    assert not (tmp_path / "attention.json").exists()


def test_cli_rejects_unknown_backend(tmp_path, caplog):
    exit_code = main(["bench", "attention", "--backends", "torhc", "--quick", "--out-dir", str(tmp_path)])
    assert exit_code == 2
    assert "backend must be one of" in caplog.text
    assert "'torhc'" in caplog.text
    assert not (tmp_path / "attention.json").exists()


def test_cli_prints_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("blade 0.")


@pytest.mark.skipif("flex" not in __import__("blade").available_backends("cpu"), reason="FlexAttention cannot compile here")
def test_flex_timed_in_own_pass():
    settings = AttentionBenchSettings(
        lengths=(256,), heads=1, head_dims=(32,), sparsities=(0.5,), dtypes=("float32",),
        modes=("forward",), backends=("flex", "torch"), repeats=1,
    )
    report = run_attention_benchmark(settings, progress=False)
    assert [row["backend"] for row in report["results"]] == ["dense", "torch", "dense", "flex"]
    first_dense, torch_row, second_dense, flex_row = report["results"]
    assert torch_row["dense_median_s"] == first_dense["median_s"]
    assert flex_row["dense_median_s"] == second_dense["median_s"]
    assert flex_row["speedup_vs_dense"] == pytest.approx(second_dense["median_s"] / flex_row["median_s"])
