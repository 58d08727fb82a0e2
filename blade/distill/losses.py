"""The two TDM losses and the guard against abnormal fake-score losses.

Both losses reduce to float32 scalars averaged over every element of the batch. Shapes: samples are
[B, ...] (Wan latents [B, C, F, H, W]); per-sample noise levels are [B].
"""

from __future__ import annotations

import math

import torch

# Reference size of TDM's pseudo-Huber constant: a 64 x 64 x 4 latent.
_HUBER_REFERENCE_ELEMENTS = 64 * 64 * 4


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    values = values.to(device=like.device, dtype=torch.float32)
    return values.reshape(values.shape + (1,) * (like.ndim - values.ndim))  # [B, 1, ...]


def classifier_free_guidance(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Combine conditional and unconditional outputs: uncond + scale * (cond - uncond).

    Works on model outputs or on x0 predictions alike, since both are affine in the output.
    """
    return uncond + scale * (cond - uncond)


def fake_score_loss(
    x0_fake: torch.Tensor,
    x0_target: torch.Tensor,
    noise_std: torch.Tensor,
    *,
    x0_teacher: torch.Tensor | None = None,
    lambda_reg: float = 0.0,
) -> torch.Tensor:
    """Denoising loss of the fake score on the student's samples, plus TDM's optional teacher term.

    loss = mean(((x0_fake - x0_target) / sigma_t)^2) + lambda_reg * mean(((x0_fake - x0_teacher) / sigma_t)^2)

    Dividing the x0 error by the noise std sigma_t makes one formula serve both teachers: for flow
    matching (x0 = x_t - sigma v) it equals MSE(v_fake, (x_t - x0_target) / sigma_t), the velocity
    loss of TDM's Wan code, and MSE(v_fake, v_teacher) for the regulariser; for v-prediction
    (sigma_t^2 = 1 - abar_t) it is CogVideoX's 1 / (1 - abar_t) weighted x0 error.

    Args:
        x0_fake: [B, ...] the fake score's clean prediction at x_t (carries gradient).
        x0_target: [B, ...] the student's clean prediction the noisy sample was made from (no gradient).
        noise_std: [B] sigma_t of each sample's timestep, > 0.
        x0_teacher: [B, ...] the teacher's clean prediction without CFG; needed when lambda_reg > 0.
        lambda_reg: weight of the teacher term (0 for Wan, 0.5 for CogVideoX).

    Returns:
        float32 scalar.
    """
    if x0_fake.shape != x0_target.shape:
        raise ValueError(f"x0_fake {tuple(x0_fake.shape)} and x0_target {tuple(x0_target.shape)} must match")
    if lambda_reg < 0:
        raise ValueError(f"lambda_reg must be >= 0, got {lambda_reg}")
    inverse_std = 1.0 / _per_sample(noise_std, x0_fake)
    loss = ((x0_fake.float() - x0_target.float()) * inverse_std).square().mean()
    if lambda_reg > 0:
        if x0_teacher is None:
            raise ValueError(f"lambda_reg={lambda_reg} needs x0_teacher (the teacher's prediction without CFG)")
        loss = loss + lambda_reg * ((x0_fake.float() - x0_teacher.float()) * inverse_std).square().mean()
    return loss


def pseudo_huber_constant(elements_per_sample: int, scale: float = 1e-3) -> float:
    """TDM's pseudo-Huber c = scale * sqrt(elements per sample) / sqrt(64 * 64 * 4).

    The authors' CogVideoX code divides by the element count instead of multiplying (c ~ 7e-9, which
    makes the loss L1); blade multiplies, as their Wan code does.

    Args:
        elements_per_sample: numel of one latent, e.g. C * F * H * W.
        scale: the leading factor.

    Returns:
        c as a float.
    """
    if elements_per_sample < 1:
        raise ValueError(f"elements_per_sample must be >= 1, got {elements_per_sample}")
    return scale * math.sqrt(elements_per_sample) / math.sqrt(_HUBER_REFERENCE_ELEMENTS)


def student_loss(
    x0_student: torch.Tensor,
    x0_teacher_cfg: torch.Tensor,
    x0_fake: torch.Tensor,
    *,
    huber_scale: float = 1e-3,
) -> torch.Tensor:
    """TDM's student loss: pseudo-Huber distance to x0* = stopgrad(x0_student + x0_teacher_cfg - x0_fake).

    loss = mean(sqrt((x0_student - x0*)^2 + c^2) - c) with c from `pseudo_huber_constant`. Its value
    depends only on x0_fake - x0_teacher_cfg; its gradient moves x0_student along x0_teacher_cfg - x0_fake.

    Args:
        x0_student: [B, ...] the student's clean prediction (carries gradient).
        x0_teacher_cfg: [B, ...] the guided teacher's clean prediction at the noised sample.
        x0_fake: [B, ...] the fake score's clean prediction at the same sample.
        huber_scale: leading factor of c.

    Returns:
        float32 scalar.
    """
    if not x0_student.shape == x0_teacher_cfg.shape == x0_fake.shape:
        raise ValueError(
            "x0_student, x0_teacher_cfg and x0_fake must share one shape, got "
            f"{tuple(x0_student.shape)}, {tuple(x0_teacher_cfg.shape)}, {tuple(x0_fake.shape)}"
        )
    c = pseudo_huber_constant(x0_student[0].numel(), huber_scale)
    student = x0_student.float()
    # x0_student - x0* written without the cancellation of x0_student - (x0_student + ...): the value is
    # exactly x0_fake - x0_teacher_cfg and the gradient reaches x0_student with weight 1.
    residual = (x0_fake.float() - x0_teacher_cfg.float()).detach()
    difference = residual + (student - student.detach())
    return (torch.sqrt(difference.square() + c * c) - c).mean()


class FakeLossGuard:
    """Skip fake-score updates whose loss exceeds a threshold, and count them.

    Attributes:
        threshold: losses above it are skipped (2.0 in TDM); None disables the guard.
        skipped: number of skipped updates so far.
    """

    def __init__(self, threshold: float | None = 2.0):
        if threshold is not None and not threshold > 0:
            raise ValueError(f"threshold must be > 0 or None (no guard), got {threshold}")
        self.threshold = threshold
        self.skipped = 0

    def keep(self, loss: torch.Tensor) -> bool:
        """Return whether to apply the update of `loss` (a scalar, already averaged over ranks), counting skips.

        NOTE: this reads one scalar to the host per fake update, a device sync: the decision to step
        or not has to be made on the host, identically on every rank.
        """
        if self.threshold is None:
            return True
        value = float(loss.detach())
        keep = math.isfinite(value) and value <= self.threshold
        if not keep:
            self.skipped += 1
        return keep
