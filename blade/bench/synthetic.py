"""Synthetic video attention inputs with 3D structure, for comparing block masks.

SYNTHETIC: no transformer trained on video-like data exists in this repository yet, so these q, k, v
are built to show the patterns reported for video diffusion transformers rather than captured from
one. The logit between a query and a key is, per head, a sum of three parts:

- locality: a Gaussian kernel of the 3D distance between the two tokens (random Fourier features of
  the (t, h, w) position, so q . k = beta_local * exp(-|dt|^2 / 2 l_t^2 - ...) up to sampling noise),
  with per-head length scales: some heads look along time, some in space, some both;
- content: tokens of the same "object" (a blob drifting across frames) attend to each other wherever
  they are, through a shared cluster embedding;
- sinks: a few key tokens that every query weights highly, as attention sinks do.

A random orthogonal rotation per head hides which dimensions carry which part; it leaves q . k
unchanged. Values mix an object embedding, a smooth positional field and noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

# (l_t, l_h, l_w, beta_local, beta_content, beta_sink) in logit units, cycled over heads
_HEAD_PROFILES = (
    (1.0, 1.5, 1.5, 9.0, 2.0, 3.0),  # sharp 3D-local
    (5.0, 1.2, 1.2, 8.0, 2.0, 2.0),  # temporal: same place, many frames
    (0.6, 4.0, 4.0, 7.0, 2.0, 2.0),  # spatial: wide within a frame
    (2.0, 3.0, 3.0, 4.0, 6.0, 2.0),  # content: the same object anywhere
    (1.5, 2.0, 2.0, 6.0, 3.0, 6.0),  # sink-heavy
    (3.0, 2.5, 2.5, 8.0, 4.0, 3.0),  # mixed
)


@dataclass(frozen=True)
class SyntheticAttentionSpec:
    """Sizes of the synthetic generator; defaults give realistic concentration at D = 64.

    Attributes:
        fourier_features: random Fourier frequencies of the locality kernel (2 dims each).
        content_dims: dims of the object embedding.
        objects: number of drifting objects (content clusters).
        sinks: number of sink key tokens.
        noise: standard deviation of the per-token logit noise.
    """

    fourier_features: int = 16
    content_dims: int = 20
    objects: int = 6
    sinks: int = 4
    noise: float = 0.3


def _object_labels(grid: tuple[int, int, int], objects: int, generator: torch.Generator) -> torch.Tensor:
    """Assign each raster token to the nearest of `objects` blob centres drifting over time, int64 [N]."""
    frames, height, width = grid
    start = torch.rand(objects, 2, generator=generator) * torch.tensor([height, width])  # [O, 2]
    velocity = (torch.rand(objects, 2, generator=generator) - 0.5) * 2.0  # tokens per frame
    radius = 1.0 + torch.rand(objects, generator=generator) * 2.0  # anisotropic blob size weights
    t = torch.arange(frames).double()
    centres = start[None].double() + t[:, None, None] * velocity[None].double()  # [T, O, 2]
    hh, ww = torch.meshgrid(torch.arange(height).double(), torch.arange(width).double(), indexing="ij")
    points = torch.stack([hh, ww], dim=-1).reshape(1, height * width, 1, 2)  # [1, HW, 1, 2]
    distance = (points - centres[:, None]).norm(dim=-1) / radius.double()  # [T, HW, O]
    return distance.argmin(dim=-1).reshape(-1)  # [T * H * W]


def synthetic_video_attention(
    grid_thw: Sequence[int],
    *,
    heads: int,
    head_dim: int = 64,
    batch: int = 1,
    generator: torch.Generator,
    spec: SyntheticAttentionSpec | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Build structured q, k, v for a T x H x W video in raster order (t, h, w with w fastest).

    Args:
        grid_thw: (T, H, W) token grid.
        heads: number of heads; head profiles cycle through local, temporal, spatial, content,
            sink-heavy and mixed.
        head_dim: D, at least 2 * fourier_features + content_dims + 1.
        batch: B; every batch element draws its own objects, sinks and noise.
        generator: CPU torch.Generator for every draw.
        spec: generator sizes (`SyntheticAttentionSpec()` by default).

    Returns:
        q, k, v: float32 [B, H, T*H*W, D], scaled so that SDPA's 1 / sqrt(D) gives the logits above.
    """
    spec = SyntheticAttentionSpec() if spec is None else spec
    grid = tuple(int(n) for n in grid_thw)
    needed = 2 * spec.fourier_features + spec.content_dims + 1
    if head_dim < needed:
        raise ValueError(f"head_dim must be at least {needed} for spec {spec}, got {head_dim}")
    frames, height, width = grid
    tokens = frames * height * width
    raster = torch.arange(tokens)
    position = torch.stack(
        [raster // (height * width), (raster // width) % height, raster % width], dim=1
    ).float()  # [N, 3]

    qs, ks, vs = [], [], []
    for _ in range(batch):
        labels = _object_labels(grid, spec.objects, generator)  # [N]
        sink_tokens = torch.randperm(tokens, generator=generator)[: spec.sinks]
        q_heads, k_heads, v_heads = [], [], []
        for head in range(heads):
            l_t, l_h, l_w, beta_local, beta_content, beta_sink = _HEAD_PROFILES[head % len(_HEAD_PROFILES)]
            frequencies = torch.randn(3, spec.fourier_features, generator=generator)
            frequencies = frequencies / torch.tensor([l_t, l_h, l_w])[:, None]  # [3, F]
            phase = position @ frequencies  # [N, F]
            local = torch.cat([phase.cos(), phase.sin()], dim=1) / math.sqrt(spec.fourier_features)  # [N, 2F]

            embeddings = torch.randn(spec.objects, spec.content_dims, generator=generator)
            embeddings = embeddings / embeddings.norm(dim=1, keepdim=True)
            content = embeddings[labels]  # [N, C]

            sink_key = torch.zeros(tokens, 1)
            sink_key[sink_tokens] = beta_sink
            rest = head_dim - needed
            q_parts = [local * math.sqrt(beta_local), content * math.sqrt(beta_content), torch.ones(tokens, 1)]
            k_parts = [local * math.sqrt(beta_local), content * math.sqrt(beta_content), sink_key]
            q_raw = torch.cat(q_parts + [torch.zeros(tokens, rest)], dim=1)  # [N, D]
            k_raw = torch.cat(k_parts + [torch.zeros(tokens, rest)], dim=1)
            q_raw = q_raw + spec.noise * torch.randn(tokens, head_dim, generator=generator) / head_dim**0.25
            k_raw = k_raw + spec.noise * torch.randn(tokens, head_dim, generator=generator) / head_dim**0.25

            rotation, _ = torch.linalg.qr(torch.randn(head_dim, head_dim, generator=generator))
            # SDPA divides logits by sqrt(D); pre-scale so q . k / sqrt(D) equals the designed logit
            q_heads.append(q_raw @ rotation * head_dim**0.25)
            k_heads.append(k_raw @ rotation * head_dim**0.25)

            field = torch.randn(3, head_dim, generator=generator) / torch.tensor([4.0, 6.0, 6.0])[:, None]
            object_values = torch.randn(spec.objects, head_dim, generator=generator)
            v_heads.append(
                object_values[labels] + torch.sin(position @ field) + 0.5 * torch.randn(tokens, head_dim, generator=generator)
            )
        qs.append(torch.stack(q_heads))
        ks.append(torch.stack(k_heads))
        vs.append(torch.stack(v_heads))
    return torch.stack(qs), torch.stack(ks), torch.stack(vs)
