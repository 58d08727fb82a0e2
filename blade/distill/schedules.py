"""Noise schedules of the teachers, as closed-form functions of the integer training timestep.

Both schedules share one convention: an integer timestep t in [0, N) (N = 1000 training timesteps,
t = N - 1 is pure noise) noises a clean sample as

    x_t = alpha(t) * x0 + sigma(t) * eps,

and t = -1 stands for the clean sample (alpha 1, sigma 0), the end of the last distillation
segment. Every coefficient is computed in float64 from a formula, never looked up by exact match in
a scheduler table: the authors' Wan code matched integer timesteps against the shifted table, and
about 27% of the integers in [0, 980) silently fell through to the last entry (sigma ~ 0.003).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

NUM_TRAIN_TIMESTEPS = 1000


def _as_timesteps(t) -> torch.Tensor:
    timesteps = torch.as_tensor(t)
    if timesteps.is_floating_point() or timesteps.is_complex():
        raise TypeError(f"timesteps must be integers in [-1, N), got dtype {timesteps.dtype}; round them first")
    return timesteps.to(torch.int64)


def _check_range(timesteps: torch.Tensor, num_train_timesteps: int) -> None:
    # Timesteps live on the CPU (they are drawn with a CPU generator), so this check never syncs a device.
    if timesteps.numel() and (timesteps.min() < -1 or timesteps.max() >= num_train_timesteps):
        raise ValueError(
            f"timesteps must lie in [-1, {num_train_timesteps}) (-1 = clean sample), got values in "
            f"[{int(timesteps.min())}, {int(timesteps.max())}]"
        )


def flow_sigma(t, shift: float = 1.0, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    """Noise level sigma(t) of diffusers' `FlowMatchEulerDiscreteScheduler(shift=shift)` training table.

    The scheduler's table holds, for unshifted levels s = (t + 1) / N (t = N - 1 ... 0), the shifted
    level shift * s / (1 + (shift - 1) * s). This function evaluates that formula for any integer t,
    so sigma(N - 1) = 1, sigma(0) = shift / (N + shift - 1) and sigma(-1) = 0.

    Args:
        t: integer timesteps, a Python int or an int tensor of any shape, each in [-1, N).
        shift: the scheduler's `shift` (Wan2.1 uses 3.0 in training; 1.0 leaves sigma = s).
        num_train_timesteps: N.

    Returns:
        float64 tensor of t's shape.
    """
    timesteps = _as_timesteps(t)
    _check_range(timesteps, num_train_timesteps)
    unshifted = (timesteps.to(torch.float64) + 1.0) / num_train_timesteps
    return shift * unshifted / (1.0 + (shift - 1.0) * unshifted)


def ddpm_alphas_cumprod(betas: torch.Tensor, snr_shift_scale: float = 1.0) -> torch.Tensor:
    """Cumulative products abar of a DDPM beta schedule, with CogVideoX's optional SNR shift.

    abar_t = prod_{s <= t} (1 - beta_s); CogVideoX then divides the signal-to-noise ratio by
    `snr_shift_scale`: abar / (scale + (1 - scale) * abar) (a scale of 1 leaves abar unchanged).

    Args:
        betas: [N] beta schedule.
        snr_shift_scale: CogVideoX's `snr_shift_scale` (3.0 in its scheduler config).

    Returns:
        [N] float64 abar.
    """
    alphas_cumprod = torch.cumprod(1.0 - betas.to(torch.float64), dim=0)
    return alphas_cumprod / (snr_shift_scale + (1.0 - snr_shift_scale) * alphas_cumprod)


def flow_to_x0_eps(velocity: torch.Tensor, x_t: torch.Tensor, sigma: torch.Tensor):
    """Split a flow-matching velocity prediction v = eps - x0 into (x0_hat, eps_hat).

    With x_t = (1 - sigma) x0 + sigma eps: x0 = x_t - sigma v and eps = x_t + (1 - sigma) v.

    Args:
        velocity: model output, any shape [B, ...].
        x_t: the model input, same shape.
        sigma: noise level broadcastable to x_t (e.g. [B, 1, 1, 1, 1]).

    Returns:
        (x0_hat, eps_hat), each of x_t's shape.
    """
    return x_t - sigma * velocity, x_t + (1.0 - sigma) * velocity


def v_prediction_to_x0_eps(v: torch.Tensor, x_t: torch.Tensor, alpha_bar: torch.Tensor):
    """Split a DDPM v-prediction v = sqrt(abar) eps - sqrt(1 - abar) x0 into (x0_hat, eps_hat).

    With x_t = sqrt(abar) x0 + sqrt(1 - abar) eps: x0 = sqrt(abar) x_t - sqrt(1 - abar) v and
    eps = sqrt(1 - abar) x_t + sqrt(abar) v.

    Args:
        v: model output, any shape [B, ...].
        x_t: the model input, same shape.
        alpha_bar: abar_t broadcastable to x_t.

    Returns:
        (x0_hat, eps_hat), each of x_t's shape.
    """
    signal, noise = alpha_bar.sqrt(), (1.0 - alpha_bar).sqrt()
    return signal * x_t - noise * v, noise * x_t + signal * v


def _broadcast(coefficient: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    coefficient = coefficient.to(device=like.device, dtype=like.dtype)
    return coefficient.reshape(coefficient.shape + (1,) * (like.ndim - coefficient.ndim))  # [B, 1, ...]


@dataclass(frozen=True)
class FlowMatchSchedule:
    """Rectified-flow schedule of Wan and the toy teacher (velocity prediction, shifted sigmas).

    Attributes:
        shift: sigma shift of `FlowMatchEulerDiscreteScheduler` (3.0 for Wan2.1 and the toy teacher).
        num_train_timesteps: N.
    """

    shift: float = 3.0
    num_train_timesteps: int = NUM_TRAIN_TIMESTEPS

    @classmethod
    def from_scheduler(cls, scheduler) -> "FlowMatchSchedule":
        """Read shift and N from a diffusers flow-matching scheduler (e.g. `pipe.scheduler`)."""
        config = scheduler.config
        if config.get("use_dynamic_shifting", False):
            raise ValueError(
                "scheduler uses dynamic (resolution-dependent) shifting; blade distils on the static "
                "shift: set use_dynamic_shifting=False and shift explicitly"
            )
        return cls(shift=float(config.get("shift", 1.0)), num_train_timesteps=int(config["num_train_timesteps"]))

    def coefficients(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        """Return float64 (alpha(t), sigma(t)) = (1 - sigma, sigma), each of t's shape."""
        sigma = flow_sigma(t, self.shift, self.num_train_timesteps)
        return 1.0 - sigma, sigma

    def model_timestep(self, t) -> torch.Tensor:
        """Return the float32 timestep the transformer is conditioned on: sigma(t) * N, as in the pipelines."""
        return (flow_sigma(t, self.shift, self.num_train_timesteps) * self.num_train_timesteps).float()

    def to_x0_eps(self, output: torch.Tensor, x_t: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """Convert a velocity output at integer timesteps t ([B]) into (x0_hat, eps_hat), each like x_t."""
        sigma = _broadcast(flow_sigma(t, self.shift, self.num_train_timesteps), x_t)
        return flow_to_x0_eps(output, x_t, sigma)


@dataclass(frozen=True)
class VPredictionSchedule:
    """DDPM schedule with v-prediction (CogVideoX).

    Attributes:
        alphas_cumprod: [N] float64 abar of the scheduler (with its SNR shift).
    """

    alphas_cumprod: torch.Tensor = field(repr=False)

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    @classmethod
    def from_scheduler(cls, scheduler) -> "VPredictionSchedule":
        """Build from a diffusers DDPM-family scheduler with v-prediction (e.g. `CogVideoXDDIMScheduler`).

        abar is recomputed in float64 from the scheduler's float32 `betas` and its `snr_shift_scale`.
        """
        config = scheduler.config
        if config.get("prediction_type") != "v_prediction":
            raise ValueError(
                f"VPredictionSchedule needs a v-prediction scheduler, got prediction_type="
                f"{config.get('prediction_type')!r}; use FlowMatchSchedule for flow-matching teachers"
            )
        if config.get("rescale_betas_zero_snr", False):
            raise ValueError("rescale_betas_zero_snr=True is not supported; the CogVideoX scheduler leaves it False")
        alphas_cumprod = ddpm_alphas_cumprod(scheduler.betas, float(config.get("snr_shift_scale", 1.0)))
        return cls(alphas_cumprod=alphas_cumprod)

    def _alpha_bar(self, t) -> torch.Tensor:
        timesteps = _as_timesteps(t)
        _check_range(timesteps, self.num_train_timesteps)
        padded = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod])  # index 0 = t of -1
        return padded[timesteps + 1]

    def coefficients(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        """Return float64 (sqrt(abar_t), sqrt(1 - abar_t)), each of t's shape (t = -1 gives (1, 0))."""
        alpha_bar = self._alpha_bar(t)
        return alpha_bar.sqrt(), (1.0 - alpha_bar).sqrt()

    def model_timestep(self, t) -> torch.Tensor:
        """Return the int64 timestep the transformer is conditioned on (t itself)."""
        return _as_timesteps(t).clone()

    def to_x0_eps(self, output: torch.Tensor, x_t: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """Convert a v-prediction at integer timesteps t ([B]) into (x0_hat, eps_hat), each like x_t."""
        return v_prediction_to_x0_eps(output, x_t, _broadcast(self._alpha_bar(t), x_t))


def schedule_from_scheduler(scheduler):
    """Return the FlowMatchSchedule or VPredictionSchedule matching a diffusers scheduler."""
    name = type(scheduler).__name__
    if "FlowMatch" in name or ("UniPC" in name and scheduler.config.get("use_flow_sigmas", False)):
        return FlowMatchSchedule.from_scheduler(scheduler)
    if scheduler.config.get("prediction_type") == "v_prediction":
        return VPredictionSchedule.from_scheduler(scheduler)
    raise ValueError(
        f"no distillation schedule for {name} with prediction_type {scheduler.config.get('prediction_type')!r}; "
        "blade supports flow matching (Wan, toy) and DDPM v-prediction (CogVideoX)"
    )


def add_noise(schedule, x0: torch.Tensor, noise: torch.Tensor, t) -> torch.Tensor:
    """Noise clean samples to integer timesteps t: alpha(t) x0 + sigma(t) noise.

    Args:
        schedule: FlowMatchSchedule or VPredictionSchedule.
        x0: [B, ...] clean samples.
        noise: standard normal noise of x0's shape.
        t: [B] int64 timesteps in [-1, N).

    Returns:
        x_t of x0's shape and dtype.
    """
    alpha, sigma = schedule.coefficients(t)
    return _broadcast(alpha, x0) * x0 + _broadcast(sigma, x0) * noise


def diffuse_forward(schedule, x_from: torch.Tensor, t_from, t_to, noise: torch.Tensor) -> torch.Tensor:
    """Sample x_{t_to} given x_{t_from} (t_to >= t_from) from the forward process's Gaussian transition.

    With x_t = alpha_t x0 + sigma_t eps, the transition is
    x_to = r x_from + sqrt(sigma_to^2 - r^2 sigma_from^2) z with r = alpha_to / alpha_from,
    so x_to has exactly the marginal of t_to whatever the schedule.

    Args:
        schedule: FlowMatchSchedule or VPredictionSchedule.
        x_from: [B, ...] samples at t_from.
        t_from, t_to: [B] int64 timesteps with t_from <= t_to.
        noise: fresh standard normal noise of x_from's shape.

    Returns:
        [B, ...] samples at t_to.
    """
    alpha_from, sigma_from = schedule.coefficients(t_from)
    alpha_to, sigma_to = schedule.coefficients(t_to)
    ratio = alpha_to / alpha_from
    variance = (sigma_to.square() - ratio.square() * sigma_from.square()).clamp_min(0.0)
    return _broadcast(ratio, x_from) * x_from + _broadcast(variance.sqrt(), x_from) * noise
