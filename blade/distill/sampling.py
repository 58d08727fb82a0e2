"""The student's K-step stochastic rollout and the segment and timestep draws of one TDM iteration.

Segments are numbered in execution order k = 0 .. K-1 (the paper's i = K - k). Segment k starts at
t_start = floor(N (K - k) / K) - 1 and ends at t_end = floor(N (K - k - 1) / K) - 1, so for K = 8 and
N = 1000 the starts are 999, 874, ..., 124 and the last segment ends at -1, the clean sample. Every
random draw takes an explicit generator. Segment indices and timesteps are drawn on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from blade.distill.schedules import NUM_TRAIN_TIMESTEPS, add_noise

# Largest timestep (exclusive) of the fake-score and student timestep draw, as in TDM.
DEFAULT_T_MAX = 980


def _check_num_steps(num_steps) -> None:
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int (the student's K), got {num_steps!r}")


def segment_bounds(k: int, num_steps: int, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> tuple[int, int]:
    """Return (t_start, t_end) of segment k (execution order) of a K-step student.

    Args:
        k: segment index in [0, K), 0 being the first (noisiest) step.
        num_steps: K.
        num_train_timesteps: N.

    Returns:
        (t_start, t_end) integers, t_end = -1 for the last segment.
    """
    _check_num_steps(num_steps)
    if not 0 <= k < num_steps:
        raise ValueError(f"segment index k must lie in [0, {num_steps}), got {k}")
    t_start = num_train_timesteps * (num_steps - k) // num_steps - 1
    t_end = num_train_timesteps * (num_steps - k - 1) // num_steps - 1
    return t_start, t_end


def sample_segment(num_steps: int, generator: torch.Generator) -> int:
    """Draw a segment index uniformly from [0, K) with a CPU generator."""
    _check_num_steps(num_steps)
    return int(torch.randint(num_steps, (1,), generator=generator)[0])


def sample_timesteps(
    t_end: int, batch_size: int, generator: torch.Generator, t_max: int = DEFAULT_T_MAX
) -> torch.Tensor:
    """Draw the timesteps at which the fake score and the teacher judge a segment's result.

    Uniform integers in [max(t_end, 0), t_max): the segment's end (the clean sample, t_end = -1, is
    replaced by 0 so that the noise level is never zero) up to t_max exclusive.

    Args:
        t_end: end timestep of the segment.
        batch_size: B, one draw per sample.
        generator: CPU generator.
        t_max: exclusive upper bound (980 in TDM).

    Returns:
        [B] int64 CPU tensor.
    """
    low = max(t_end, 0)
    if low >= t_max:
        raise ValueError(
            f"the segment ends at t={t_end}, at or above t_max={t_max}: no timestep to draw; "
            "raise t_max or use more student steps"
        )
    return torch.randint(low, t_max, (batch_size,), generator=generator, dtype=torch.int64)


def standard_normal(like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Draw standard normal noise of `like`'s shape and dtype on the generator's device, moved to `like`'s."""
    noise = torch.randn(like.shape, generator=generator, device=generator.device, dtype=torch.float32)
    return noise.to(device=like.device, dtype=like.dtype)


def mix_noise(eps_hat: torch.Tensor, eta: float, generator: torch.Generator) -> torch.Tensor:
    """Mix the predicted noise with fresh noise: eps' = eta * eps_hat + sqrt(1 - eta^2) * z.

    Args:
        eps_hat: [B, ...] noise predicted by the student.
        eta: weight in [0, 1]. 1 keeps the predicted noise (deterministic, DDIM-like), 0 draws fresh noise.
        generator: generator of z.

    Returns:
        eps' of eps_hat's shape.
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must lie in [0, 1], got {eta}; TDM uses 0.9")
    fresh = standard_normal(eps_hat, generator)
    return eta * eps_hat + (1.0 - eta * eta) ** 0.5 * fresh


def renoise(schedule, x0_hat, eps_hat, t_end: int, eta: float, generator: torch.Generator) -> torch.Tensor:
    """Move a segment's prediction to its end timestep: alpha(t_end) x0_hat + sigma(t_end) eps'.

    Args:
        schedule: FlowMatchSchedule or VPredictionSchedule.
        x0_hat, eps_hat: [B, ...] predictions at the segment's start.
        t_end: the segment's end timestep (-1 returns x0_hat).
        eta: noise mixing weight (see `mix_noise`).
        generator: generator of the fresh noise.

    Returns:
        [B, ...] sample at t_end.
    """
    timesteps = torch.full((x0_hat.shape[0],), t_end, dtype=torch.int64)
    return add_noise(schedule, x0_hat, mix_noise(eps_hat, eta, generator), timesteps)


@dataclass
class Rollout:
    """The student's trajectory from pure noise.

    Attributes:
        states: states[k] is the [B, ...] input of segment k (states[0] the initial noise at t_start of
            segment 0); states[k + 1] the re-noised result of segment k at its t_end.
        x0: x0[k] the student's [B, ...] clean prediction in segment k.
        eps: eps[k] the student's [B, ...] noise prediction in segment k.
    """

    states: list[torch.Tensor]
    x0: list[torch.Tensor]
    eps: list[torch.Tensor]


Denoiser = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@torch.no_grad()
def student_rollout(
    denoise: Denoiser,
    noise: torch.Tensor,
    schedule,
    num_steps: int,
    eta: float,
    generator: torch.Generator,
    *,
    last_segment: int | None = None,
) -> Rollout:
    """Run the K-step stochastic student sampler from noise, without gradients.

    Args:
        denoise: maps (x_t [B, ...], t [B] int64 CPU) to (x0_hat, eps_hat), each [B, ...].
        noise: [B, ...] standard normal start at t = N - 1.
        schedule: FlowMatchSchedule or VPredictionSchedule.
        num_steps: K.
        eta: noise mixing weight of each re-noising (0.9 in TDM).
        generator: generator of the fresh noise.
        last_segment: stop after this segment (the rollout only needs to reach the segments that
            will be trained); None runs all K.

    Returns:
        A Rollout with len(x0) = last_segment + 1 and one more state.
    """
    _check_num_steps(num_steps)
    stop = num_steps - 1 if last_segment is None else last_segment
    if not 0 <= stop < num_steps:
        raise ValueError(f"last_segment must lie in [0, {num_steps}), got {last_segment}")
    batch_size = noise.shape[0]
    rollout = Rollout(states=[noise], x0=[], eps=[])
    for k in range(stop + 1):
        t_start, t_end = segment_bounds(k, num_steps, schedule.num_train_timesteps)
        x0_hat, eps_hat = denoise(rollout.states[k], torch.full((batch_size,), t_start, dtype=torch.int64))
        rollout.x0.append(x0_hat)
        rollout.eps.append(eps_hat)
        rollout.states.append(renoise(schedule, x0_hat, eps_hat, t_end, eta, generator))
    return rollout
