import numpy as np
import pytest
import torch

from blade.toy.bench import frechet_distance, frechet_video_distance, score_videos, video_features
from blade.toy.data import VideoParams, make_videos, render_video, sample_params, to_uint8
from blade.toy.prompts import COLOURS, SHAPES, ToyPrompt, all_prompts

# Awkward on purpose: odd frame count, odd and unequal height and width.
SIZE = (13, 41, 47)


@pytest.fixture(scope="module")
def prompts():
    return all_prompts()[::3]  # 32 prompts covering every colour, shape and direction


@pytest.fixture(scope="module")
def real(prompts):
    return make_videos(prompts, *SIZE, seed=5)


def test_real_videos_score_perfectly(prompts, real):
    aggregate = score_videos(real, prompts)["aggregate"]
    assert aggregate["colour_accuracy"] == 1.0
    assert aggregate["shape_accuracy"] == 1.0
    assert aggregate["motion_accuracy"] == 1.0
    assert aggregate["temporal_consistency"] >= 0.98


@pytest.mark.parametrize("size, stride", [((17, 32, 32), 1), ((33, 64, 64), 4)])
def test_real_videos_at_teacher_sizes(size, stride):
    prompts = all_prompts()[::stride]
    aggregate = score_videos(make_videos(prompts, *size, seed=1), prompts)["aggregate"]
    assert aggregate["attribute_accuracy"] == 1.0
    assert aggregate["temporal_consistency"] >= 0.98


def _swap(prompt: ToyPrompt, **change) -> ToyPrompt:
    values = {"colour": prompt.colour, "shape": prompt.shape, "direction": prompt.direction, **change}
    return ToyPrompt(**values)


def test_wrong_colour_and_shape_are_caught(prompts):
    colours = list(COLOURS)
    wrong_colour = [_swap(p, colour=colours[(colours.index(p.colour) + 1) % 6]) for p in prompts]
    videos = make_videos(wrong_colour, *SIZE, seed=5)
    aggregate = score_videos(videos, prompts)["aggregate"]
    assert aggregate["colour_accuracy"] == 0.0
    assert aggregate["shape_accuracy"] == 1.0
    assert aggregate["motion_accuracy"] == 1.0

    wrong_shape = [_swap(p, shape=SHAPES[(SHAPES.index(p.shape) + 1) % 4]) for p in prompts]
    aggregate = score_videos(make_videos(wrong_shape, *SIZE, seed=5), prompts)["aggregate"]
    assert aggregate["shape_accuracy"] == 0.0
    assert aggregate["colour_accuracy"] == 1.0


def test_reversed_motion_is_caught(prompts, real):
    aggregate = score_videos(real.flip(1), prompts)["aggregate"]
    assert aggregate["motion_accuracy"] == 0.0
    assert aggregate["colour_accuracy"] == 1.0
    assert aggregate["temporal_consistency"] >= 0.98  # reversed motion is still smooth


def test_shuffled_frames_are_inconsistent(prompts, real):
    order = torch.randperm(SIZE[0], generator=torch.Generator().manual_seed(0))
    aggregate = score_videos(real[:, order], prompts)["aggregate"]
    assert aggregate["temporal_consistency"] < 0.5
    assert aggregate["colour_accuracy"] == 1.0


def test_static_object_has_no_motion():
    prompt = ToyPrompt("green", "square", "up")
    params = VideoParams(prompt, half_size=0.15, start=(0.5, 0.5), end=(0.5, 0.5))
    video = render_video(params, 9, 32, 32).unsqueeze(0)
    score = score_videos(video, [prompt])["per_video"][0]
    assert score["direction"] == "none"
    assert not score["motion_correct"]
    assert score["colour_correct"] and score["shape_correct"]


def test_noise_scores_low(prompts, real):
    generator = torch.Generator().manual_seed(0)
    pure = torch.rand(real.shape, generator=generator) * 2 - 1
    aggregate = score_videos(pure, prompts)["aggregate"]
    assert aggregate["attribute_accuracy"] < 0.2
    assert aggregate["temporal_consistency"] < 0.1
    noisy = (real + 0.7 * torch.randn(real.shape, generator=generator)).clamp(-1, 1)
    assert score_videos(noisy, prompts)["aggregate"]["attribute_accuracy"] < 0.4


def test_frechet_distance_matches_independent_formula():
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(50, 4, generator=generator, dtype=torch.float64) @ torch.randn(4, 4, generator=generator, dtype=torch.float64)
    b = torch.randn(60, 4, generator=generator, dtype=torch.float64) * 2 + 1
    # Independent route: eigenvalues of S_a S_b (real and non-negative for PSD S_a, S_b).
    cov_a, cov_b = np.cov(a.numpy().T), np.cov(b.numpy().T)
    cross = np.sqrt(np.clip(np.linalg.eigvals(cov_a @ cov_b).real, 0, None)).sum()
    expected = ((a.mean(0) - b.mean(0)) ** 2).sum().item() + np.trace(cov_a) + np.trace(cov_b) - 2 * cross
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    # One feature: (m_a - m_b)^2 + (sd_a - sd_b)^2.
    x, y = a[:, :1], b[:, :1]
    closed = (x.mean() - y.mean()) ** 2 + (x.std() - y.std()) ** 2
    assert frechet_distance(x, y) == pytest.approx(closed.item(), rel=1e-6)


def test_frechet_separates_real_from_corrupted(prompts, real):
    """The distance compares distributions without prompts, so only corruptions that change the
    distribution count: reversing motion or permuting colours over a balanced prompt set does not."""
    prompts, real = prompts[::2], real[::2]
    real_to_real = frechet_video_distance(make_videos(prompts, *SIZE, seed=6), real)
    shuffled = real[:, torch.randperm(SIZE[0], generator=torch.Generator().manual_seed(1))]
    static = real[:, :1].expand_as(real)
    faded = real * 0.5 - 0.3  # darker, greyer colours on a lighter background
    assert frechet_video_distance(shuffled, real) > 3 * real_to_real
    assert frechet_video_distance(static, real) > 3 * real_to_real
    assert frechet_video_distance(faded, real) > 3 * real_to_real
    assert frechet_video_distance(torch.rand_like(real) * 2 - 1, real) > 10 * real_to_real
    assert video_features(real[0]).shape == (14,)


def test_bad_inputs_raise(prompts, real):
    with pytest.raises(TypeError, match="from_uint8"):
        score_videos(to_uint8(real), prompts)
    with pytest.raises(ValueError, match=r"must be in \[-1, 1\]"):
        score_videos((real + 1) * 127.5, prompts)
    with pytest.raises(ValueError, match=r"\[B, T, H, W, 3\]"):
        score_videos(real[0], prompts)
    with pytest.raises(ValueError, match="one entry per video"):
        score_videos(real, prompts[:-1])
    with pytest.raises(ValueError, match="N >= 2"):
        frechet_distance(torch.zeros(1, 3), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="does not follow the toy grammar"):
        score_videos(real[:1], ["a red thing"])
