"""Per-frame measurements of the single object in a toy video, read from pixels.

Every measurement is plain geometry on a foreground mask: pixels farther than
``FOREGROUND_THRESHOLD`` (Euclidean RGB distance in [-1, 1] units) from the black background are
the object. The palette colours are at distance 2 to 2.83 from black, so the threshold of 0.8 keeps
anti-aliased edge pixels with coverage above 0.4 and rejects mild noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

from blade.toy.prompts import BACKGROUND_RGB, COLOURS, SHAPES

FOREGROUND_THRESHOLD = 0.8
# A frame whose foreground covers more than this share of the frame contains no single toy object
# (the largest real object, a square of half-size 0.18, covers 13%).
MAX_OBJECT_AREA = 0.35
MIN_OBJECT_PIXELS = 4
SHAPE_GRID = 3  # descriptor: occupancy of a 3 x 3 grid over the object's bounding box


@dataclass
class FrameMeasurements:
    """Measurements of a video's T frames (frame units: x to the right, y downwards, in [0, 1]).

    Attributes:
        present: bool ``[T]``, a plausible single object was found.
        area: float ``[T]``, anti-aliased object area as a share of the frame.
        centroid: float ``[T, 2]``, (x, y) of the foreground mask (NaN where absent).
        colour: float ``[T, 3]``, mean RGB of the object's interior in [-1, 1] (NaN where absent).
        occupancy: float ``[T, SHAPE_GRID**2]``, bounding-box grid occupancy (NaN where absent).
        fill_ratio: float ``[T]``, foreground pixels over bounding-box pixels (NaN where absent).
        background_residual: float ``[T]``, mean distance of background pixels to the background colour.
    """

    present: torch.Tensor
    area: torch.Tensor
    centroid: torch.Tensor
    colour: torch.Tensor
    occupancy: torch.Tensor
    fill_ratio: torch.Tensor
    background_residual: torch.Tensor


def palette() -> tuple[list[str], torch.Tensor]:
    """Colour names and their RGB values in [-1, 1], ``[len(COLOURS), 3]``."""
    names = list(COLOURS)
    return names, torch.tensor([COLOURS[n] for n in names]) * 2.0 - 1.0


def foreground_mask(video: torch.Tensor) -> torch.Tensor:
    """Bool ``[T, H, W]`` of pixels far from the background colour in a ``[T, H, W, 3]`` video."""
    background = torch.tensor(BACKGROUND_RGB, dtype=video.dtype) * 2.0 - 1.0
    return (video - background).norm(dim=-1) > FOREGROUND_THRESHOLD


def _occupancy(mask: torch.Tensor) -> tuple[torch.Tensor, float]:
    """3 x 3 bounding-box occupancy (flattened) and fill ratio of a non-empty ``[H, W]`` mask.

    Each pixel belongs to the grid cell that contains its centre, so cells never overlap and a
    cross's empty corners stay empty even when the object is only ten pixels wide.
    """
    rows = mask.any(dim=1).nonzero().flatten()
    cols = mask.any(dim=0).nonzero().flatten()
    crop = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].to(torch.float32)  # [h, w]
    h, w = crop.shape
    row_cell = ((torch.arange(h) + 0.5) * SHAPE_GRID / h).long()  # [h] in 0..2
    col_cell = ((torch.arange(w) + 0.5) * SHAPE_GRID / w).long()  # [w]
    cell = (row_cell.view(-1, 1) * SHAPE_GRID + col_cell.view(1, -1)).flatten()  # [h*w]
    filled = torch.zeros(SHAPE_GRID**2).index_add_(0, cell, crop.flatten())
    total = torch.zeros(SHAPE_GRID**2).index_add_(0, cell, torch.ones(h * w))
    return filled / total, crop.mean().item()


def _core_colour_and_area(video: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean colour of each frame's object interior ``[T, 3]`` and anti-aliased area ``[T]`` in pixels.

    The interior is the foreground pixels at least 80% as far from the background as the farthest
    one, so partly covered edge pixels do not dilute the colour. The area counts each pixel near the
    object by its estimated coverage (distance to background over the interior's distance), which
    stays nearly constant as a small object moves across the pixel grid.
    """
    background = torch.tensor(BACKGROUND_RGB, dtype=video.dtype) * 2.0 - 1.0
    distance = (video - background).norm(dim=-1)  # [T, H, W]
    peak = (distance * mask).flatten(1).max(dim=1).values.view(-1, 1, 1)  # [T, 1, 1]
    core = mask & (distance >= 0.8 * peak)
    core_count = core.flatten(1).sum(dim=1).clamp(min=1).unsqueeze(-1)
    colour = (video * core.unsqueeze(-1)).sum(dim=(1, 2)) / core_count  # [T, 3]
    interior_distance = (colour - background).norm(dim=-1).clamp(min=1e-6).view(-1, 1, 1)
    near = F.max_pool2d(mask.unsqueeze(1).float(), 3, stride=1, padding=1).squeeze(1) > 0  # mask grown by 1 px
    coverage = (distance / interior_distance).clamp(0.0, 1.0) * near
    return colour, coverage.flatten(1).sum(dim=1)


def measure_frames(video: torch.Tensor) -> FrameMeasurements:
    """Measure the object in every frame of one ``[T, H, W, 3]`` float video in [-1, 1]."""
    num_frames, height, width, _ = video.shape
    mask = foreground_mask(video)  # [T, H, W]
    counts = mask.flatten(1).sum(dim=1)  # [T]
    present = (counts >= MIN_OBJECT_PIXELS) & (counts <= MAX_OBJECT_AREA * height * width)

    ys = (torch.arange(height, dtype=torch.float32) + 0.5) / height
    xs = (torch.arange(width, dtype=torch.float32) + 0.5) / width
    weights = mask.to(torch.float32)
    denominator = counts.clamp(min=1).to(torch.float32)
    cx = (weights.sum(dim=1) * xs).sum(dim=1) / denominator  # [T]
    cy = (weights.sum(dim=2) * ys).sum(dim=1) / denominator
    centroid = torch.stack([cx, cy], dim=1)  # [T, 2]

    colour, soft_pixels = _core_colour_and_area(video, mask)
    background = torch.tensor(BACKGROUND_RGB) * 2.0 - 1.0
    background_pixels = (~mask).flatten(1).sum(dim=1).clamp(min=1)
    residual = ((video - background).norm(dim=-1) * (~mask)).flatten(1).sum(dim=1) / background_pixels

    occupancy = torch.full((num_frames, SHAPE_GRID**2), float("nan"))
    fill_ratio = torch.full((num_frames,), float("nan"))
    for t in present.nonzero().flatten().tolist():
        occupancy[t], fill_ratio[t] = _occupancy(mask[t])
    nan = torch.tensor(float("nan"))
    return FrameMeasurements(
        present=present,
        area=soft_pixels / (height * width),
        centroid=torch.where(present.unsqueeze(1), centroid, nan),
        colour=torch.where(present.unsqueeze(1), colour, nan),
        occupancy=occupancy,
        fill_ratio=fill_ratio,
        background_residual=residual,
    )


@lru_cache(maxsize=1)
def shape_prototypes() -> torch.Tensor:
    """Occupancy descriptors of the ideal shapes, ``[len(SHAPES), SHAPE_GRID**2]``.

    Rendered once at 96 x 96 pixels from the same geometry as the procedural data.
    """
    from blade.toy.data import VideoParams, render_video
    from blade.toy.prompts import ToyPrompt

    prototypes = []
    for shape in SHAPES:
        params = VideoParams(ToyPrompt("red", shape, "left"), half_size=0.3, start=(0.5, 0.5), end=(0.5, 0.5))
        frame = render_video(params, num_frames=2, height=96, width=96)[0]
        prototypes.append(_occupancy(foreground_mask(frame.unsqueeze(0))[0])[0])
    return torch.stack(prototypes)


def nearest_shape(occupancy: torch.Tensor) -> torch.Tensor:
    """Index into ``SHAPES`` of the nearest prototype for each ``[N, SHAPE_GRID**2]`` descriptor."""
    return torch.cdist(occupancy, shape_prototypes()).argmin(dim=1)


def nearest_colour(colour: torch.Tensor) -> torch.Tensor:
    """Index into ``palette()`` of the nearest palette entry for each ``[N, 3]`` colour."""
    return torch.cdist(colour, palette()[1]).argmin(dim=1)
