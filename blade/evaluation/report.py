"""Metrics of an evaluation run from its saved videos and timings; the markdown table, figures and demo summary."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from blade.evaluation.config import finite_or_none
from blade.io import atomic_write, atomic_write_json, atomic_write_text

logger = logging.getLogger(__name__)


def speedup(reference_seconds: float, seconds: float) -> float:
    """Return reference_seconds / seconds: how many times faster a variant is than the reference."""
    if not seconds > 0:
        raise ValueError(f"seconds must be > 0, got {seconds!r}")
    return reference_seconds / seconds


def _toybench(videos: np.ndarray, prompts: list[str]) -> dict | None:
    from blade.toy import parse_prompt, score_videos

    try:
        parsed = [parse_prompt(prompt) for prompt in prompts]
    except ValueError as error:
        logger.warning("ToyBench skipped: a prompt is not a valid toy prompt (%s)", error)
        return None
    unit = videos.astype(np.float32) / 127.5 - 1.0  # ToyBench reads [-1, 1]
    return score_videos(unit, parsed)["aggregate"]


def compute_metrics(config, run_dir, prompts: list[str], results: dict[str, dict], *, toy: bool) -> dict:
    """Measure every variant against the reference variant.

    Args:
        config: the run's `EvalConfig`.
        run_dir: the run folder holding variants/<name>/videos.safetensors.
        prompts: the prompt texts.
        results: variant name -> its result.json content (timings, sparsity).
        toy: the model is the toy world; adds ToyBench scores.

    Returns:
        {"reference", "prompts", "toybench": bool, "variants": [{"name", "sampler", "steps",
        "guidance", "lora", "attention", "seconds_per_video", "speedup", "attention_sparsity",
        "recorded_calls", "psnr", "ssim", "toybench", "reused"}, ...], "config"}. PSNR and SSIM are
        means over prompts against the reference's video of the same prompt and seed (None for the
        reference itself, and PSNR None for identical videos).
    """
    from blade.evaluation import psnr, ssim
    from blade.evaluation.run import load_videos

    reference_videos = load_videos(run_dir, config.reference)
    reference_seconds = results[config.reference]["seconds_per_video"]
    entries = []
    for variant in config.variants:
        result = results[variant.name]
        videos = load_videos(run_dir, variant.name)
        entry = {
            "name": variant.name,
            "sampler": variant.sampler,
            "steps": variant.steps,
            "guidance": variant.guidance,
            "lora": variant.lora,
            "attention": variant.attention,
            "static_sparsity": result.get("static_sparsity"),
            "seconds_per_video": result["seconds_per_video"],
            "speedup": speedup(reference_seconds, result["seconds_per_video"]),
            "attention_sparsity": result["attention_sparsity"],
            "recorded_calls": result["recorded_calls"],
            "psnr": None,
            "ssim": None,
            "toybench": _toybench(videos, prompts) if toy else None,
            "reused": result.get("reused", False),
        }
        if variant.name != config.reference:
            entry["psnr"] = finite_or_none(np.mean([psnr(ref, test) for ref, test in zip(reference_videos, videos)]))
            window = min(11, videos.shape[2], videos.shape[3])
            window -= 1 - window % 2  # SSIM needs an odd window that fits the frame
            entry["ssim"] = float(np.mean([ssim(ref, test, window_size=window)
                                           for ref, test in zip(reference_videos, videos)]))
        entries.append(entry)
    return {"reference": config.reference, "prompts": prompts, "toybench": toy, "variants": entries,
            "config": config.to_dict()}


def _format(value, pattern: str) -> str:
    return "–" if value is None else format(value, pattern)


def metrics_table(metrics: dict) -> str:
    """Return a markdown table of a run's metrics, one row per variant."""
    toy = metrics.get("toybench")
    header = ["variant", "sampler", "steps", "CFG", "attention", "s / video", "speedup", "sparsity",
              "PSNR (dB)", "SSIM"]
    if toy:
        header += ["ToyBench attr.", "colour", "shape", "motion"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for entry in metrics["variants"]:
        row = [entry["name"], entry["sampler"], str(entry["steps"]), f"{entry['guidance']:g}", entry["attention"],
               f"{entry['seconds_per_video']:.3f}", f"{entry['speedup']:.2f}x", f"{entry['attention_sparsity']:.3f}",
               _format(entry["psnr"], ".2f"), _format(entry["ssim"], ".3f")]
        if toy:
            bench = entry["toybench"] or {}
            row += [_format(bench.get(name), ".3f") for name in
                    ("attribute_accuracy", "colour_accuracy", "shape_accuracy", "motion_accuracy")]
        lines.append("| " + " | ".join(row) + " |")
    note = (f"\nSpeedup and PSNR / SSIM are against `{metrics['reference']}`, measured in this run on "
            f"{len(metrics['prompts'])} prompts; sparsity is measured from the patched attention calls.\n")
    return "\n".join(lines) + "\n" + note


def _save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    atomic_write(path, lambda temporary: fig.savefig(temporary, dpi=120, format="png"), suffix=".png")
    plt.close(fig)


def write_report(run_dir, metrics: dict, *, max_columns: int = 6) -> dict[str, Path]:
    """Write metrics.md, speed_quality.png, preview.png and grid.gif into a run folder.

    Returns:
        Name -> path of each written file.
    """
    from blade.evaluation.run import load_videos
    from blade.export import write_gif
    from blade.plotting.evaluation import frame_grid, plot_frame_grid, plot_speed_quality

    run_dir = Path(run_dir)
    paths = {"metrics.md": atomic_write_text(run_dir / "metrics.md", metrics_table(metrics))}
    _save_figure(plot_speed_quality(metrics), run_dir / "speed_quality.png")
    videos = {entry["name"]: load_videos(run_dir, entry["name"]) for entry in metrics["variants"]}
    _save_figure(plot_frame_grid(videos, metrics["prompts"], max_columns), run_dir / "preview.png")
    num_frames = next(iter(videos.values())).shape[1]
    animation = np.stack([frame_grid(videos, index, max_columns) for index in range(num_frames)])  # [T, H', W', 3]
    paths["grid.gif"] = write_gif(animation, run_dir / "grid.gif", fps=8.0, max_side=1024)
    paths["speed_quality.png"] = run_dir / "speed_quality.png"
    paths["preview.png"] = run_dir / "preview.png"
    return paths


def demo_summary(metrics: dict, wall_seconds: float, *, student: str = "student_asa") -> dict:
    """Compute the headline numbers of `make demo` from an evaluation's metrics.

    Args:
        metrics: metrics.json of the run.
        wall_seconds: wall time of the whole demo.
        student: the variant the headline numbers describe.

    Returns:
        {"speedup_vs_teacher": student time over reference time inverted, "toybench_ratio": student's
        ToyBench attribute accuracy over the reference's (None without ToyBench or with a reference
        accuracy of 0), "attention_sparsity": the student's measured sparsity, "wall_minutes",
        "student", "reference", plus the student's "psnr" and "ssim"}.
    """
    by_name = {entry["name"]: entry for entry in metrics["variants"]}
    if student not in by_name:
        raise ValueError(f"the metrics hold no variant {student!r}; variants are {sorted(by_name)}. "
                         "Give the run a student LoRA (lora: PATH) or name another variant")
    entry, reference = by_name[student], by_name[metrics["reference"]]
    ratio = None
    if entry.get("toybench") and reference.get("toybench"):
        teacher_accuracy = reference["toybench"]["attribute_accuracy"]
        if teacher_accuracy > 0:
            ratio = entry["toybench"]["attribute_accuracy"] / teacher_accuracy
    if not math.isfinite(wall_seconds) or wall_seconds < 0:
        raise ValueError(f"wall_seconds must be a finite number >= 0, got {wall_seconds!r}")
    return {
        "student": student,
        "reference": metrics["reference"],
        "speedup_vs_teacher": speedup(reference["seconds_per_video"], entry["seconds_per_video"]),
        "toybench_ratio": ratio,
        "attention_sparsity": entry["attention_sparsity"],
        "psnr": entry["psnr"],
        "ssim": entry["ssim"],
        "wall_minutes": wall_seconds / 60.0,
    }


def write_demo_summary(path, metrics: dict, wall_seconds: float, **kwargs) -> dict:
    """Compute `demo_summary` and write it to `path` as JSON (atomic); return it."""
    summary = demo_summary(metrics, wall_seconds, **kwargs)
    atomic_write_json(path, summary)
    return summary
