"""Segment bounds, timestep draws and the stochastic rollout against hand-computed values."""

import pytest
import torch

from blade.distill.sampling import (
    mix_noise,
    sample_segment,
    sample_timesteps,
    segment_bounds,
    student_rollout,
)
from blade.distill.schedules import FlowMatchSchedule


def test_segment_bounds_for_eight_and_three_steps():
    assert [segment_bounds(k, 8) for k in range(8)] == [
        (999, 874), (874, 749), (749, 624), (624, 499), (499, 374), (374, 249), (249, 124), (124, -1)
    ]
    # K = 3 does not divide 1000: floor(1000 i / 3) - 1.
    assert [segment_bounds(k, 3) for k in range(3)] == [(999, 665), (665, 332), (332, -1)]
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        segment_bounds(8, 8)
    with pytest.raises(ValueError, match="positive int"):
        segment_bounds(0, 0)


def test_segment_and_timestep_draws_cover_their_ranges():
    generator = torch.Generator().manual_seed(0)
    segments = {sample_segment(8, generator) for _ in range(400)}
    assert segments == set(range(8))
    t = sample_timesteps(124, 20_000, generator)
    assert t.dtype == torch.int64
    assert t.shape == (20_000,)
    assert t.min().item() == 124
    assert t.max().item() == 979
    t_clean = sample_timesteps(-1, 20_000, generator)
    assert t_clean.min().item() == 0
    with pytest.raises(ValueError, match="t_max"):
        sample_timesteps(980, 2, generator)


def test_draws_follow_the_generator_only():
    a = sample_timesteps(10, 5, torch.Generator().manual_seed(3))
    torch.manual_seed(123)
    b = sample_timesteps(10, 5, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_mix_noise_hand_values():
    eps = torch.full((2, 3), 2.0)
    z = torch.randn((2, 3), generator=torch.Generator().manual_seed(5))
    mixed = mix_noise(eps, 0.6, torch.Generator().manual_seed(5))
    torch.testing.assert_close(mixed, 0.6 * 2.0 + 0.8 * z)
    torch.testing.assert_close(mix_noise(eps, 1.0, torch.Generator()), eps)
    with pytest.raises(ValueError, match=r"eta must lie in \[0, 1\]"):
        mix_noise(eps, 1.5, torch.Generator())


def test_rollout_with_a_known_denoiser_matches_a_hand_written_loop():
    """A denoiser that predicts x0 = 0.5 x_t and eps = x_t; the loop is re-derived step by step."""
    schedule = FlowMatchSchedule(3.0)
    calls = []

    def denoise(x_t, t):
        calls.append(t.clone())
        return 0.5 * x_t, x_t

    noise = torch.randn(2, 4, 3, 5, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    rollout = student_rollout(denoise, noise, schedule, 4, 0.9, torch.Generator().manual_seed(1))
    assert [int(t[0]) for t in calls] == [999, 749, 499, 249]
    assert all(t.shape == (2,) for t in calls)

    generator = torch.Generator().manual_seed(1)
    x = noise
    for k, t_end in enumerate([749, 499, 249, -1]):
        assert torch.equal(rollout.states[k], x)
        x0, eps = 0.5 * x, x
        z = torch.randn(x.shape, generator=generator).double()
        sigma = schedule.coefficients(t_end)[1].item()
        x = (1 - sigma) * x0 + sigma * (0.9 * eps + (1 - 0.81) ** 0.5 * z)
        torch.testing.assert_close(rollout.x0[k], x0)
    torch.testing.assert_close(rollout.states[4], rollout.x0[3])  # the last segment ends clean
    torch.testing.assert_close(rollout.states[4], x)

    partial = student_rollout(denoise, noise, schedule, 4, 0.9, torch.Generator().manual_seed(1), last_segment=1)
    assert len(partial.x0) == 2
    assert len(partial.states) == 3
    torch.testing.assert_close(partial.states[2], rollout.states[2])
