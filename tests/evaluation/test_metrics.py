import math

import numpy as np
import pytest
import torch

from blade.evaluation import psnr, ssim


def _random_video(seed, shape=(2, 13, 15, 3)):
    return np.random.default_rng(seed).random(shape)


def test_psnr_of_uniform_offset_by_hand():
    reference = np.full((3, 5, 7, 3), 0.5)
    test = reference + 0.1
    # MSE = 0.01 on a [0, 1] scale, so PSNR = 10 log10(1 / 0.01) = 20 dB
    assert psnr(reference, test) == pytest.approx(20.0, abs=1e-9)


def test_psnr_of_single_pixel_error_by_hand():
    reference = np.zeros((2, 4, 5, 3), dtype=np.uint8)
    test = reference.copy()
    test[1, 2, 3, 0] = 255
    # one of 120 values is off by the full range: MSE = 1 / 120
    assert psnr(reference, test) == pytest.approx(10 * math.log10(120), abs=1e-9)
    per_frame = psnr(reference, test, per_frame=True)
    assert per_frame[0] == math.inf
    assert per_frame[1] == pytest.approx(10 * math.log10(60), abs=1e-9)


def test_psnr_uint8_equals_float_scale():
    reference = np.random.default_rng(0).integers(0, 256, (2, 6, 7, 3), dtype=np.uint8)
    test = np.random.default_rng(1).integers(0, 256, (2, 6, 7, 3), dtype=np.uint8)
    expected = psnr(reference.astype(np.float64) / 255, test.astype(np.float64) / 255)
    assert psnr(reference, test) == pytest.approx(expected, abs=1e-12)
    assert psnr(torch.from_numpy(reference), torch.from_numpy(test)) == pytest.approx(expected, abs=1e-12)


def test_psnr_identical_is_inf():
    video = _random_video(0)
    assert psnr(video, video) == math.inf


def _gaussian_weights(size, sigma):
    offsets = np.arange(size) - (size - 1) / 2
    one_d = np.exp(-(offsets**2) / (2 * sigma**2))
    weights = np.outer(one_d, one_d)
    return weights / weights.sum()


def _ssim_direct(reference, test, window_size=11, sigma=1.5):
    """SSIM written from the formula of Wang et al. 2004 (eqs. 13-14), one window position at a time."""
    weights = _gaussian_weights(window_size, sigma)
    c1, c2 = (0.01 * 1.0) ** 2, (0.03 * 1.0) ** 2
    frames, height, width, channels = reference.shape
    per_frame = []
    for t in range(frames):
        channel_means = []
        for c in range(channels):
            x_image, y_image = reference[t, :, :, c], test[t, :, :, c]
            values = []
            for i in range(height - window_size + 1):
                for j in range(width - window_size + 1):
                    x = x_image[i : i + window_size, j : j + window_size]
                    y = y_image[i : i + window_size, j : j + window_size]
                    mu_x, mu_y = (weights * x).sum(), (weights * y).sum()
                    var_x = (weights * (x - mu_x) ** 2).sum()
                    var_y = (weights * (y - mu_y) ** 2).sum()
                    cov = (weights * (x - mu_x) * (y - mu_y)).sum()
                    values.append(
                        ((2 * mu_x * mu_y + c1) * (2 * cov + c2))
                        / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
                    )
            channel_means.append(np.mean(values))
        per_frame.append(np.mean(channel_means))
    return np.array(per_frame)


@pytest.mark.parametrize(("shape", "window_size", "sigma"), [((2, 13, 15, 3), 11, 1.5), ((3, 9, 10, 1), 7, 1.0)])
def test_ssim_matches_direct_formula(shape, window_size, sigma):
    reference = _random_video(0, shape)
    # a correlated distortion, so SSIM lands far from both 0 and 1
    test = np.clip(0.7 * reference + 0.3 * _random_video(1, shape), 0, 1)
    expected = _ssim_direct(reference, test, window_size, sigma)
    assert 0.2 < expected.mean() < 0.95

    got = ssim(reference, test, per_frame=True, window_size=window_size, sigma=sigma)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert ssim(reference, test, window_size=window_size, sigma=sigma) == pytest.approx(expected.mean(), abs=1e-12)


def test_ssim_identical_is_one_and_symmetric():
    reference = _random_video(2)
    test = np.clip(reference + 0.05 * _random_video(3), 0, 1)
    assert ssim(reference, reference) == pytest.approx(1.0, abs=1e-12)
    assert ssim(reference, test) == pytest.approx(ssim(test, reference), abs=1e-12)
    assert ssim(reference, test) < 1.0


def test_ssim_uint8_equals_float_scale():
    reference = np.random.default_rng(4).integers(0, 256, (2, 12, 12, 3), dtype=np.uint8)
    test = np.random.default_rng(5).integers(0, 256, (2, 12, 12, 3), dtype=np.uint8)
    assert ssim(reference, test) == pytest.approx(ssim(reference / 255.0, test / 255.0), abs=1e-12)


@pytest.mark.parametrize(
    ("reference", "test", "kwargs", "error", "match"),
    [
        (np.zeros((2, 12, 12, 3)), np.zeros((2, 12, 13, 3)), {}, ValueError, r"same \[T, H, W, C\] shape"),
        (np.zeros((12, 12, 3)), np.zeros((12, 12, 3)), {}, ValueError, r"reference must be \[T, H, W, C\]"),
        (np.zeros((2, 12, 12, 3), np.int32), np.zeros((2, 12, 12, 3), np.int32), {}, TypeError, "dtype torch.int32"),
        (np.zeros((1, 8, 12, 3)), np.zeros((1, 8, 12, 3)), {}, ValueError, "smaller than the 11x11 SSIM window"),
        (np.zeros((1, 12, 12, 3)), np.zeros((1, 12, 12, 3)), {"window_size": 4}, ValueError, "odd positive"),
    ],
)
def test_ssim_rejects_bad_input(reference, test, kwargs, error, match):
    with pytest.raises(error, match=match):
        ssim(reference, test, **kwargs)
