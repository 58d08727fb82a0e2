"""ToyBench: judge what generated toy videos show, from pixels, against their prompts.

Per video (see ``measure.py`` for the per-frame geometry):

- colour: the mean foreground colour over all frames with an object, nearest palette entry.
- shape: each frame's 3 x 3 bounding-box occupancy, nearest ideal-shape prototype; majority vote.
- motion: a least-squares line through the centroid trajectory. Its displacement over the clip must
  be at least ``MIN_TRAVEL`` of the frame. The direction is the nearest of left, right, up and down.
- temporal consistency: the share of consecutive frame pairs in which the object is present in both,
  its area changes by less than 25%, its colour by less than ``MAX_COLOUR_STEP`` and its centroid
  moves by at most twice the fitted per-frame step plus 0.02 of the frame.

Aggregate scores are means over videos; ``attribute_accuracy`` averages colour, shape and motion
accuracy. ``frechet_distance`` compares the distributions of per-video feature vectors
(``video_features``) of generated and real procedural videos, like FID/FVD but on hand-made features.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from blade.toy.measure import measure_frames, nearest_colour, nearest_shape, palette
from blade.toy.prompts import DIRECTIONS, SHAPES, ToyPrompt, parse_prompt

MIN_TRAVEL = 0.1
MAX_AREA_CHANGE = 0.25
MAX_COLOUR_STEP = 0.3
NONE = "none"  # predicted label when nothing readable is found


@dataclass
class VideoScore:
    """ToyBench result of one video: predicted labels, per-attribute correctness and consistency."""

    prompt: str
    colour: str
    shape: str
    direction: str
    colour_correct: bool
    shape_correct: bool
    motion_correct: bool
    temporal_consistency: float
    present_fraction: float

    @property
    def attribute_accuracy(self) -> float:
        return (self.colour_correct + self.shape_correct + self.motion_correct) / 3.0


def _check_videos(videos) -> torch.Tensor:
    if isinstance(videos, np.ndarray):
        videos = torch.from_numpy(videos)
    if not torch.is_tensor(videos):
        raise TypeError(f"videos must be a torch.Tensor or numpy array, got {type(videos).__name__}")
    if videos.dtype == torch.uint8:
        raise TypeError("videos must be float in [-1, 1], got uint8; convert with blade.toy.from_uint8(videos)")
    if videos.ndim != 5 or videos.shape[-1] != 3:
        raise ValueError(f"videos must be [B, T, H, W, 3], got shape {tuple(videos.shape)}")
    if videos.shape[1] < 2:
        raise ValueError(f"videos need at least 2 frames to judge motion, got T = {videos.shape[1]}")
    videos = videos.detach().to("cpu", torch.float32)
    low, high = videos.min().item(), videos.max().item()
    if low < -1.01 or high > 1.01:
        raise ValueError(
            f"videos must be in [-1, 1], got values in [{low:.3f}, {high:.3f}]; "
            "map pipeline frames in [0, 1] with 2 * frames - 1"
        )
    return videos


def _fit_line(values: torch.Tensor, times: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares slope and residual RMS of ``values [N, 2]`` against ``times [N]``."""
    t = times - times.mean()
    slope = (t.unsqueeze(1) * (values - values.mean(dim=0))).sum(dim=0) / (t * t).sum().clamp(min=1e-12)
    fitted = values.mean(dim=0) + t.unsqueeze(1) * slope
    return slope, (values - fitted).pow(2).sum(dim=1).mean().sqrt()


def score_video(video: torch.Tensor, prompt: ToyPrompt | str) -> VideoScore:
    """Score one ``[T, H, W, 3]`` float video in [-1, 1] against its prompt."""
    prompt = parse_prompt(prompt) if isinstance(prompt, str) else prompt
    m = measure_frames(video)
    frames = m.present.nonzero().flatten()
    num_frames = video.shape[0]
    colour = shape = direction = NONE
    consistency = 0.0
    if len(frames) >= 2:
        colour_names, _ = palette()
        colour = colour_names[nearest_colour(m.colour[frames].mean(dim=0, keepdim=True))[0].item()]
        votes = torch.bincount(nearest_shape(m.occupancy[frames]), minlength=len(SHAPES))
        shape = SHAPES[votes.argmax().item()]
        slope, _ = _fit_line(m.centroid[frames], frames.to(torch.float32))
        travel = slope * (num_frames - 1)  # displacement over the clip, frame units
        if travel.norm() >= MIN_TRAVEL:
            names = list(DIRECTIONS)
            unit = torch.tensor([DIRECTIONS[n] for n in names])
            direction = names[(unit @ travel).argmax().item()]
        consistency = _temporal_consistency(m, slope.norm().item())
    return VideoScore(
        prompt=prompt.text,
        colour=colour,
        shape=shape,
        direction=direction,
        colour_correct=colour == prompt.colour,
        shape_correct=shape == prompt.shape,
        motion_correct=direction == prompt.direction,
        temporal_consistency=consistency,
        present_fraction=m.present.float().mean().item(),
    )


def _temporal_consistency(m, step_per_frame: float) -> float:
    both = m.present[1:] & m.present[:-1]  # [T-1]
    area_ratio = m.area[1:] / m.area[:-1].clamp(min=1e-12)
    area_ok = (area_ratio - 1.0).abs() < MAX_AREA_CHANGE
    colour_ok = (m.colour[1:] - m.colour[:-1]).norm(dim=1) < MAX_COLOUR_STEP
    jump = (m.centroid[1:] - m.centroid[:-1]).norm(dim=1)
    jump_ok = jump <= 2.0 * step_per_frame + 0.02
    # NaN comparisons are False, so frames without an object count as inconsistent.
    return (both & area_ok & colour_ok & jump_ok).float().mean().item()


def score_videos(videos, prompts: list[ToyPrompt | str]) -> dict:
    """Score a batch of generated videos against their prompts.

    Args:
        videos: float ``[B, T, H, W, 3]`` in [-1, 1] (torch or numpy), B = len(prompts).
        prompts: the prompt each video was generated from.

    Returns:
        ``{"per_video": [VideoScore as dict, ...], "aggregate": {...}}`` where the aggregate contains
        ``colour_accuracy``, ``shape_accuracy``, ``motion_accuracy``, ``attribute_accuracy``,
        ``temporal_consistency`` and ``num_videos``.
    """
    videos = _check_videos(videos)
    if len(prompts) != videos.shape[0]:
        raise ValueError(f"prompts must have one entry per video: {videos.shape[0]} videos, {len(prompts)} prompts")
    scores = [score_video(v, p) for v, p in zip(videos, prompts)]
    return {"per_video": [dict(asdict(s), attribute_accuracy=s.attribute_accuracy) for s in scores],
            "aggregate": aggregate(scores)}


def aggregate(scores: list[VideoScore]) -> dict:
    """Mean accuracies and consistency over ``scores``."""
    n = len(scores)
    result = {
        "colour_accuracy": sum(s.colour_correct for s in scores) / n,
        "shape_accuracy": sum(s.shape_correct for s in scores) / n,
        "motion_accuracy": sum(s.motion_correct for s in scores) / n,
        "temporal_consistency": sum(s.temporal_consistency for s in scores) / n,
        "num_videos": n,
    }
    result["attribute_accuracy"] = (
        result["colour_accuracy"] + result["shape_accuracy"] + result["motion_accuracy"]
    ) / 3.0
    return result


FEATURE_NAMES = (
    "colour_r", "colour_g", "colour_b", "colour_std", "area_mean", "area_std", "fill_ratio",
    "travel_x", "travel_y", "centre_x", "centre_y", "path_residual", "background_residual", "present_fraction",
)


def video_features(video: torch.Tensor) -> torch.Tensor:
    """Feature vector ``[len(FEATURE_NAMES)]`` of one ``[T, H, W, 3]`` video for the Fréchet distance.

    Frames without an object contribute nothing. A video with fewer than two frames with an object
    gets zeros for the object features, which places it far from any real video.
    """
    m = measure_frames(video)
    frames = m.present.nonzero().flatten()
    features = torch.zeros(len(FEATURE_NAMES))
    features[12] = m.background_residual.mean()
    features[13] = m.present.float().mean()
    if len(frames) < 2:
        return features
    colours = m.colour[frames]
    slope, residual = _fit_line(m.centroid[frames], frames.to(torch.float32))
    features[0:3] = colours.mean(dim=0)
    features[3] = colours.std(dim=0).norm()
    features[4] = m.area[frames].mean()
    features[5] = m.area[frames].std()
    features[6] = m.fill_ratio[frames].mean()
    features[7:9] = slope * (video.shape[0] - 1)
    features[9:11] = m.centroid[frames].mean(dim=0)
    features[11] = residual
    return features


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets.

    ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))``, computed in float64. The trace of the
    matrix square root uses ``tr((S_a S_b)^(1/2)) = tr((A S_b A)^(1/2))`` with ``A = S_a^(1/2)``,
    which only needs symmetric eigendecompositions.

    Args:
        features_a, features_b: ``[N, F]`` and ``[M, F]`` with N, M >= 2.
    """
    for name, f in (("features_a", features_a), ("features_b", features_b)):
        if f.ndim != 2 or f.shape[0] < 2:
            raise ValueError(f"{name} must be [N, F] with N >= 2, got shape {tuple(f.shape)}")
    if features_a.shape[1] != features_b.shape[1]:
        raise ValueError(f"feature sizes differ: {features_a.shape[1]} vs {features_b.shape[1]}")
    a, b = features_a.to(torch.float64), features_b.to(torch.float64)
    mean_a, mean_b = a.mean(dim=0), b.mean(dim=0)
    cov_a = torch.atleast_2d(torch.cov(a.T))  # [F, F], also for F = 1
    cov_b = torch.atleast_2d(torch.cov(b.T))
    root_a = _psd_sqrt(cov_a)
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp(min=0.0).sqrt().sum()
    distance = (mean_a - mean_b).pow(2).sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2.0 * cross
    return max(distance.item(), 0.0)


def _psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return vectors @ torch.diag(values.clamp(min=0.0).sqrt()) @ vectors.T


def frechet_video_distance(generated, reference) -> float:
    """Fréchet distance between ``video_features`` of two float ``[B, T, H, W, 3]`` video batches."""
    generated, reference = _check_videos(generated), _check_videos(reference)
    features_g = torch.stack([video_features(v) for v in generated])
    features_r = torch.stack([video_features(v) for v in reference])
    return frechet_distance(features_g, features_r)
