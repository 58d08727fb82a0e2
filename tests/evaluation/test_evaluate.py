"""`blade evaluate` on a tiny toy teacher and LoRA: metrics against independent derivations, resume, bad input."""

import json
import math

import numpy as np
import pytest
import torch
import yaml

from blade.evaluation import EvalConfig, demo_summary, evaluate, load_videos
from blade.evaluation.config import median

# blocks of 8 over the 3 x 4 x 8 = 96-token grid: 12 key blocks; top ratio 0.3 keeps at most
# floor(12 * 0.3) = 3 of them, pooled groups of 4 cost 1/4 of dense
BLADE = {"preset": "wan", "block_size": 8, "samples_per_block": 4, "max_ratio": 0.3, "pool_group": 4, "backend": "torch"}
NUM_KEY_BLOCKS = 12


def _settings(toy_model, toy_lora, out_dir, **overrides):
    settings = dict(
        model=str(toy_model), lora=str(toy_lora), dense_lora=str(toy_lora.parent), blade=BLADE,
        prompts="toy:heldout", max_prompts=2, seed=3, teacher_steps=3, student_steps=2, repeats=2,
        training_free=["sliding_tile"], out_dir=str(out_dir), run_id="tiny",
    )
    settings.update(overrides)
    return settings


@pytest.fixture(scope="module")
def tiny_run(toy_model, toy_lora, tmp_path_factory):
    """One evaluation through the CLI: teacher, few-step teacher, both students, sliding tile at ASA's sparsity."""
    from blade.cli import main

    out = tmp_path_factory.mktemp("eval")
    config_file = out / "eval.yaml"
    # The file leaves the training-free peers out; --set puts sliding tile back (checked by the tests below).
    config_file.write_text(yaml.safe_dump(_settings(toy_model, toy_lora, out / "runs", training_free=[])))
    torch.set_num_threads(1)
    assert main(["evaluate", "--config", str(config_file), "--set", "training_free=[sliding_tile]", "--no-progress"]) == 0
    run_dir = out / "runs" / "tiny"
    return config_file, run_dir, json.loads((run_dir / "metrics.json").read_text())


def test_metrics_match_recorded_data(tiny_run):
    _, run_dir, metrics = tiny_run
    by_name = {entry["name"]: entry for entry in metrics["variants"]}
    assert list(by_name) == ["teacher", "teacher_8step", "student_dense", "student_asa", "free_sliding_tile"]
    results = {name: json.loads((run_dir / "variants" / name / "result.json").read_text()) for name in by_name}

    # two repeats per video: the first (recorded) is left out, so one timing per prompt remains
    assert all(len(result["seconds"]) == 2 and all(len(s) == 1 for s in result["seconds"]) for result in results.values())
    teacher_seconds = median([s for per_video in results["teacher"]["seconds"] for s in per_video])
    for name, entry in by_name.items():
        seconds = median([s for per_video in results[name]["seconds"] for s in per_video])
        assert entry["seconds_per_video"] == seconds
        assert entry["speedup"] == pytest.approx(teacher_seconds / seconds, rel=1e-12)

    # dense variants record nothing; a patched one records prompts x steps x layers (no CFG: one forward per step)
    assert by_name["teacher"]["recorded_calls"] == by_name["student_dense"]["recorded_calls"] == 0
    assert by_name["teacher"]["attention_sparsity"] == 0.0
    assert by_name["student_asa"]["recorded_calls"] == 2 * 2 * 1
    asa = by_name["student_asa"]["attention_sparsity"]
    assert 1 - 3 / NUM_KEY_BLOCKS - 1 / 4 - 1e-6 <= asa <= 1 - 1 / NUM_KEY_BLOCKS - 1 / 4 + 1e-6
    # the static mask ran at ASA's measured sparsity and keeps floor(12 (1 - s)) blocks per row
    static = by_name["free_sliding_tile"]
    assert static["static_sparsity"] == asa
    assert static["attention_sparsity"] == pytest.approx(1 - math.floor(NUM_KEY_BLOCKS * (1 - asa)) / NUM_KEY_BLOCKS)

    # PSNR from the saved frames, derived here with numpy
    teacher_videos = load_videos(run_dir, "teacher").astype(np.float64) / 255
    for name in ("teacher_8step", "student_asa"):
        videos = load_videos(run_dir, name).astype(np.float64) / 255
        expected = np.mean([10 * np.log10(1 / np.mean((a - b) ** 2)) for a, b in zip(teacher_videos, videos)])
        assert by_name[name]["psnr"] == pytest.approx(expected, rel=1e-9)
        assert 0 < by_name[name]["ssim"] < 1
    assert by_name["teacher"]["psnr"] is None

    # ToyBench: every variant scored on both prompts
    assert metrics["toybench"] is True
    assert all(entry["toybench"]["num_videos"] == 2 for entry in by_name.values())


def test_run_folder_holds_table_figures_and_videos(tiny_run):
    _, run_dir, metrics = tiny_run
    table = (run_dir / "metrics.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + len(metrics["variants"])  # header and one row per variant
    for name in ("speed_quality.png", "preview.png", "grid.gif", "config.json"):
        assert (run_dir / name).stat().st_size > 0, name
    videos = load_videos(run_dir, "student_asa")
    assert videos.dtype == np.uint8
    assert videos.shape == (2, 5, 16, 32, 3)
    result = json.loads((run_dir / "variants" / "student_asa" / "result.json").read_text())
    for files in result["files"]:
        assert (run_dir / files["mp4"]).stat().st_size > 0
        assert (run_dir / files["gif"]).stat().st_size > 0
    # the same noise seed per prompt, but the teacher's CFG and steps change the video
    assert not np.array_equal(load_videos(run_dir, "teacher"), load_videos(run_dir, "teacher_8step"))


def test_resume_reuses_finished_variants_and_reruns_changed_ones(tiny_run, caplog):
    config_file, run_dir, _ = tiny_run
    settings = yaml.safe_load(config_file.read_text()) | {"training_free": ["sliding_tile"]}  # as the fixture's --set
    before = {path.parent.name: path.read_text() for path in run_dir.glob("variants/*/result.json")}

    # a different static sparsity changes only that variant's key
    variants = EvalConfig.from_dict(settings).to_dict()["variants"]
    variants[-1]["sparsity"] = 0.25
    metrics = evaluate(EvalConfig.from_dict(settings | {"variants": variants}), progress=False)
    reused = {entry["name"]: entry["reused"] for entry in metrics["variants"]}
    assert reused == {"teacher": True, "teacher_8step": True, "student_dense": True, "student_asa": True,
                      "free_sliding_tile": False}
    after = {path.parent.name: path.read_text() for path in run_dir.glob("variants/*/result.json")}
    assert all(after[name] == before[name] for name in reused if reused[name])
    static = metrics["variants"][-1]
    assert static["attention_sparsity"] == pytest.approx(1 - math.floor(NUM_KEY_BLOCKS * 0.75) / NUM_KEY_BLOCKS)


def test_demo_summary_from_run_metrics(tiny_run):
    _, run_dir, metrics = tiny_run
    by_name = {entry["name"]: entry for entry in metrics["variants"]}
    summary = demo_summary(metrics, wall_seconds=90.0)
    assert summary["speedup_vs_teacher"] == pytest.approx(
        by_name["teacher"]["seconds_per_video"] / by_name["student_asa"]["seconds_per_video"], rel=1e-12)
    assert summary["attention_sparsity"] == by_name["student_asa"]["attention_sparsity"]
    assert summary["wall_minutes"] == 1.5


def test_demo_summary_ratios_by_hand():
    toy = {"attribute_accuracy": 0.8}
    metrics = {"reference": "teacher", "variants": [
        {"name": "teacher", "seconds_per_video": 12.0, "attention_sparsity": 0.0, "psnr": None, "ssim": None,
         "toybench": toy},
        {"name": "student_asa", "seconds_per_video": 0.75, "attention_sparsity": 0.8, "psnr": 20.0, "ssim": 0.7,
         "toybench": {"attribute_accuracy": 0.76}},
    ]}
    summary = demo_summary(metrics, 600.0)
    assert summary["speedup_vs_teacher"] == 16.0
    assert summary["toybench_ratio"] == pytest.approx(0.95)
    assert summary["wall_minutes"] == 10.0
    metrics["variants"][0]["toybench"] = None  # not the toy world: no ratio
    assert demo_summary(metrics, 1.0)["toybench_ratio"] is None
    with pytest.raises(ValueError, match="no variant 'student_x'.*Give the run a student LoRA"):
        demo_summary(metrics, 1.0, student="student_x")


def test_demo_summary_cli_writes_json(tiny_run, tmp_path):
    import time

    from blade.cli import main

    _, run_dir, _ = tiny_run
    out = tmp_path / "summary.json"
    assert main(["demo-summary", "--metrics", str(run_dir / "metrics.json"), "--out", str(out),
                 "--started", str(time.time() - 120)]) == 0
    summary = json.loads(out.read_text())
    assert {"speedup_vs_teacher", "toybench_ratio", "attention_sparsity", "wall_minutes"} <= set(summary)
    assert 2.0 <= summary["wall_minutes"] < 3.0


@pytest.mark.parametrize("overrides, message", [
    ({"colour": 1}, r"unknown evaluation settings \['colour'\]"),
    ({"repeats": 0}, "repeats must be an int >= 1, got 0"),
    ({"prompts": "toy:everything"}, "not a valid toy prompt set; use one of"),
    ({"reference": "oracle"}, "reference 'oracle' does not name a variant"),
    ({"training_free": ["flash"]}, r"training_free entries must be among .*got \['flash'\]"),
    ({"variants": [{"name": "teacher", "attention": "sparse"}]}, "attention must be one of"),
    ({"variants": [{"name": "teacher", "sampler": "student", "guidance": 5.0}]}, "runs without guidance"),
    ({"variants": [{"name": "teacher", "attention": "radial"}]}, "needs sparsity"),
    ({"variants": [{"name": "teacher", "attention": "radial", "sparsity": "teacher"}]}, "is not an earlier variant"),
    ({"lora": None, "variants": [{"name": "teacher", "lora": True}]}, "no lora file is given; set lora: PATH"),
    ({"variants": [{"name": "teacher"}, {"name": "teacher"}]}, "must be unique"),
])
def test_bad_settings_name_the_setting(toy_model, toy_lora, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        EvalConfig.from_dict(_settings(toy_model, toy_lora, tmp_path) | overrides)


def test_missing_inputs_fail_before_model_work(toy_model, toy_lora, tmp_path):
    settings = _settings(toy_model, toy_lora, tmp_path)
    with pytest.raises(FileNotFoundError, match="absent-model"):
        evaluate(EvalConfig.from_dict(settings | {"model": str(tmp_path / "absent-model")}), progress=False)
    with pytest.raises(FileNotFoundError, match="is not a LoRA file.*blade distill"):
        evaluate(EvalConfig.from_dict(settings | {"lora": str(tmp_path / "no-lora")}), progress=False)
    with pytest.raises(FileNotFoundError, match="prompt file .*absent.txt"):
        evaluate(EvalConfig.from_dict(settings | {"prompts": str(tmp_path / "absent.txt")}), progress=False)
    with pytest.raises(FileNotFoundError, match="no evaluation config at"):
        EvalConfig.from_file(tmp_path / "absent.yaml")
    assert not (tmp_path / "tiny").exists()


def test_cli_bad_config_exit_code(tmp_path, caplog):
    from blade.cli import main

    config_file = tmp_path / "eval.yaml"
    config_file.write_text(yaml.safe_dump({"model": str(tmp_path / "absent"), "repeats": -1}))
    assert main(["evaluate", "--config", str(config_file)]) == 2
    assert "repeats must be an int >= 1" in caplog.text


def test_set_overrides_are_read_as_yaml():
    from blade.cli.settings import parse_settings

    assert parse_settings(["max_prompts=4", "prompts=toy:heldin", "training_free=[]", "dense_lora=null"]) == {
        "max_prompts": 4, "prompts": "toy:heldin", "training_free": [], "dense_lora": None}
    with pytest.raises(ValueError, match="invalid --set item 'max_prompts': expected KEY=VALUE"):
        parse_settings(["max_prompts"])
    with pytest.raises(ValueError, match="training_free: '\\[asa' is not valid YAML"):
        parse_settings(["training_free=[asa"])


def test_cli_unknown_set_key_exit_code(tmp_path, caplog):
    from blade.cli import main

    config_file = tmp_path / "eval.yaml"
    config_file.write_text(yaml.safe_dump({"model": str(tmp_path / "absent")}))
    assert main(["evaluate", "--config", str(config_file), "--set", "max_promtps=4"]) == 2
    assert "unknown evaluation settings ['max_promtps']" in caplog.text


def test_single_repeat_untimed_recording(toy_model, toy_lora, tmp_path):
    """repeats = 1: a patched variant records in an extra untimed generation, then times one clean one."""
    from blade.evaluation.sampling import generations_per_prompt

    assert [generations_per_prompt(True, 1), generations_per_prompt(False, 1), generations_per_prompt(True, 3)] == [2, 1, 3]
    variants = [
        {"name": "teacher_8step", "sampler": "pipeline", "steps": 2, "guidance": 1.0},
        # a LoRA named by path in the variant, with no run-wide lora
        {"name": "student_asa", "lora": str(toy_lora), "attention": "asa", "sampler": "student", "steps": 2, "eta": 0.9},
    ]
    settings = _settings(toy_model, toy_lora, tmp_path, repeats=1, max_prompts=1, variants=variants, dense_lora=None,
                         lora=None, reference="teacher_8step")
    missing = settings | {"variants": [variants[0], variants[1] | {"lora": str(tmp_path / "absent")}]}
    with pytest.raises(FileNotFoundError, match="lora of variant 'student_asa' .*absent"):
        evaluate(EvalConfig.from_dict(missing), progress=False)
    torch.set_num_threads(1)
    metrics = evaluate(EvalConfig.from_dict(settings), progress=False)
    by_name = {entry["name"]: entry for entry in metrics["variants"]}
    for name in by_name:
        result = json.loads((tmp_path / "tiny" / "variants" / name / "result.json").read_text())
        assert [len(s) for s in result["seconds"]] == [1]
    # recorded once: 1 prompt x 2 steps x 1 layer, not again in the timed generation
    assert by_name["student_asa"]["recorded_calls"] == 2
    assert by_name["teacher_8step"]["recorded_calls"] == 0


@pytest.mark.parametrize("name", ["toy.yaml", "toy-students.yaml"])
def test_shipped_configs_parse(name):
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "configs" / "evaluate" / name
    config = EvalConfig.from_file(path)
    assert config.model == "data/models/toy-wan"
    assert config.reference in [variant.name for variant in config.variants]
