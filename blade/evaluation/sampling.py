"""Load the pipeline of one evaluation variant and sample its videos, timed, with measured sparsity."""

from __future__ import annotations

import inspect
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from blade.evaluation.config import STATIC_ATTENTIONS, EvalConfig, VariantSpec, median

logger = logging.getLogger(__name__)


@dataclass
class RunContext:
    """Settings shared by every variant of one run.

    Attributes:
        prompts: the prompt texts, in order.
        toy_config: the model folder's `ToyTeacherConfig`, or None when the model is not the toy world.
        height, width, frames: video size.
        max_sequence_length: text tokens passed to the text encoder.
    """

    prompts: list[str]
    toy_config: object = None
    height: int = 0
    width: int = 0
    frames: int = 0
    max_sequence_length: int | None = None


@dataclass
class VariantRun:
    """Result of sampling one variant.

    Attributes:
        videos: uint8 `[N, T, H, W, 3]`, one video per prompt.
        seconds: per video, the timed generation seconds of every counted repeat.
        attention_sparsity: mean sparsity over the recorded attention calls (0 for dense attention).
        recorded_calls: attention calls the sparsity is averaged over.
        details: resolved device, dtype, fingerprints and BladeConfig of the pipeline.
    """

    videos: np.ndarray
    seconds: list[list[float]] = field(default_factory=list)
    attention_sparsity: float = 0.0
    recorded_calls: int = 0
    details: dict = field(default_factory=dict)

    @property
    def seconds_per_video(self) -> float:
        """Median wall time of one video over every counted generation."""
        return median([value for per_video in self.seconds for value in per_video])


def toy_config_of(model) -> object:
    """Return the toy teacher config saved in a model folder, or None when it has none."""
    from blade.toy.teacher import load_config

    if not (Path(model) / "toy_teacher_config.json").is_file():
        return None
    return load_config(model)


def _call_default(pipe, name):
    parameter = inspect.signature(pipe.__call__).parameters.get(name)
    return None if parameter is None or parameter.default is inspect.Parameter.empty else parameter.default


def resolve_size(pipe, config: EvalConfig, toy_config) -> tuple[int, int, int, int | None]:
    """Return (height, width, frames, max_sequence_length) from the config, the toy config or the pipeline.

    Raises:
        ValueError: the size does not fit the pipeline (`blade.generate.check_video_size`).
    """
    from blade.generate import check_video_size, default_video_size

    height, width, frames = default_video_size(pipe)
    if toy_config is not None:
        height, width, frames = toy_config.height, toy_config.width, toy_config.num_frames
    height = config.height or height
    width = config.width or width
    frames = config.frames or frames
    check_video_size(pipe, height, width, frames)
    length = config.max_sequence_length
    if length is None and toy_config is not None:
        length = toy_config.text_len
    if length is None:
        length = getattr(pipe.transformer.config, "max_text_seq_length", None) or _call_default(pipe, "max_sequence_length")
    return height, width, frames, length


def load_variant(config: EvalConfig, variant: VariantSpec, sparsity: float | None):
    """Load the model folder and set it up as the variant requests: LoRA, then ASA or a static mask.

    Args:
        config: the run's settings.
        variant: the variant.
        sparsity: target sparsity of a static mask (resolved from a matched variant), else None.

    Returns:
        (pipeline, details) as from `blade.generate.prepare_pipeline`, with "blade" and
        "static_mask" describing the attention.
    """
    from blade.generate import prepare_pipeline
    from blade.patching import apply_blade

    pipe, details = prepare_pipeline(config.model, lora=config.lora_path(variant), device=config.device, dtype=config.dtype)
    blade_config = config.blade_for(variant)
    # The pipeline sampler steps through the scheduler's timesteps, so dense_steps can count them.
    # The student was trained without a registered schedule, so it runs without one here too.
    schedule = pipe.scheduler if variant.sampler == "pipeline" else None
    details["static_mask"] = None
    if variant.attention == "asa":
        apply_blade(pipe.transformer, blade_config, schedule=schedule)
    elif variant.attention in STATIC_ATTENTIONS:
        from blade.evaluation.static import apply_static_mask

        apply_static_mask(pipe.transformer, variant.attention, sparsity, blade_config, schedule=schedule)
        details["static_mask"] = {"strategy": variant.attention, "sparsity": sparsity}
    details["blade"] = None if blade_config is None else blade_config.to_dict()
    pipe.set_progress_bar_config(disable=True)
    return pipe, details


def _encode(pipe, prompt: str, guidance: float, max_sequence_length):
    kwargs = {"max_sequence_length": max_sequence_length} if max_sequence_length else {}
    device = pipe.transformer.device
    return pipe.encode_prompt(prompt, negative_prompt="", do_classifier_free_guidance=guidance > 1.0,
                              device=device, **kwargs)


def sample_video(pipe, variant: VariantSpec, prompt: str, index: int, context: RunContext, seed: int) -> np.ndarray:
    """Generate one video end to end (text encoding, sampling, decoding).

    Args:
        pipe: the variant's pipeline from `load_variant`.
        variant: the variant (sampler, steps, guidance, eta).
        prompt: the prompt text.
        index: the prompt's position; the noise comes from `blade.generate.prompt_seed(seed, index)`.
        context: video size and text length.
        seed: run seed.

    Returns:
        float32 `[T, H, W, 3]` in [0, 1].

    Raises:
        NonFiniteError: the frames contain NaN or Inf.
    """
    from blade.distill import decode_latents, student_latents
    from blade.generate import check_finite_frames, prompt_generator, prompt_seed

    prompt_embeds, negative_embeds = _encode(pipe, prompt, variant.guidance, context.max_sequence_length)
    if variant.sampler == "pipeline":
        video = pipe(
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_embeds,
            guidance_scale=variant.guidance,
            num_inference_steps=variant.steps,
            height=context.height,
            width=context.width,
            num_frames=context.frames,
            generator=prompt_generator(seed, index),
            output_type="np",
        ).frames[0]  # [T, H, W, 3]
    else:
        latent_shape = (
            pipe.transformer.config.in_channels,
            (context.frames - 1) // pipe.vae_scale_factor_temporal + 1,
            context.height // pipe.vae_scale_factor_spatial,
            context.width // pipe.vae_scale_factor_spatial,
        )
        generator = torch.Generator(device=pipe.transformer.device).manual_seed(prompt_seed(seed, index))
        latents = student_latents(pipe, prompt_embeds, latent_shape, num_steps=variant.steps, eta=variant.eta,
                                  generator=generator)
        video = decode_latents(pipe, latents)[0]  # [T, H, W, 3]
    video = np.asarray(video, dtype=np.float32)
    check_finite_frames(video, f"variant {variant.name!r}, prompt {index}")
    return video


def generations_per_prompt(patched: bool, repeats: int) -> int:
    """Generations `run_variant` makes per prompt: one extra, untimed, for a patched variant with `repeats` = 1."""
    return repeats + 1 if patched and repeats == 1 else repeats


def run_variant(pipe, variant: VariantSpec, context: RunContext, *, seed: int, repeats: int, progress=None) -> VariantRun:
    """Sample every prompt `repeats` times; time each generation and record attention sparsity.

    When the transformer is patched, the first generation of each prompt runs inside `record_masks`
    (block masks not kept, only each call's sparsity) and is left out of the timing, so the
    recording's host copies never count; with `repeats` = 1 one more generation is then timed.
    Unpatched variants time every generation when `repeats` = 1 and all but the first otherwise.
    The videos kept are those of the first generation; later repeats draw the same noise.

    Args:
        pipe: the variant's pipeline.
        variant: the variant.
        context: prompts and video size.
        seed: run seed.
        repeats: generations per prompt.
        progress: a tqdm bar advanced once per generation, or None.
    """
    import contextlib

    from blade.export import to_uint8_frames
    from blade.patching import record_masks
    from blade.patching.apply import blade_state

    patched = blade_state(pipe.transformer) is not None
    videos, seconds, sparsities = [], [], []
    generations = generations_per_prompt(patched, repeats)
    for index, prompt in enumerate(context.prompts):
        timings = []
        for repeat in range(generations):
            recording = record_masks(pipe.transformer, heads=[]) if patched and repeat == 0 else contextlib.nullcontext()
            with recording as recorded:
                start = time.perf_counter()
                video = sample_video(pipe, variant, prompt, index, context, seed)
                elapsed = time.perf_counter() - start
            if repeat == 0:
                videos.append(to_uint8_frames(video))
                if recorded is not None:
                    sparsities.extend(call.sparsity.float().mean().item() for call in recorded.calls)
            if repeat > 0 or generations == 1:
                timings.append(elapsed)
            if progress is not None:
                progress.update(1)
        seconds.append(timings)
        logger.info("%s: prompt %d in %.2f s (median of %d)", variant.name, index, median(timings), len(timings))
    sparsity = float(np.mean(sparsities)) if sparsities else 0.0
    return VariantRun(np.stack(videos), seconds, sparsity, len(sparsities))
