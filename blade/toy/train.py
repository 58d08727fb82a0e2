"""Train the toy teacher from scratch: first its VAE, then transformer and text encoder together.

Phase 1 trains ``AutoencoderKLWan`` to reconstruct procedural clips from the posterior mean: MSE
with the object's pixels weighted 10 times the background's, plus a small KL term. It then measures the per-channel
latent mean and standard deviation, which go into the VAE config as ``latents_mean`` /
``latents_std``, as in a real Wan folder.

Phase 2 trains the transformer and the text encoder with the rectified-flow (flow-matching)
objective Wan uses. The noisy input is ``x_t = (1 - sigma) x_0 + sigma * noise`` and the model
predicts ``noise - x_0``. Sigma is drawn uniformly, then shifted like
``FlowMatchEulerDiscreteScheduler(shift)``. With probability ``caption_dropout`` the prompt is the
empty prompt, which ``WanPipeline`` encodes as its default negative prompt for classifier-free
guidance. Training runs through the configured stages, small videos first, because the 3D RoPE
lets one set of weights run at any grid.

Every random draw at step ``s`` comes from a generator seeded by ``(config.seed, phase, s)``, so a
run resumed from a checkpoint takes exactly the steps an uninterrupted run would have taken.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from blade.io import atomic_write_json
from blade.toy.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from blade.toy.data import make_videos, to_vae_layout
from blade.toy.evaluate import score_vae_reconstruction
from blade.toy.prompts import BACKGROUND_RGB, heldout_prompts, train_prompts
from blade.toy.teacher import ToyTeacherConfig, build_pipeline, save_pipeline

logger = logging.getLogger(__name__)

CONFIG_FILE = "toy_teacher_config.json"  # the name load_config reads
_PHASE_SEED_OFFSET = {"vae": 1, "transformer": 2, "latent_stats": 3}


def step_generator(config: ToyTeacherConfig, phase: str, step: int) -> torch.Generator:
    """CPU generator for every draw of one training step, independent of what ran before."""
    return torch.Generator().manual_seed(config.seed * 1_000_003 + _PHASE_SEED_OFFSET[phase] * 100_003 + step)


def learning_rate(base_lr: float, step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up to ``base_lr`` over ``warmup`` steps, then cosine decay to ``min_ratio * base_lr``."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base_lr * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def stage_at(config: ToyTeacherConfig, step: int):
    """Return the transformer ``TrainStage`` that global transformer step ``step`` belongs to."""
    for stage in config.stages:
        if step < stage.steps:
            return stage
        step -= stage.steps
    raise ValueError(f"step {step} is past the last stage ({config.transformer_steps} transformer steps)")


def _vae_clip_size(config: ToyTeacherConfig, step: int) -> tuple[int, int, int, int]:
    """(batch, frames, height, width) of VAE step ``step``.

    Steps alternate between half-size and full-size frames, so the VAE sees objects at every scale
    the transformer stages use. Clips have 13 or 9 frames: the first frame plus three or two 4-frame
    chunks, so every chunk after the second reads a causal-convolution cache written by a chunk
    before it, as in a 33-frame video. A VAE trained on 5-frame clips alone reconstructed those
    clips with the right colours but lost colour from the third chunk of longer clips on.
    """
    if step % 2 == 0:
        return config.vae_batch_size, 13, config.height // 2, config.width // 2
    return max(1, config.vae_batch_size // 2), 9, config.height, config.width


def decode_unclamped(vae, latents: torch.Tensor) -> torch.Tensor:
    """Decode ``[B, z, T, H, W]`` latents with ``vae`` without the final clamp to [-1, 1].

    ``AutoencoderKLWan.decode`` clamps its output, and a clamp passes no gradient to pixels outside
    [-1, 1]. Trained through it, the VAE pushed every pixel below -1 and stopped learning. A
    forward hook on the decoder collects its per-frame outputs, which are the unclamped pixels.

    Returns:
        ``[B, C, T_out, H_out, W_out]``, equal to ``vae.decode(latents).sample`` where that lies
        inside (-1, 1).
    """
    chunks: list[torch.Tensor] = []
    handle = vae.decoder.register_forward_hook(lambda module, args, output: chunks.append(output))
    try:
        vae.decode(latents)
    finally:
        handle.remove()
    return torch.cat(chunks, dim=2)


def vae_loss(vae, videos: torch.Tensor, kl_weight: float, foreground_weight: float = 10.0) -> torch.Tensor:
    """Return the foreground-weighted MSE of the reconstruction from the posterior mean, plus ``kl_weight`` times the KL term.

    The decoder reads the posterior mean, not a sample, because transformer training encodes clips
    with ``latent_dist.mode()``. With sampled latents the small VAE also learned colour so slowly
    that after 1,500 steps it still decoded red and blue as the same colour. The KL term only keeps
    the latent scale bounded.

    Args:
        vae: the ``AutoencoderKLWan`` being trained.
        videos: ``[B, C, T, H, W]`` in [-1, 1].
        kl_weight: weight of the KL divergence to a standard normal, per latent element.
        foreground_weight: weight of pixels that differ from the black background. The object
            covers about 10% of a frame, and with equal weights the VAE first learns to output
            an empty black frame, a minimum it leaves only slowly.
    """
    posterior = vae.encode(videos).latent_dist
    reconstruction = decode_unclamped(vae, posterior.mean)
    background = torch.tensor(BACKGROUND_RGB).view(1, 3, 1, 1, 1) * 2.0 - 1.0
    foreground = ((videos - background).norm(dim=1, keepdim=True) > 0.1).to(videos.dtype)  # [B, 1, T, H, W]
    weight = (1.0 + (foreground_weight - 1.0) * foreground).expand_as(videos)
    reconstruction_loss = (weight * (reconstruction - videos).pow(2)).sum() / weight.sum()
    # KL to a standard normal per latent element; diffusers' kl() sums image dimensions only.
    kl = 0.5 * (posterior.mean.pow(2) + posterior.var - 1.0 - posterior.logvar).mean()
    return reconstruction_loss + kl_weight * kl


@torch.no_grad()
def latent_statistics(vae, config: ToyTeacherConfig, num_clips: int = 32) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of ``vae`` latents (posterior mode) of full-size clips."""
    generator = step_generator(config, "latent_stats", 0)
    prompts = [train_prompts()[i] for i in torch.randint(0, 84, (num_clips,), generator=generator).tolist()]
    videos = make_videos(prompts, config.num_frames, config.height, config.width, generator=generator)
    latents = torch.cat([vae.encode(to_vae_layout(v.unsqueeze(0))).latent_dist.mode() for v in videos])
    per_channel = latents.transpose(0, 1).reshape(config.latent_channels, -1)  # [C, B*T*H*W]
    return per_channel.mean(dim=1).tolist(), per_channel.std(dim=1).tolist()


def encode_latents(vae, videos: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """``[B, T, H, W, C]`` videos in [-1, 1] -> normalised latents ``[B, z, T', H/2, W/2]``."""
    with torch.no_grad():
        latents = vae.encode(to_vae_layout(videos)).latent_dist.mode()
    shape = (1, -1, 1, 1, 1)
    return (latents - torch.tensor(mean).view(shape)) / torch.tensor(std).view(shape)


def flow_matching_loss(pipeline, latents: torch.Tensor, texts: list[str], config: ToyTeacherConfig, generator) -> torch.Tensor:
    """Rectified-flow MSE of the transformer's velocity on ``latents`` conditioned on ``texts``.

    Args:
        pipeline: the toy ``WanPipeline``; its text encoder runs with gradients.
        latents: ``[B, z, T, H, W]`` normalised clean latents.
        texts: B prompts; an empty string is the unconditional prompt.
        config: supplies ``shift`` and ``text_len``.
        generator: CPU generator for sigma and noise.
    """
    batch = latents.shape[0]
    u = torch.rand(batch, generator=generator)
    sigma = config.shift * u / (1.0 + (config.shift - 1.0) * u)  # the scheduler's shifted sigma
    noise = torch.randn(latents.shape, generator=generator)
    s = sigma.view(-1, 1, 1, 1, 1)
    noisy = (1.0 - s) * latents + s * noise
    prompt_embeds, _ = pipeline.encode_prompt(
        prompt=texts, do_classifier_free_guidance=False, max_sequence_length=config.text_len
    )
    prediction = pipeline.transformer(
        hidden_states=noisy, timestep=sigma * 1000.0, encoder_hidden_states=prompt_embeds, return_dict=False
    )[0]
    return F.mse_loss(prediction, noise - latents)


class _Progress:
    """Loss averaging, periodic log lines with s/step and ETA, and a JSON-lines loss log."""

    def __init__(self, run_dir: Path, phase: str, start: int, total: int, log_every: int):
        self.run_dir, self.phase, self.total, self.log_every = run_dir, phase, total, log_every
        self.bar = tqdm(total=total, initial=start, desc=f"toy teacher {phase}", unit="step", dynamic_ncols=True)
        self.losses: list[torch.Tensor] = []
        self.window_start = time.perf_counter()

    def update(self, step: int, loss: torch.Tensor, extra: dict) -> None:
        self.losses.append(loss.detach())
        self.bar.update(1)
        if (step + 1) % self.log_every and step + 1 != self.total:
            return
        mean_loss = torch.stack(self.losses).mean().item()  # one sync per log line, not per step
        seconds = (time.perf_counter() - self.window_start) / len(self.losses)
        eta_min = seconds * (self.total - step - 1) / 60.0
        self.bar.set_postfix(loss=f"{mean_loss:.4f}", s_per_step=f"{seconds:.2f}")
        logger.info(
            "%s step %d/%d loss %.4f %.2f s/step eta %.0f min %s",
            self.phase, step + 1, self.total, mean_loss, seconds, eta_min,
            " ".join(f"{k}={v}" for k, v in extra.items()),
        )
        record = {"phase": self.phase, "step": step + 1, "loss": mean_loss, "s_per_step": seconds, **extra}
        with open(self.run_dir / "train_log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        self.losses.clear()
        self.window_start = time.perf_counter()

    def close(self) -> None:
        self.bar.close()


def _prepare_run_dir(run_dir: Path, config: ToyTeacherConfig) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / CONFIG_FILE
    if config_path.is_file():
        # Read through from_dict, so a field added later with a default matches a run that predates it.
        saved = ToyTeacherConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8")))
        if saved != config:
            raise ValueError(
                f"{run_dir} contains a run with a different config ({config_path}); "
                "pass the same config to resume, or choose a new run folder"
            )
    else:
        atomic_write_json(config_path, config.to_dict())


def train_teacher(
    config: ToyTeacherConfig,
    run_dir: str | os.PathLike,
    export_dir: str | os.PathLike | None = None,
    stop_after: int | None = None,
):
    """Train (or resume) the toy teacher in ``run_dir`` and optionally export the pipeline folder.

    Args:
        config: the recipe; it is written to ``run_dir`` and a resume with another config raises.
        run_dir: folder for ``checkpoints/``, ``latest.json``, ``train_log.jsonl`` and the config.
            After a resume, the loss log repeats the lines logged after the last checkpoint.
        export_dir: where to save the finished diffusers folder (``save_pipeline``); None skips it.
        stop_after: stop after this many global steps (VAE steps count first), checkpointing before
            returning; used to simulate an interruption. None trains to the end.

    Returns:
        The trained ``WanPipeline`` (partially trained when ``stop_after`` stopped it).
    """
    run_dir = Path(run_dir)
    _prepare_run_dir(run_dir, config)
    pipeline = build_pipeline(config)
    models = {"vae": pipeline.vae, "transformer": pipeline.transformer, "text_encoder": pipeline.text_encoder}
    total_steps = config.vae_steps + config.transformer_steps
    checkpoint = latest_checkpoint(run_dir)
    state = {"phase": "vae", "step": 0}
    if checkpoint is not None:
        state = _load_run_checkpoint(checkpoint, pipeline)
        logger.info("resuming %s from %s (step %d of %d)", run_dir, checkpoint.name, state["step"], total_steps)
    limit = total_steps if stop_after is None else min(total_steps, stop_after)

    if state["step"] < config.vae_steps:
        state = _train_vae(pipeline, config, run_dir, state, checkpoint, limit)
    if "latents_mean" not in state and state["step"] >= config.vae_steps:
        pipeline.vae.eval()
        mean, std = latent_statistics(pipeline.vae, config)
        state = dict(state, phase="transformer", latents_mean=mean, latents_std=std)
        logger.info("VAE latent mean %s std %s", [round(m, 3) for m in mean], [round(s, 3) for s in std])
        reconstruction = score_vae_reconstruction(
            pipeline.vae, heldout_prompts(), config.num_frames, config.height, config.width, seed=config.seed
        )["aggregate"]
        state["vae_reconstruction"] = reconstruction
        logger.info("ToyBench on VAE reconstructions of held-out prompts: %s", reconstruction)
        save_checkpoint(run_dir, state["step"], models, None, state, config.to_dict())
    if "latents_mean" in state:
        pipeline.vae.register_to_config(latents_mean=state["latents_mean"], latents_std=state["latents_std"])
    if config.vae_steps <= state["step"] < limit:
        state = _train_transformer(pipeline, config, run_dir, state, checkpoint, limit)
    if state["step"] >= total_steps and export_dir is not None:
        save_pipeline(pipeline, config, export_dir)
    return pipeline


def _train_vae(pipeline, config, run_dir, state, checkpoint, limit):
    vae = pipeline.vae
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr, weight_decay=0.0)
    if checkpoint is not None and state.get("phase") == "vae":
        load_checkpoint(checkpoint, {}, optimizer)
    vae.train()
    end = min(limit, config.vae_steps)
    progress = _Progress(run_dir, "vae", state["step"], config.vae_steps, config.log_every)
    prompts = train_prompts()
    for step in range(state["step"], end):
        generator = step_generator(config, "vae", step)
        batch, frames, height, width = _vae_clip_size(config, step)
        chosen = [prompts[i] for i in torch.randint(0, len(prompts), (batch,), generator=generator).tolist()]
        videos = to_vae_layout(make_videos(chosen, frames, height, width, generator=generator))
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config.vae_lr, step, config.vae_steps, 50, config.min_lr_ratio)
        loss = vae_loss(vae, videos, config.vae_kl_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        progress.update(step, loss, {"size": f"{frames}x{height}x{width}"})
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == end:
            state = {"phase": "vae", "step": step + 1}
            save_checkpoint(run_dir, step + 1, {"vae": vae}, optimizer, state, config.to_dict())
    progress.close()
    vae.eval()
    return state


def _train_transformer(pipeline, config, run_dir, state, checkpoint, limit):
    transformer, text_encoder, vae = pipeline.transformer, pipeline.text_encoder, pipeline.vae
    parameters = list(transformer.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, betas=(0.9, 0.99), weight_decay=0.01)
    if checkpoint is not None and state.get("phase") == "transformer" and state["step"] > config.vae_steps:
        load_checkpoint(checkpoint, {}, optimizer)
    transformer.train()
    text_encoder.train()
    vae.eval()
    vae.requires_grad_(False)
    models = {"vae": vae, "transformer": transformer, "text_encoder": text_encoder}

    prompts = train_prompts()
    first = state["step"] - config.vae_steps
    end = limit - config.vae_steps
    progress = _Progress(run_dir, "transformer", first, config.transformer_steps, config.log_every)
    for step in range(first, end):
        stage = stage_at(config, step)
        generator = step_generator(config, "transformer", step)
        chosen = [prompts[i] for i in torch.randint(0, len(prompts), (stage.batch_size,), generator=generator).tolist()]
        videos = make_videos(chosen, stage.num_frames, stage.height, stage.width, generator=generator)
        dropped = (torch.rand(stage.batch_size, generator=generator) < config.caption_dropout).tolist()
        texts = ["" if drop else p.text for p, drop in zip(chosen, dropped)]
        latents = encode_latents(vae, videos, state["latents_mean"], state["latents_std"])

        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config.lr, step, config.transformer_steps, config.warmup_steps, config.min_lr_ratio)
        loss = flow_matching_loss(pipeline, latents, texts, config, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()

        size = f"{stage.num_frames}x{stage.height}x{stage.width}"
        progress.update(step, loss, {"size": size, "lr": f"{optimizer.param_groups[0]['lr']:.2e}"})
        global_step = config.vae_steps + step + 1
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == end:
            state = dict(state, phase="transformer", step=global_step)
            save_checkpoint(run_dir, global_step, models, optimizer, state, config.to_dict())
    progress.close()
    transformer.eval()
    text_encoder.eval()
    return state


def load_run_pipeline(run_dir: str | os.PathLike):
    """Build the toy pipeline from ``run_dir``'s config and its latest checkpoint (partial or final).

    Returns:
        ``(pipeline, state)``; the pipeline is in eval mode with the VAE latent statistics applied.
    """
    run_dir = Path(run_dir)
    config = ToyTeacherConfig.from_dict(json.loads((run_dir / CONFIG_FILE).read_text(encoding="utf-8")))
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        raise FileNotFoundError(f"{run_dir} has no checkpoint yet (no {run_dir / 'latest.json'})")
    pipeline = build_pipeline(config)
    state = _load_run_checkpoint(checkpoint, pipeline)
    if "latents_mean" in state:
        pipeline.vae.register_to_config(latents_mean=state["latents_mean"], latents_std=state["latents_std"])
    for module in (pipeline.vae, pipeline.transformer, pipeline.text_encoder):
        module.eval()
    return pipeline, state


def _load_run_checkpoint(checkpoint: Path, pipeline) -> dict:
    """Load a checkpoint's weights into ``pipeline``. Checkpoints of the VAE phase contain the VAE only."""
    state = json.loads((checkpoint / "state.json").read_text(encoding="utf-8"))
    names = ["vae"] if state["phase"] == "vae" else ["vae", "transformer", "text_encoder"]
    return load_checkpoint(checkpoint, {name: getattr(pipeline, name) for name in names})
