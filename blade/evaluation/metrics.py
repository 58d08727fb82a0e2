"""Pixel metrics between two videos: PSNR and SSIM.

Videos are `[T, H, W, C]` (C = 3 or 1), either uint8 in [0, 255] or floating point in [0, 1];
both are compared on a [0, 1] scale (uint8 divided by 255), so a uint8 video and its float
version score as identical. Computation runs in float64 on the inputs' device.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

# The SSIM constants and window of Wang, Bovik, Sheikh, Simoncelli, "Image quality assessment: from
# error visibility to structural similarity", IEEE Transactions on Image Processing 13(4), 2004.
SSIM_K1 = 0.01
SSIM_K2 = 0.03
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


def _as_unit_video(video, name: str) -> torch.Tensor:
    if isinstance(video, np.ndarray):
        video = torch.from_numpy(np.ascontiguousarray(video))
    if not isinstance(video, torch.Tensor):
        raise TypeError(f"{name} must be a numpy array or torch tensor [T, H, W, C], got {type(video).__name__}")
    if video.ndim != 4 or video.shape[-1] not in (1, 3):
        raise ValueError(f"{name} must be [T, H, W, C] with C = 1 or 3, got shape {tuple(video.shape)}")
    if video.dtype == torch.uint8:
        return video.to(torch.float64) / 255.0
    if not video.is_floating_point():
        raise TypeError(f"{name} must be uint8 in [0, 255] or floating point in [0, 1], got dtype {video.dtype}")
    return video.to(torch.float64)


def _pair(reference, test) -> tuple[torch.Tensor, torch.Tensor]:
    reference = _as_unit_video(reference, "reference")
    test = _as_unit_video(test, "test").to(reference.device)
    if reference.shape != test.shape:
        raise ValueError(
            f"reference and test must have the same [T, H, W, C] shape, got {tuple(reference.shape)} and "
            f"{tuple(test.shape)}; generate both at the same size and frame count"
        )
    return reference, test


def psnr(reference, test, *, per_frame: bool = False):
    """Peak signal-to-noise ratio in dB on a [0, 1] scale: 10 log10(1 / MSE).

    Args:
        reference: `[T, H, W, C]` video, uint8 or float in [0, 1] (numpy or torch).
        test: a video of the same shape.
        per_frame: return one value per frame instead of one for the whole video.

    Returns:
        With `per_frame=False`, a float from the MSE over every pixel of the video (note: not the
        mean of per-frame PSNRs, which weights frames differently). With `per_frame=True`, a float64
        numpy array `[T]`. Identical inputs give `inf`.
    """
    reference, test = _pair(reference, test)
    squared_error = (reference - test).square()  # [T, H, W, C]
    if per_frame:
        mse = squared_error.flatten(1).mean(dim=1)  # [T]
        return (10.0 * torch.log10(1.0 / mse)).cpu().numpy()
    mse = float(squared_error.mean())
    return math.inf if mse == 0.0 else 10.0 * math.log10(1.0 / mse)


def _gaussian_window(size: int, sigma: float, device) -> torch.Tensor:
    offsets = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2.0
    weights = torch.exp(-(offsets**2) / (2.0 * sigma**2))
    return weights / weights.sum()  # [size]


def ssim(reference, test, *, per_frame: bool = False, window_size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA):
    """Structural similarity (SSIM) of Wang et al. 2004, averaged over frames and channels.

    For every position where a `window_size` x `window_size` Gaussian window (standard deviation
    `sigma`, weights summing to one) fits inside the frame, local weighted means, variances and the
    covariance give SSIM = ((2 mu_x mu_y + C1)(2 sigma_xy + C2)) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 +
    sigma_y^2 + C2)) with C1 = (0.01 L)^2, C2 = (0.03 L)^2 and L = 1. The index is the mean of
    that map, computed per channel (R, G and B separately, as in scikit-image's `channel_axis`) and
    then averaged. No padding: the map covers only the windows that fit inside the frame.

    Args:
        reference: `[T, H, W, C]` video, uint8 or float in [0, 1] (numpy or torch).
        test: a video of the same shape.
        per_frame: return one value per frame instead of their mean.
        window_size: side of the Gaussian window; H and W must be at least this.
        sigma: standard deviation of the Gaussian window in pixels.

    Returns:
        A float (mean over frames) or, with `per_frame=True`, a float64 numpy array `[T]`.
    """
    reference, test = _pair(reference, test)
    frames, height, width, channels = reference.shape
    if not isinstance(window_size, int) or window_size < 1 or window_size % 2 == 0:
        raise ValueError(f"window_size must be an odd positive int, got {window_size!r}")
    if height < window_size or width < window_size:
        raise ValueError(
            f"frames of {height}x{width} (H x W) are smaller than the {window_size}x{window_size} SSIM window; "
            "pass a smaller odd window_size"
        )
    constant_1 = (SSIM_K1 * 1.0) ** 2
    constant_2 = (SSIM_K2 * 1.0) ** 2

    weights = _gaussian_window(window_size, sigma, reference.device)
    vertical = weights.view(1, 1, window_size, 1)
    horizontal = weights.view(1, 1, 1, window_size)

    def local_mean(image):  # [N, 1, H, W] -> [N, 1, H - window + 1, W - window + 1]
        return F.conv2d(F.conv2d(image, vertical), horizontal)

    # Each (frame, channel) pair is an independent grey image.
    x = reference.permute(0, 3, 1, 2).reshape(frames * channels, 1, height, width)  # [T*C, 1, H, W]
    y = test.permute(0, 3, 1, 2).reshape(frames * channels, 1, height, width)  # [T*C, 1, H, W]
    mean_x, mean_y = local_mean(x), local_mean(y)
    variance_x = local_mean(x * x) - mean_x**2
    variance_y = local_mean(y * y) - mean_y**2
    covariance = local_mean(x * y) - mean_x * mean_y
    index_map = ((2 * mean_x * mean_y + constant_1) * (2 * covariance + constant_2)) / (
        (mean_x**2 + mean_y**2 + constant_1) * (variance_x + variance_y + constant_2)
    )
    per_frame_values = index_map.reshape(frames, -1).mean(dim=1)  # [T]
    if per_frame:
        return per_frame_values.cpu().numpy()
    return float(per_frame_values.mean())
