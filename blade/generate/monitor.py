"""Per-step checks during sampling: NaN / Inf detection naming the step, step timings and progress."""

from __future__ import annotations

import time

import numpy as np
import torch


class NonFiniteError(FloatingPointError):
    """Latents or decoded frames contain NaN or Inf values."""


class StepMonitor:
    """A diffusers `callback_on_step_end` that checks latents and times each denoising step.

    Pass it as `pipe(..., callback_on_step_end=monitor, callback_on_step_end_tensor_inputs=["latents"])`.
    After each step it raises `NonFiniteError` naming the step (1-based) if the latents contain a NaN or
    Inf, records the step's end time and advances the progress bar by one.

    The check reads one boolean from the device per step. That sync is also what makes the step
    timings real on a GPU, and it costs little next to a transformer forward.

    Args:
        total_steps: the number of denoising steps of the run (for messages).
        progress: a tqdm bar to advance once per step, or None.
        label: what is being generated, for messages (e.g. "prompt 3").
    """

    def __init__(self, total_steps: int, *, progress=None, label: str = "video"):
        self.total_steps = total_steps
        self.progress = progress
        self.label = label
        self.start_time = time.perf_counter()
        self.step_end_times: list[float] = []

    def restart(self) -> None:
        """Set the start of the first step to now (call right before the first transformer forward)."""
        self.start_time = time.perf_counter()

    def __call__(self, pipe, step_index: int, timestep, callback_kwargs: dict) -> dict:
        latents = callback_kwargs.get("latents")
        if latents is None:
            raise KeyError(
                "StepMonitor needs the latents; call the pipeline with callback_on_step_end_tensor_inputs=['latents']"
            )
        if not bool(torch.isfinite(latents).all()):
            step = step_index + 1
            raise NonFiniteError(
                f"{self.label}: the latents contain {_count_non_finite(latents)} after denoising step {step} of "
                f"{self.total_steps} (timestep {float(timestep):.1f}); the video would be black or noise. "
                "Causes include float16 overflow (try --dtype bfloat16 or float32), a diverged LoRA, or a "
                "guidance scale far too large"
            )
        self.step_end_times.append(time.perf_counter())
        if self.progress is not None:
            self.progress.update(1)
        return {}

    @property
    def step_seconds(self) -> list[float]:
        """Wall time of each finished step in seconds; the first counts from the last `restart`."""
        starts = [self.start_time, *self.step_end_times[:-1]]
        return [end - start for start, end in zip(starts, self.step_end_times)]


def _count_non_finite(tensor: torch.Tensor) -> str:
    nan = int(torch.isnan(tensor).sum())
    inf = int(torch.isinf(tensor).sum())
    return f"{nan} NaN and {inf} Inf values (of {tensor.numel()})"


def check_finite_frames(frames, label: str = "video") -> None:
    """Raise `NonFiniteError` if decoded frames contain a NaN or Inf.

    Args:
        frames: decoded video, numpy array or torch tensor of any shape.
        label: what is being generated, for the message.
    """
    array = frames.detach().float().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise NonFiniteError(
            f"{label}: the decoded frames contain {int(np.isnan(array).sum())} NaN and {int(np.isinf(array).sum())} "
            "Inf values although every step's latents were finite, so the VAE decode failed; decode in float32 "
            "(--dtype float32) or check the VAE weights"
        )
