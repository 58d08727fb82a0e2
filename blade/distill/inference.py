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


@torch.no_grad()
def decode_latents(pipeline, latents: torch.Tensor):
    """Decode [B, C, F, H, W] latents with the pipeline's VAE into videos, as its `__call__` would.

    Args:
        pipeline: a Wan or CogVideoX pipeline with its VAE.
        latents: [B, C, F, H, W] clean latents (e.g. from `student_latents`).

    Returns:
        float32 numpy array [B, frames, height, width, 3] in [0, 1].
    """
    vae = pipeline.vae
    latents = latents.to(vae.device, vae.dtype)
    if type(pipeline).__name__ == "CogVideoXPipeline":
        video = pipeline.decode_latents(latents.transpose(1, 2))  # wants [B, F, C, H, W]
    else:
        channels = latents.shape[1]
        mean = torch.tensor(vae.config.latents_mean, device=latents.device, dtype=latents.dtype).view(1, channels, 1, 1, 1)
        std = torch.tensor(vae.config.latents_std, device=latents.device, dtype=latents.dtype).view(1, channels, 1, 1, 1)
        video = vae.decode(latents * std + mean, return_dict=False)[0]
    return pipeline.video_processor.postprocess_video(video, output_type="np")
