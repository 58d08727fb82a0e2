"""Schedules against diffusers' own tables and against the forward-process definitions."""

import pytest
import torch
from diffusers import CogVideoXDDIMScheduler, FlowMatchEulerDiscreteScheduler

from blade.distill.schedules import (
    FlowMatchSchedule,
    VPredictionSchedule,
    add_noise,
    diffuse_forward,
    flow_sigma,
    schedule_from_scheduler,
)


@pytest.mark.parametrize("shift", [1.0, 3.0, 5.0])
def test_flow_sigma_matches_the_scheduler_table_for_every_integer_timestep(shift):
    """The authors' exact-match lookup missed about 27% of integers; every t in [0, 1000) must be exact."""
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    table = scheduler.sigmas.double()  # [1000], entry j belongs to t = 999 - j
    t = torch.arange(1000)
    ours = flow_sigma(t, shift)
    # The table is float32, so agreement is to float32 rounding.
    torch.testing.assert_close(ours, table.flip(0), rtol=0, atol=2e-7)
    torch.testing.assert_close(FlowMatchSchedule(shift).model_timestep(t).double(), scheduler.timesteps.double().flip(0), rtol=1e-6, atol=1e-4)


def test_flow_sigma_end_points_and_hand_values():
    assert flow_sigma(999, 3.0).item() == 1.0
    assert flow_sigma(-1, 3.0).item() == 0.0
    # t = 499: s = 0.5, sigma = 3 * 0.5 / (1 + 2 * 0.5) = 0.75
    assert flow_sigma(499, 3.0).item() == pytest.approx(0.75, abs=1e-15)
    assert flow_sigma(0, 3.0).item() == pytest.approx(3 / 1002, abs=1e-15)


def test_timestep_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"\[-1, 1000\)"):
        flow_sigma(torch.tensor([1000]), 3.0)
    with pytest.raises(TypeError, match="integers"):
        flow_sigma(torch.tensor([0.5]), 3.0)


def test_v_prediction_schedule_from_cogvideox_scheduler():
    scheduler = CogVideoXDDIMScheduler(prediction_type="v_prediction")
    schedule = VPredictionSchedule.from_scheduler(scheduler)
    # Independent derivation: scaled-linear betas, cumulative product, SNR divided by 3.
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    abar = torch.cumprod(1 - betas, 0)
    abar = abar / (3.0 + (1 - 3.0) * abar)
    alpha, sigma = schedule.coefficients(torch.arange(-1, 1000))
    torch.testing.assert_close(alpha[1:].square(), abar, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(alpha.square() + sigma.square(), torch.ones(1001, dtype=torch.float64))
    assert alpha[0].item() == 1.0
    assert sigma[0].item() == 0.0
    torch.testing.assert_close(scheduler.alphas_cumprod.double(), abar, rtol=1e-5, atol=1e-7)
    assert isinstance(schedule_from_scheduler(scheduler), VPredictionSchedule)
    with pytest.raises(ValueError, match="v-prediction"):
        VPredictionSchedule.from_scheduler(CogVideoXDDIMScheduler(prediction_type="epsilon"))


@pytest.mark.parametrize(
    "schedule",
    [FlowMatchSchedule(3.0), VPredictionSchedule.from_scheduler(CogVideoXDDIMScheduler(prediction_type="v_prediction"))],
    ids=["flow", "v"],
)
def test_x0_eps_conversion_inverts_the_forward_process(schedule):
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 3, 5, 7, 9, generator=generator, dtype=torch.float64)
    eps = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
    t = torch.tensor([37, 911])
    x_t = add_noise(schedule, x0, eps, t)
    alpha, sigma = (c.reshape(2, 1, 1, 1, 1) for c in schedule.coefficients(t))
    if isinstance(schedule, FlowMatchSchedule):
        output = eps - x0  # velocity
    else:
        output = alpha * eps - sigma * x0  # v
    x0_hat, eps_hat = schedule.to_x0_eps(output, x_t, t)
    torch.testing.assert_close(x0_hat, x0)
    torch.testing.assert_close(eps_hat, eps)


def test_diffuse_forward_reaches_the_target_marginal():
    """Noising x_{t_from} to t_to must give alpha_to x0 + sigma_to * (unit-variance noise)."""
    schedule = FlowMatchSchedule(3.0)
    generator = torch.Generator().manual_seed(1)
    n = 200_000
    x0 = torch.full((n, 1), 2.0, dtype=torch.float64)
    t_from, t_to = torch.full((n,), 249), torch.full((n,), 700)
    x_from = add_noise(schedule, x0, torch.randn(n, 1, generator=generator, dtype=torch.float64), t_from)
    x_to = diffuse_forward(schedule, x_from, t_from, t_to, torch.randn(n, 1, generator=generator, dtype=torch.float64))
    alpha, sigma = schedule.coefficients(700)
    assert x_to.mean().item() == pytest.approx(2.0 * alpha.item(), abs=4e-3)
    assert x_to.std().item() == pytest.approx(sigma.item(), rel=5e-3)
    # From the clean sample (t = -1) the transition is plain noising.
    z = torch.randn(3, 4, generator=generator, dtype=torch.float64)
    clean = torch.randn(3, 4, generator=generator, dtype=torch.float64)
    t = torch.tensor([5, 500, 979])
    torch.testing.assert_close(diffuse_forward(schedule, clean, torch.full((3,), -1), t, z), add_noise(schedule, clean, z, t))
