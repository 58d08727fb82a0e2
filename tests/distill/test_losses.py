"""The TDM losses against hand computations and float64 references, forward and backward."""

import math

import pytest
import torch

from blade.distill.losses import (
    FakeLossGuard,
    classifier_free_guidance,
    fake_score_loss,
    pseudo_huber_constant,
    student_loss,
)


def test_fake_loss_hand_value_and_velocity_equivalence():
    x0_fake = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    x0_target = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    sigma = torch.tensor([0.5, 0.25])
    # ((1/0.5)^2 + (2/0.5)^2 + (1/0.25)^2 * 2) / 4 = (4 + 16 + 32) / 4 = 13
    assert fake_score_loss(x0_fake, x0_target, sigma).item() == pytest.approx(13.0)

    # Flow matching: the same number as MSE(v_fake, (x_t - x0_target) / sigma).
    generator = torch.Generator().manual_seed(0)
    x_t = torch.randn(2, 3, 5, 7, 9, generator=generator, dtype=torch.float64)
    v_fake = torch.randn(x_t.shape, generator=generator, dtype=torch.float64, requires_grad=True)
    x0_target = torch.randn(x_t.shape, generator=generator, dtype=torch.float64)
    sigma = torch.tensor([0.3, 0.9], dtype=torch.float64)
    s = sigma.reshape(2, 1, 1, 1, 1)
    reference = (v_fake - (x_t - x0_target) / s).square().mean()
    ours = fake_score_loss(x_t - s * v_fake, x0_target, sigma)
    torch.testing.assert_close(ours.double(), reference, rtol=1e-5, atol=0)
    (grad_ours,) = torch.autograd.grad(ours, v_fake)
    (grad_ref,) = torch.autograd.grad(reference, v_fake)
    torch.testing.assert_close(grad_ours, grad_ref, rtol=1e-5, atol=1e-9)


def test_fake_loss_regulariser():
    x0_fake = torch.tensor([[2.0]])
    sigma = torch.tensor([1.0])
    loss = fake_score_loss(x0_fake, torch.tensor([[1.0]]), sigma, x0_teacher=torch.tensor([[0.0]]), lambda_reg=0.5)
    assert loss.item() == pytest.approx(1.0 + 0.5 * 4.0)
    with pytest.raises(ValueError, match="x0_teacher"):
        fake_score_loss(x0_fake, x0_fake, sigma, lambda_reg=0.5)


def test_pseudo_huber_constant_multiplies():
    """The authors' CogVideoX code divided by the element count, making c ~ 7e-9 (an L1 loss)."""
    assert pseudo_huber_constant(64 * 64 * 4) == pytest.approx(1e-3)
    assert pseudo_huber_constant(16 * 21 * 60 * 104) == pytest.approx(1e-3 * math.sqrt(16 * 21 * 60 * 104) / 128)


def test_student_loss_value_and_gradient_against_float64_reference():
    generator = torch.Generator().manual_seed(0)
    shape = (2, 4, 3, 5, 7)
    x0_student = torch.randn(shape, generator=generator, requires_grad=True)
    x0_teacher = torch.randn(shape, generator=generator)
    x0_fake = x0_teacher + 1e-3 * torch.randn(shape, generator=generator)  # near c, where Huber bends
    loss = student_loss(x0_student, x0_teacher, x0_fake)
    (grad,) = torch.autograd.grad(loss, x0_student)

    c = 1e-3 * math.sqrt(4 * 3 * 5 * 7) / 128
    difference = (x0_fake - x0_teacher).double()
    reference = ((difference.square() + c * c).sqrt() - c).mean()
    torch.testing.assert_close(loss.double(), reference, rtol=1e-4, atol=1e-10)
    # d loss / d x0_student = (d / sqrt(d^2 + c^2)) / numel with d = x0_fake - x0_teacher.
    reference_grad = difference / (difference.square() + c * c).sqrt() / difference.numel()
    torch.testing.assert_close(grad.double(), reference_grad, rtol=1e-4, atol=1e-9)


def test_student_loss_checks_shapes():
    with pytest.raises(ValueError, match="share one shape"):
        student_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, 3))


def test_cfg_hand_value():
    assert classifier_free_guidance(torch.tensor(3.0), torch.tensor(1.0), 5.0).item() == 11.0


def test_guard_skips_and_counts():
    guard = FakeLossGuard(2.0)
    assert guard.keep(torch.tensor(1.99))
    assert not guard.keep(torch.tensor(2.5))
    assert not guard.keep(torch.tensor(float("nan")))
    assert guard.skipped == 2
    assert FakeLossGuard(None).keep(torch.tensor(1e9))
    with pytest.raises(ValueError, match="threshold"):
        FakeLossGuard(0.0)
