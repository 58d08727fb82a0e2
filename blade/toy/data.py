"""Seeded procedural videos: one coloured shape moving in a straight line on a black background.

Layout and range: a video is a float32 tensor ``[T, H, W, C]`` (C = 3, RGB) with values in
``[-1, 1]``, channels last like the frames a diffusers video pipeline returns, and ``-1`` is black.
Batches are ``[B, T, H, W, C]``. ``to_vae_layout`` gives the ``[B, C, T, H, W]`` layout that
``AutoencoderKLWan`` takes; ``to_uint8`` and ``from_uint8`` convert to and from 8-bit frames.

Geometry is stated in units of the frame side, so the same parameters render the same scene at any
resolution and frame count. The object keeps its size (half-extent 0.14-0.18 of the frame) and
travels 0.30-0.45 of the frame from the first frame to the last, always at least 0.02 of the
frame away from its edges.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from blade.toy.prompts import BACKGROUND_RGB, COLOURS, DIRECTIONS, SHAPES, ToyPrompt, parse_prompt

HALF_SIZE_RANGE = (0.14, 0.18)
TRAVEL_RANGE = (0.30, 0.45)
# Gap between the object and the frame edge, so no object is cut by the border.
EDGE_MARGIN = 0.02
# The cross's arms are a third of its extent wide, so a 3 x 3 grid over its bounding box has
# full edge-centre cells and empty corners.
CROSS_ARM_FRACTION = 1.0 / 3.0


@dataclass(frozen=True)
class VideoParams:
    """Scene parameters in frame units (x to the right, y downwards, both in [0, 1])."""

    prompt: ToyPrompt
    half_size: float
    start: tuple[float, float]  # object centre (x, y) in the first frame
    end: tuple[float, float]  # object centre (x, y) in the last frame


def sample_params(prompt: ToyPrompt | str, generator: torch.Generator) -> VideoParams:
    """Draw size, start and travel distance for ``prompt`` from ``generator`` (CPU generator).

    Exactly four uniform numbers are drawn per call, so a sequence of calls on one generator is
    reproducible and independent of the rendering resolution.
    """
    if isinstance(prompt, str):
        prompt = parse_prompt(prompt)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    u = torch.rand(4, generator=generator, dtype=torch.float64).tolist()
    half_size = HALF_SIZE_RANGE[0] + u[0] * (HALF_SIZE_RANGE[1] - HALF_SIZE_RANGE[0])
    travel = TRAVEL_RANGE[0] + u[1] * (TRAVEL_RANGE[1] - TRAVEL_RANGE[0])
    dx, dy = DIRECTIONS[prompt.direction]
    low, high = half_size + EDGE_MARGIN, 1.0 - half_size - EDGE_MARGIN  # centre range inside the frame
    # Along the motion axis the whole path must fit; across it any in-frame position works.
    along_start = low + u[2] * (high - low - travel)
    across = low + u[3] * (high - low)
    if dx != 0:
        start_x = along_start if dx > 0 else 1.0 - along_start
        start = (start_x, across)
    else:
        start_y = along_start if dy > 0 else 1.0 - along_start
        start = (across, start_y)
    end = (start[0] + dx * travel, start[1] + dy * travel)
    return VideoParams(prompt=prompt, half_size=half_size, start=start, end=end)


def _signed_distance(shape: str, x: torch.Tensor, y: torch.Tensor, half_size: float) -> torch.Tensor:
    """Signed distance (frame units, negative inside) of points relative to a shape centred at 0.

    Polygon distances are the max over edge half-planes: exact inside and near edges, which is all
    the one-pixel anti-aliasing needs.
    """
    s = half_size
    if shape == "circle":
        return torch.sqrt(x * x + y * y) - s
    if shape == "square":
        return torch.maximum(x.abs(), y.abs()) - s
    if shape == "triangle":
        # Apex at (0, -s), base from (-s, s) to (s, s). Side edges have slope 2 in |x| vs y.
        base = y - s
        side = (2.0 * x.abs() - y - s) / 5.0**0.5
        return torch.maximum(base, side)
    if shape == "cross":
        arm = s * CROSS_ARM_FRACTION
        horizontal = torch.maximum(x.abs() - s, y.abs() - arm)
        vertical = torch.maximum(x.abs() - arm, y.abs() - s)
        return torch.minimum(horizontal, vertical)
    raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")


def render_video(params: VideoParams, num_frames: int, height: int, width: int) -> torch.Tensor:
    """Render the scene described by ``params``.

    Args:
        params: scene from ``sample_params``.
        num_frames: T >= 2; the object moves linearly from ``params.start`` (frame 0) to
            ``params.end`` (frame T - 1).
        height, width: frame size in pixels, at least 8 each. Frame units are scaled by each side,
            so a non-square frame stretches the shape.

    Returns:
        float32 ``[T, H, W, 3]`` in [-1, 1] with a one-pixel anti-aliased edge.
    """
    for name, value, minimum in (("num_frames", num_frames, 2), ("height", height, 8), ("width", width, 8)):
        if not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    ys = (torch.arange(height, dtype=torch.float32) + 0.5) / height  # pixel centres, frame units
    xs = (torch.arange(width, dtype=torch.float32) + 0.5) / width
    t = torch.linspace(0.0, 1.0, num_frames)
    cx = params.start[0] + t * (params.end[0] - params.start[0])  # [T]
    cy = params.start[1] + t * (params.end[1] - params.start[1])
    x = xs.view(1, 1, width) - cx.view(-1, 1, 1)  # [T, 1, W]
    y = ys.view(1, height, 1) - cy.view(-1, 1, 1)  # [T, H, 1]
    x, y = torch.broadcast_tensors(x, y)  # [T, H, W]
    distance = _signed_distance(params.prompt.shape, x, y, params.half_size)
    pixel = 1.0 / min(height, width)
    coverage = (0.5 - distance / pixel).clamp(0.0, 1.0).unsqueeze(-1)  # [T, H, W, 1]
    colour = torch.tensor(COLOURS[params.prompt.colour]) * 2.0 - 1.0  # [3] in [-1, 1]
    background = torch.tensor(BACKGROUND_RGB) * 2.0 - 1.0
    return background + coverage * (colour - background)  # [T, H, W, 3]


def make_videos(
    prompts: list[ToyPrompt | str],
    num_frames: int,
    height: int,
    width: int,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Render one video per prompt, drawing scene parameters in order from one generator.

    Args:
        prompts: toy prompts or their texts.
        num_frames, height, width: see ``render_video``.
        seed: seeds a fresh CPU generator; give exactly one of ``seed`` and ``generator``.
        generator: an existing CPU generator, advanced by 4 draws per prompt.

    Returns:
        float32 ``[B, T, H, W, 3]`` in [-1, 1]; the same seed gives bit-identical videos.
    """
    if (seed is None) == (generator is None):
        raise ValueError("give exactly one of seed and generator, e.g. make_videos(prompts, 17, 64, 64, seed=0)")
    if generator is None:
        generator = torch.Generator().manual_seed(seed)
    if len(prompts) == 0:
        raise ValueError("prompts must be a non-empty list of toy prompts")
    videos = [render_video(sample_params(p, generator), num_frames, height, width) for p in prompts]
    return torch.stack(videos)


def to_vae_layout(videos: torch.Tensor) -> torch.Tensor:
    """``[B, T, H, W, C]`` -> ``[B, C, T, H, W]`` (the layout of ``AutoencoderKLWan``), same range."""
    if videos.ndim != 5:
        raise ValueError(f"videos must be [B, T, H, W, C], got shape {tuple(videos.shape)}")
    return videos.permute(0, 4, 1, 2, 3).contiguous()


def to_uint8(videos: torch.Tensor) -> torch.Tensor:
    """Map [-1, 1] floats to uint8 (0 is -1, 255 is 1), any layout."""
    return ((videos.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)


def from_uint8(videos: torch.Tensor) -> torch.Tensor:
    """Map uint8 frames to float32 in [-1, 1], any layout."""
    if videos.dtype != torch.uint8:
        raise TypeError(f"videos must be uint8, got {videos.dtype}")
    return videos.to(torch.float32) / 127.5 - 1.0
