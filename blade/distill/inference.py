"""Sample with a distilled student exactly as it was trained: the same K-step stochastic sampler.

The authors trained Wan's student on one sampler and timestep set and ran it with another at
inference; here both go through `student_rollout`, so the timesteps (t_start of each segment) and the
eta-mixed re-noising are the ones the student learned.
"""

from __future__ import annotations

import torch

from blade.distill.models import transformer_call_for
from blade.distill.sampling import standard_normal, student_rollout
from blade.distill.schedules import schedule_from_scheduler


@torch.no_grad()
def student_latents(
    pipeline,
    prompt_embeds: torch.Tensor,
    latent_shape,
    *,
    num_steps: int = 8,
    eta: float = 0.9,
    generator: torch.Generator,
) -> torch.Tensor:
    """Generate clean latents with the pipeline's transformer (its LoRA and ASA as loaded) in K steps, no CFG.

    Args:
        pipeline: a Wan or CogVideoX pipeline, typically patched with `apply_blade` and carrying the
            student LoRA (`load_lora`).
        prompt_embeds: [B, L, D] prompt embeddings (e.g. from `load_embeddings`).
        latent_shape: (C, F, H, W) of one latent.
        num_steps: K, as trained.
        eta: noise mixing, as trained.
        generator: generator on the transformer's device; draws the start noise, then the mixing noise.

    Returns:
        [B, C, F, H, W] float32 latents (decode with the pipeline's VAE; CogVideoX wants [B, F, C, H, W]).
    """
    transformer = pipeline.transformer
    device = transformer.device
    schedule = schedule_from_scheduler(pipeline.scheduler)
    call = transformer_call_for(pipeline, tuple(latent_shape))
    embeds = prompt_embeds.to(device, transformer.dtype)
    noise = standard_normal(torch.empty((embeds.shape[0], *latent_shape), device=device), generator)

    def denoise(latents, t):
        timestep = schedule.model_timestep(t).to(device)
        output = call(transformer, latents.to(transformer.dtype), timestep, embeds).float()
        return schedule.to_x0_eps(output, latents, t)

    return student_rollout(denoise, noise, schedule, num_steps, eta, generator).states[-1]
