"""Generate one video per prompt with a loaded pipeline; write MP4, GIF and a JSON of settings and timings."""

from __future__ import annotations

import inspect
import logging
import re
import time
from pathlib import Path

import numpy as np
import torch

from blade.export import export_video
from blade.generate.monitor import StepMonitor, check_finite_frames
from blade.generate.sizes import check_video_size
from blade.io import atomic_write_json

logger = logging.getLogger(__name__)

REPORT_NAME = "generation.json"


def prompt_seed(seed: int, index: int) -> int:
    """Derive the noise seed of prompt `index` from the run seed.

    The video of a prompt depends only on (seed, index), never on the other prompts of the run, so
    rerunning one prompt at the same index reproduces it. NumPy's SeedSequence mixes both numbers,
    so nearby pairs give unrelated seeds.

    Returns:
        An int in [0, 2**63).
    """
    for name, value in (("seed", seed), ("index", index)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    low, high = np.random.SeedSequence([seed, index]).generate_state(2, dtype=np.uint32)
    return (int(high) << 32 | int(low)) & (2**63 - 1)


def prompt_generator(seed: int, index: int) -> torch.Generator:
    """Return a CPU `torch.Generator` seeded with `prompt_seed(seed, index)`.

    The generator lives on the CPU on purpose: diffusers then draws the initial noise on the CPU and
    moves it, so the same seed gives the same noise on every device.
    """
    return torch.Generator(device="cpu").manual_seed(prompt_seed(seed, index))


def default_video_size(pipe) -> tuple[int, int, int]:
    """Return the (height, width, frames) a pipeline generates when none are given.

    These are the defaults of the pipeline's `__call__` (Wan: 480, 832, 81). Where those are None,
    as in CogVideoX, the transformer config's `sample_height`, `sample_width` (latent pixels) and
    `sample_frames` give them, as the CogVideoX pipeline does.
    """
    parameters = inspect.signature(pipe.__call__).parameters
    defaults = {name: parameters[name].default if name in parameters else None for name in ("height", "width", "num_frames")}
    config = pipe.transformer.config
    spatial = pipe.vae_scale_factor_spatial
    fallbacks = {
        "height": getattr(config, "sample_height", None) and config.sample_height * spatial,
        "width": getattr(config, "sample_width", None) and config.sample_width * spatial,
        "num_frames": getattr(config, "sample_frames", None),
    }
    sizes = []
    for name in ("height", "width", "num_frames"):
        value = defaults[name] if isinstance(defaults[name], int) else fallbacks[name]
        if value is None:
            raise ValueError(f"{type(pipe).__name__} has no default {name}; pass it explicitly")
        sizes.append(int(value))
    return tuple(sizes)


def default_fps(pipe) -> float:
    """Return the frame rate diffusers' own examples export a pipeline's videos at: 8 for CogVideoX, 16 otherwise (Wan)."""
    return 8.0 if type(pipe).__name__.startswith("CogVideoX") else 16.0


def _slug(prompt: str, limit: int = 40) -> str:
    words = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")
    return words[:limit].rstrip("-") or "prompt"


def _call_kwargs(pipe) -> dict:
    # CogVideoX's transformer takes at most max_text_seq_length text tokens, while the pipeline pads
    # every prompt to 226 by default; pass the transformer's own length.
    kwargs = {}
    text_length = getattr(pipe.transformer.config, "max_text_seq_length", None)
    if text_length and "max_sequence_length" in inspect.signature(pipe.__call__).parameters:
        kwargs["max_sequence_length"] = int(text_length)
    return kwargs


def check_arguments(prompts, *, steps, guidance, seed, fps, gif_max_side) -> list[str]:
    """Validate the arguments of `generate_videos` that need no pipeline; return the prompts as a list.

    Raises:
        ValueError: naming the first invalid argument.
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts or not all(isinstance(prompt, str) and prompt.strip() for prompt in prompts):
        raise ValueError(f"prompts must be a non-empty list of non-blank strings, got {prompts!r:.200}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if not isinstance(guidance, (int, float)) or not guidance >= 0:
        raise ValueError(f"guidance must be a number >= 0 (values <= 1 disable classifier-free guidance), got {guidance!r}")
    prompt_seed(seed, 0)  # rejects a negative or non-int seed
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps!r}")
    if gif_max_side is not None and (isinstance(gif_max_side, bool) or not isinstance(gif_max_side, int)
                                     or gif_max_side < 1):
        raise ValueError(f"gif_max_side must be None (full size) or an int >= 1, got {gif_max_side!r}")
    return prompts


def _reusable_videos(report_path: Path, settings: dict) -> dict[int, dict]:
    # A rerun with identical settings keeps the videos whose files are still there.
    import json

    if not report_path.is_file():
        return {}
    try:
        previous = json.loads(report_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        logger.warning("ignoring unreadable %s; generating every video again", report_path)
        return {}
    if previous.get("settings") != settings:
        return {}
    folder = report_path.parent
    return {
        entry["index"]: entry
        for entry in previous.get("videos", [])
        if (folder / entry["mp4"]).is_file() and (folder / entry["gif"]).is_file()
    }


def generate_videos(
    pipe,
    prompts,
    out_dir,
    *,
    steps: int,
    guidance: float,
    seed: int = 0,
    height: int | None = None,
    width: int | None = None,
    frames: int | None = None,
    negative_prompt: str = "",
    fps: float | None = None,
    gif_max_side: int | None = 480,
    progress: bool = True,
    metadata: dict | None = None,
    resume: bool = False,
) -> dict:
    """Generate one video per prompt and write `<out_dir>/<index>_<slug>.mp4` / `.gif` and generation.json.

    NOTE: sampling runs the pipeline's own scheduler. A student distilled with `blade distill` was
    trained on its K-step stochastic sampler, which `blade.distill.student_latents` runs; with a
    student LoRA this function gives the scheduler's result, not the trained sampler's.

    Sizes are checked against the pipeline (`check_video_size`) before any model work. Prompt i uses
    noise from `prompt_generator(seed, i)`. After every denoising step the latents are checked for
    NaN and Inf (`StepMonitor`), and the decoded frames once more before export. generation.json is
    rewritten after every video, so with `resume=True` a rerun into the same folder keeps the videos
    an earlier run with identical settings (metadata included) wrote.

    Args:
        pipe: a loaded diffusers video pipeline (WanPipeline, CogVideoXPipeline).
        prompts: a prompt or a list of prompts.
        out_dir: output folder (created).
        steps: denoising steps per video.
        guidance: classifier-free guidance scale; values <= 1 run without guidance (one transformer
            call per step).
        seed: run seed; see `prompt_seed`.
        height, width, frames: video size in pixels and frames; None takes `default_video_size`.
        negative_prompt: negative prompt for guidance.
        fps: frame rate of the written files; None takes `default_fps`.
        gif_max_side: the GIF preview is scaled down to at most this many pixels on its longer
            side (None keeps the full size); the MP4 always has the full size.
        progress: show one tqdm bar over all prompts and steps (the pipeline's own bar is hidden).
        metadata: extra JSON-serialisable settings to record (model path, LoRA, ASA config). They
            are part of the settings a resumed run must match, so include whatever identifies the
            model (`prepare_pipeline` returns a fingerprint).
        resume: keep videos of an earlier run in `out_dir` whose settings and prompt match.

    Returns:
        The report written to generation.json: {"settings", "videos": [{"index", "prompt", "seed",
        "mp4", "gif", "frames", "wall_s", "step_s", "denoise_s", "export_s"}, ...], "total_s"}.
        Paths in it are relative to `out_dir`; times are wall-clock seconds.

    Raises:
        ValueError: invalid prompts, steps, guidance, seed, fps, gif_max_side or video size.
        NonFiniteError: NaN or Inf in the latents (naming the step) or in the decoded frames.
    """
    from tqdm.auto import tqdm

    import blade

    fps = default_fps(pipe) if fps is None else fps
    prompts = check_arguments(prompts, steps=steps, guidance=guidance, seed=seed, fps=fps, gif_max_side=gif_max_side)
    default_height, default_width, default_frames = default_video_size(pipe)
    height = default_height if height is None else height
    width = default_width if width is None else width
    frames = default_frames if frames is None else frames
    check_video_size(pipe, height, width, frames)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = {
        "pipeline": type(pipe).__name__,
        "steps": steps,
        "guidance": float(guidance),
        "seed": seed,
        "height": height,
        "width": width,
        "frames": frames,
        "negative_prompt": negative_prompt,
        "fps": float(fps),
        "gif_max_side": gif_max_side,
        **(metadata or {}),
    }
    report_path = out_dir / REPORT_NAME
    reusable = _reusable_videos(report_path, settings) if resume else {}
    report = {
        "settings": settings,
        "versions": {"blade": blade.__version__, "torch": torch.__version__, "diffusers": _diffusers_version()},
        "videos": [],
        "total_s": 0.0,
    }

    previous_bar_config = dict(getattr(pipe, "_progress_bar_config", {}))
    pipe.set_progress_bar_config(disable=True)
    bar = tqdm(total=len(prompts) * steps, unit="step", desc="generate", disable=not progress)
    run_start = time.perf_counter()
    try:
        for index, prompt in enumerate(prompts):
            previous = reusable.get(index)
            if previous is not None and previous["prompt"] == prompt:
                logger.info("prompt %d: reusing %s from an earlier run with the same settings", index, previous["mp4"])
                report["videos"].append(previous)
                bar.update(steps)
                continue
            bar.set_postfix_str(f"prompt {index + 1}/{len(prompts)}")
            entry = _generate_one(pipe, prompt, index, out_dir, settings, bar)
            report["videos"].append(entry)
            report["total_s"] = time.perf_counter() - run_start
            atomic_write_json(report_path, report)
    finally:
        bar.close()
        pipe.set_progress_bar_config(**previous_bar_config)
    report["total_s"] = time.perf_counter() - run_start
    atomic_write_json(report_path, report)
    return report


def _diffusers_version() -> str:
    import diffusers

    return diffusers.__version__


def _generate_one(pipe, prompt: str, index: int, out_dir: Path, settings: dict, bar) -> dict:
    label = f"prompt {index} ({prompt[:40]!r})"
    monitor = StepMonitor(settings["steps"], progress=bar, label=label)
    first_forward = {"seen": False}

    def mark_first_forward(module, args, kwargs):
        # Step 1 starts at the first transformer call, after prompt encoding and latent setup.
        if not first_forward["seen"]:
            first_forward["seen"] = True
            monitor.restart()

    hook = pipe.transformer.register_forward_pre_hook(mark_first_forward, with_kwargs=True)
    start = time.perf_counter()
    try:
        output = pipe(
            prompt=prompt,
            negative_prompt=settings["negative_prompt"] or None,
            num_inference_steps=settings["steps"],
            guidance_scale=settings["guidance"],
            height=settings["height"],
            width=settings["width"],
            num_frames=settings["frames"],
            generator=prompt_generator(settings["seed"], index),
            output_type="np",
            callback_on_step_end=monitor,
            callback_on_step_end_tensor_inputs=["latents"],
            **_call_kwargs(pipe),
        )
    finally:
        hook.remove()
    video = output.frames[0]  # [T, H, W, C] float in [0, 1]
    wall = time.perf_counter() - start
    check_finite_frames(video, label)

    export_start = time.perf_counter()
    stem = f"{index:04d}_{_slug(prompt)}"
    paths = export_video(video, out_dir / stem, fps=settings["fps"], gif_max_side=settings["gif_max_side"])
    export_seconds = time.perf_counter() - export_start
    step_seconds = monitor.step_seconds
    logger.info("prompt %d: %d frames in %.2f s (%.3f s/step), wrote %s", index, len(video), wall,
                sum(step_seconds) / max(1, len(step_seconds)), paths["mp4"])
    return {
        "index": index,
        "prompt": prompt,
        "seed": prompt_seed(settings["seed"], index),
        "mp4": paths["mp4"].name,
        "gif": paths["gif"].name,
        "frames": int(video.shape[0]),
        "wall_s": wall,
        "step_s": step_seconds,
        "denoise_s": sum(step_seconds),
        "export_s": export_seconds,
    }
