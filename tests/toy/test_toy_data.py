import math

import pytest
import torch

from blade.toy.data import (
    VideoParams,
    from_uint8,
    make_videos,
    render_video,
    sample_params,
    to_uint8,
    to_vae_layout,
)
from blade.toy.prompts import ToyPrompt, all_prompts


def test_same_seed_same_videos():
    prompts = all_prompts()[::7]
    a = make_videos(prompts, 9, 21, 19, seed=3)
    b = make_videos(prompts, 9, 21, 19, seed=3)
    c = make_videos(prompts, 9, 21, 19, seed=4)
    assert a.shape == (len(prompts), 9, 21, 19, 3)
    assert a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_generator_and_seed_agree():
    prompts = all_prompts()[:3]
    generator = torch.Generator().manual_seed(11)
    torch.testing.assert_close(make_videos(prompts, 5, 16, 16, generator=generator),
                               make_videos(prompts, 5, 16, 16, seed=11), rtol=0, atol=0)


def test_object_inside_frame_and_moving_as_prompted():
    generator = torch.Generator().manual_seed(0)
    for prompt in all_prompts():
        params = sample_params(prompt, generator)
        s = params.half_size
        for x, y in (params.start, params.end):
            assert s + 0.02 - 1e-9 <= x <= 1 - s - 0.02 + 1e-9
            assert s + 0.02 - 1e-9 <= y <= 1 - s - 0.02 + 1e-9
        dx, dy = params.end[0] - params.start[0], params.end[1] - params.start[1]
        travel = math.hypot(dx, dy)
        assert 0.30 - 1e-9 <= travel <= 0.45 + 1e-9
        expected = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}[prompt.direction]
        assert (dx / travel, dy / travel) == pytest.approx(expected)
        video = render_video(params, 3, 100, 100)  # the 0.02 margin is 2 pixels here
        border = torch.cat([video[:, 0], video[:, -1], video[:, :, 0], video[:, :, -1]], dim=1)
        assert torch.all(border == -1.0), prompt


@pytest.mark.parametrize(
    "shape, area_in_half_size_squared",
    [("circle", math.pi), ("square", 4.0), ("triangle", 2.0), ("cross", 20.0 / 9.0)],
)
def test_rendered_area_matches_geometry(shape, area_in_half_size_squared):
    """Coverage summed over pixels equals the analytic area: circle pi s^2, square (2s)^2, triangle with
    base and height 2s, cross of two 2s x 2s/3 bars minus their overlap."""
    s, size = 0.2, 120
    params = VideoParams(ToyPrompt("blue", shape, "left"), half_size=s, start=(0.5, 0.5), end=(0.5, 0.5))
    frame = render_video(params, 2, size, size)[0]
    coverage = (frame[..., 2] + 1.0) / 2.0  # blue channel: 0 on black, 1 on the shape
    measured = coverage.sum().item() / size**2
    assert measured == pytest.approx(area_in_half_size_squared * s * s, rel=0.02)


def test_layout_and_uint8_round_trip():
    videos = make_videos(all_prompts()[:2], 5, 12, 10, seed=0)
    assert to_vae_layout(videos).shape == (2, 3, 5, 12, 10)
    assert torch.equal(to_vae_layout(videos)[:, :, 1], videos[:, 1].permute(0, 3, 1, 2))
    restored = from_uint8(to_uint8(videos))
    assert (restored - videos).abs().max() <= 1.0 / 255.0 + 1e-6


def test_bad_arguments_raise():
    params = sample_params("a red circle moving left", torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="num_frames must be an int >= 2"):
        render_video(params, 1, 16, 16)
    with pytest.raises(ValueError, match="exactly one of seed and generator"):
        make_videos(["a red circle moving left"], 5, 16, 16)
    with pytest.raises(TypeError, match="must be uint8"):
        from_uint8(torch.zeros(2))
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        sample_params("a red circle moving left", 0)
