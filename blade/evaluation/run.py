"""`blade evaluate`: run every variant on the same prompts and seeds, then measure and report them.

Layout of a run folder `<out_dir>/<run_id>/`:

    config.json                  the resolved settings
    metrics.json, metrics.md     per variant: time, speedup, sparsity, PSNR / SSIM, ToyBench
    speed_quality.png            speedup against quality
    preview.png, grid.gif        middle frames and an animated grid, one row per variant
    variants/<name>/result.json  timings and sparsity of one variant, with the key of its settings
    variants/<name>/videos.safetensors   uint8 [N, T, H, W, 3], the frames the metrics read
    videos/<name>/<index>_<slug>.mp4 / .gif

A variant whose result.json contains the same key (a hash of everything its videos depend on) is
reused instead of sampled again, so an interrupted run resumes at the first unfinished variant.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from blade.evaluation.config import EvalConfig, VariantSpec
from blade.evaluation.sampling import (RunContext, VariantRun, generations_per_prompt, load_variant, resolve_size,
                                      run_variant, toy_config_of)
from blade.io import atomic_save_safetensors, atomic_write_json

logger = logging.getLogger(__name__)

_RESULT = "result.json"
_VIDEOS = "videos.safetensors"


def resolve_prompts(config: EvalConfig) -> list[str]:
    """Return the prompt texts of a config (a list, a prompt file or a toy prompt set), cut to max_prompts.

    Raises:
        FileNotFoundError: a prompt file that does not exist.
    """
    prompts = config.prompts
    if isinstance(prompts, str) and prompts.startswith("toy:"):
        from blade.toy import demo_prompts, heldout_prompts, train_prompts
        from blade.toy.evaluate import default_eval_prompts

        sets = {"toy:heldin": lambda: default_eval_prompts()["heldin"], "toy:heldout": heldout_prompts,
                "toy:eval": lambda: [p for split in default_eval_prompts().values() for p in split],
                "toy:train": train_prompts, "toy:demo": demo_prompts}
        texts = [prompt.text for prompt in sets[prompts]()]
    elif isinstance(prompts, str):
        from blade.prompts.prompt_file import read_prompt_file

        texts = read_prompt_file(prompts).prompts
    else:
        texts = list(prompts)
    return texts[: config.max_prompts] if config.max_prompts else texts


def _check_inputs(config: EvalConfig) -> None:
    from blade.models import pipeline_family

    pipeline_family(config.model)  # FileNotFoundError naming the folder when it is not a pipeline
    paths = [(name, getattr(config, name)) for name in ("lora", "dense_lora")]
    paths += [(f"lora of variant {variant.name!r}", config.lora_path(variant)) for variant in config.variants
              if variant.lora not in (False, True, "dense")]
    for name, path in paths:
        if path is None:
            continue
        path = Path(path)
        file = path / "pytorch_lora_weights.safetensors" if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(
                f"{name} {str(path)!r} is not a LoRA file: expected pytorch_lora_weights.safetensors from "
                "blade distill (its output_dir), or set lora: null to evaluate the teacher alone"
            )


def variant_key(config: EvalConfig, variant: VariantSpec, prompts: list[str], sparsity, fingerprints: dict) -> str:
    """Hex SHA-256 of everything a variant's videos and timings depend on.

    Args:
        config: the run's settings (size, seed, repeats, device, dtype, text length are used).
        variant: the variant.
        prompts: the prompt texts.
        sparsity: the resolved static-mask sparsity, or None.
        fingerprints: "model", "lora", "dense_lora" and the LoRA path of each variant that names one ->
            `stat_fingerprint` of each path (or None).
    """
    import dataclasses

    blade_config = config.blade_for(variant)
    settings = {
        "variant": dataclasses.asdict(variant) | {"blade": None if blade_config is None else blade_config.to_dict()},
        "sparsity": sparsity,
        "prompts": prompts,
        "fingerprints": fingerprints,
        **{name: getattr(config, name) for name in
           ("model", "seed", "repeats", "height", "width", "frames", "max_sequence_length", "device", "dtype")},
        "torch": torch.__version__,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def _load_finished(folder: Path, key: str) -> dict | None:
    result_file, video_file = folder / _RESULT, folder / _VIDEOS
    if not (result_file.is_file() and video_file.is_file()):
        return None
    try:
        result = json.loads(result_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        logger.warning("ignoring unreadable %s; sampling the variant again", result_file)
        return None
    return result if result.get("key") == key else None


def load_videos(run_dir, name: str) -> np.ndarray:
    """Return the uint8 `[N, T, H, W, 3]` videos of variant `name` in a run folder."""
    from safetensors.torch import load_file

    return load_file(str(Path(run_dir) / "variants" / name / _VIDEOS))["videos"].numpy()


def _save_variant(folder: Path, run: VariantRun, key: str, variant: VariantSpec, sparsity, prompts, out_videos: Path,
                  fps: float, gif_max_side) -> dict:
    from blade.export import export_video
    from blade.generate.run import _slug

    files = []
    for index, (prompt, video) in enumerate(zip(prompts, run.videos)):
        paths = export_video(video, out_videos / f"{index:04d}_{_slug(prompt)}", fps=fps, gif_max_side=gif_max_side)
        files.append({"mp4": str(paths["mp4"].relative_to(folder.parents[1])),
                      "gif": str(paths["gif"].relative_to(folder.parents[1]))})
    atomic_save_safetensors(folder / _VIDEOS, {"videos": torch.from_numpy(run.videos)})
    result = {
        "key": key,
        "name": variant.name,
        "seconds": run.seconds,
        "seconds_per_video": run.seconds_per_video,
        "attention_sparsity": run.attention_sparsity,
        "recorded_calls": run.recorded_calls,
        "static_sparsity": sparsity,
        "details": run.details,
        "files": files,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    atomic_write_json(folder / _RESULT, result)
    return result


def evaluate(config: EvalConfig, *, progress: bool = True) -> dict:
    """Run, measure and report every variant of `config`; see the module docstring for the files.

    Args:
        config: the settings.
        progress: show a tqdm bar over all generations.

    Returns:
        The metrics written to metrics.json (see `blade.evaluation.report.compute_metrics`), plus
        "run_dir".

    Raises:
        FileNotFoundError: a missing model folder, LoRA or prompt file (before any model work).
    """
    from tqdm.auto import tqdm

    from blade.evaluation.report import compute_metrics, write_report
    from blade.generate.prepare import stat_fingerprint
    from blade.generate.run import default_fps

    _check_inputs(config)
    prompts = resolve_prompts(config)
    run_id = config.run_id or time.strftime("%Y%m%d-%H%M%S")
    run_dir = Path(config.out_dir) / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / "config.json", config.to_dict() | {"run_id": run_id, "resolved_prompts": prompts})
    fingerprints = {name: None if getattr(config, name) is None else stat_fingerprint(getattr(config, name))
                    for name in ("model", "lora", "dense_lora")}
    for variant in config.variants:
        if variant.lora not in (False, True, "dense"):
            fingerprints[variant.lora] = stat_fingerprint(variant.lora)
    toy_config = toy_config_of(config.model)
    context = None
    results: dict[str, dict] = {}
    per_prompt = {variant.name: generations_per_prompt(variant.attention != "dense", config.repeats)
                  for variant in config.variants}
    bar = tqdm(total=len(prompts) * sum(per_prompt.values()), unit="video", desc="evaluate", disable=not progress)
    try:
        for variant in config.variants:
            sparsity = variant.sparsity
            if isinstance(sparsity, str):
                sparsity = results[sparsity]["attention_sparsity"]
            key = variant_key(config, variant, prompts, sparsity, fingerprints)
            folder = run_dir / "variants" / variant.name
            finished = _load_finished(folder, key)
            if finished is not None:
                logger.info("%s: reusing the finished variant in %s (same settings)", variant.name, folder)
                results[variant.name] = finished | {"reused": True}
                bar.update(len(prompts) * per_prompt[variant.name])
                continue
            bar.set_postfix_str(variant.name)
            pipe, details = load_variant(config, variant, sparsity)
            if context is None:
                height, width, frames, length = resolve_size(pipe, config, toy_config)
                context = RunContext(prompts, toy_config, height, width, frames, length)
            run = run_variant(pipe, variant, context, seed=config.seed, repeats=config.repeats, progress=bar)
            run.details = details | {"video_size": [context.height, context.width, context.frames],
                                     "max_sequence_length": context.max_sequence_length}
            fps = config.fps or default_fps(pipe)
            del pipe
            if torch.cuda.is_available():
                torch.cuda.empty_cache()  # free the variant's weights before the next one loads
            results[variant.name] = _save_variant(folder, run, key, variant, sparsity, prompts,
                                                  run_dir / "videos" / variant.name, fps, config.gif_max_side)
            results[variant.name]["reused"] = False
            logger.info("%s: %.3f s per video, attention sparsity %.3f", variant.name,
                        run.seconds_per_video, run.attention_sparsity)
    finally:
        bar.close()
    metrics = compute_metrics(config, run_dir, prompts, results, toy=toy_config is not None)
    metrics["run_id"] = run_id
    atomic_write_json(run_dir / "metrics.json", metrics)
    write_report(run_dir, metrics)
    return metrics | {"run_dir": str(run_dir)}

