"""The TDM training loop, driven by `accelerate` on one CPU, several processes or several GPUs.

One TDM iteration (Video-BLADE, arXiv 2508.10774, after TDM) per optimizer step:
  1. for each micro-batch, a no-grad student rollout far enough to reach two drawn segments;
  2. fake-score update on the first segment of every micro-batch (skipped when the loss, averaged
     over ranks, exceeds the guard's threshold);
  3. student update on the second segment, one student call with gradient per micro-batch.

The transformer is not wrapped in DistributedDataParallel: one base carries two adapters that are
trained in turn, while DDP assumes one fixed set of trainable parameters. Instead each adapter's
gradients are averaged over ranks explicitly (one flat all-reduce per optimizer step), which keeps
every rank's LoRA weights identical.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from blade.distill import checkpoints
from blade.distill.config import DistillConfig
from blade.distill.data import PromptBatches
from blade.distill.losses import FakeLossGuard, classifier_free_guidance, fake_score_loss, student_loss
from blade.distill.lora_files import save_lora
from blade.distill.models import ADAPTERS, DistillModels, transformer_call_for
from blade.distill.sampling import renoise, sample_segment, sample_timesteps, segment_bounds, standard_normal, student_rollout
from blade.distill.schedules import diffuse_forward, schedule_from_scheduler
from blade.distill.teacher import load_teacher

logger = logging.getLogger(__name__)

METRICS_NAME = "metrics.jsonl"
# Settings a resumed run may change; every other setting must match the checkpoint's.
_RESUMABLE_CHANGES = {"max_train_steps", "output_dir", "checkpoint_every", "keep_checkpoints", "log_every", "num_workers"}
# Distinct, fixed offsets so that the noise of different ranks never coincides.
_RANK_SEED_STRIDE = 1_000_003


@dataclass
class TrainResult:
    """Result of `train`.

    Attributes:
        output_dir: the run folder.
        lora_path: the student's `pytorch_lora_weights.safetensors`.
        metrics: one dict per optimizer step run by this call (main process; empty elsewhere).
        fake_skipped: fake-score updates skipped by the guard over the whole run.
        student_lora: the student adapter's final weights (peft state-dict keys, CPU), on every rank.
    """

    output_dir: Path
    lora_path: Path
    metrics: list[dict]
    fake_skipped: int
    student_lora: dict


class _Trainer:
    def __init__(self, config: DistillConfig, accelerator):
        self.config = config
        self.accelerator = accelerator
        self.device = accelerator.device
        pipeline = load_teacher(config.model, seed=config.model_seed)
        self.schedule = schedule_from_scheduler(pipeline.scheduler)
        transformer = pipeline.transformer.to(self.device)
        if config.gradient_checkpointing:
            transformer.enable_gradient_checkpointing()
        transformer.train()
        self.models = DistillModels(
            transformer,
            config.blade_config(),
            lora_rank=config.lora_rank,
            lora_alpha=config.lora_alpha,
            target_modules=config.lora_target_modules,
            seed=config.seed,
        )
        self.transformer = transformer
        self.call = transformer_call_for(pipeline, config.latent_shape)

        from blade.prompts import load_embeddings

        self.dataset = load_embeddings(config.embeddings)
        self.negative = self.dataset.negative_embeds.to(self.device, torch.float32)  # [L, D]
        self.batches = PromptBatches(
            self.dataset,
            config.batch_size,
            num_replicas=accelerator.num_processes,
            rank=accelerator.process_index,
            seed=config.seed,
            num_workers=config.num_workers,
        )

        from diffusers.optimization import get_constant_schedule, get_cosine_schedule_with_warmup

        def adamw(parameters, lr):
            return torch.optim.AdamW(
                parameters, lr=lr, betas=config.adam_betas, weight_decay=config.weight_decay, eps=config.adam_epsilon
            )

        self.optimizers = {
            "student": adamw(self.models.parameters("student"), config.student_lr),
            "fake": adamw(self.models.parameters("fake"), config.fake_lr),
        }
        self.schedulers = {
            "student": get_cosine_schedule_with_warmup(self.optimizers["student"], config.warmup_steps, config.max_train_steps),
            "fake": get_constant_schedule(self.optimizers["fake"]),
        }
        self.guard = FakeLossGuard(config.fake_loss_threshold)
        seed = config.seed + _RANK_SEED_STRIDE * (accelerator.process_index + 1)
        # Segment indices and timesteps are drawn on the CPU (they steer host-side control flow);
        # noise is drawn on the device.
        self.cpu_generator = torch.Generator().manual_seed(seed)
        self.noise_generator = torch.Generator(device=self.device).manual_seed(seed + 1)
        self.step = 0

    # model calls -------------------------------------------------------------------------------

    def _output(self, latents, t, embeds):
        timestep = self.schedule.model_timestep(t).to(self.device)
        with self.accelerator.autocast():
            return self.call(self.transformer, latents, timestep, embeds).float()

    def denoise(self, latents, t, embeds):
        """(x0_hat, eps_hat) of the current role at integer timesteps t [B] (CPU)."""
        return self.schedule.to_x0_eps(self._output(latents, t, embeds), latents, t)

    def teacher_x0(self, latents, t, embeds, guidance: bool):
        """The dense teacher's x0 prediction, with CFG against the stored negative embedding if `guidance`."""
        with torch.no_grad(), self.models.role("teacher"):
            if not guidance:
                return self.denoise(latents, t, embeds)[0]
            negative = self.negative.unsqueeze(0).expand_as(embeds)  # [B, L, D]
            output = self._output(torch.cat([latents, latents]), torch.cat([t, t]), torch.cat([embeds, negative]))
            cond, uncond = output.chunk(2)
            guided = classifier_free_guidance(cond, uncond, self.config.guidance_scale)
            return self.schedule.to_x0_eps(guided, latents, t)[0]

    # one optimizer step ------------------------------------------------------------------------

    def _plan(self, batch):
        config = self.config
        embeds = batch["prompt_embeds"].to(self.device, torch.float32)  # [B, L, D]
        batch_size = embeds.shape[0]
        shape = (batch_size, *config.latent_shape)  # [B, C, F, H, W]
        noise = standard_normal(torch.empty(shape, device=self.device), self.noise_generator)
        segments = {"fake": sample_segment(config.num_steps, self.cpu_generator),
                    "student": sample_segment(config.num_steps, self.cpu_generator)}
        with self.models.role("student"):
            rollout = student_rollout(
                lambda x, t: self.denoise(x, t, embeds),
                noise,
                self.schedule,
                config.num_steps,
                config.eta,
                self.noise_generator,
                last_segment=max(segments.values()),
            )
        return {"embeds": embeds, "segments": segments, "rollout": rollout}

    def _noisy_sample(self, x_end, t_end):
        batch_size = x_end.shape[0]
        t = sample_timesteps(t_end, batch_size, self.cpu_generator, self.config.t_max)
        t_from = torch.full((batch_size,), t_end, dtype=torch.int64)
        return diffuse_forward(self.schedule, x_end, t_from, t, standard_normal(x_end, self.noise_generator)), t

    def _fake_loss(self, plan):
        k = plan["segments"]["fake"]
        _, t_end = segment_bounds(k, self.config.num_steps, self.schedule.num_train_timesteps)
        x0_target = plan["rollout"].x0[k]
        # The rollout already re-noised segment k's prediction to t_end with eta-mixed noise.
        x_t, t = self._noisy_sample(plan["rollout"].states[k + 1], t_end)
        x0_teacher = None
        if self.config.lambda_reg > 0:
            x0_teacher = self.teacher_x0(x_t, t, plan["embeds"], guidance=False)
        x0_fake = self.denoise(x_t, t, plan["embeds"])[0]
        noise_std = self.schedule.coefficients(t)[1]
        return fake_score_loss(x0_fake, x0_target, noise_std, x0_teacher=x0_teacher, lambda_reg=self.config.lambda_reg)

    def _student_loss(self, plan):
        config = self.config
        k = plan["segments"]["student"]
        t_start, t_end = segment_bounds(k, config.num_steps, self.schedule.num_train_timesteps)
        x_start = plan["rollout"].states[k]
        batch_size = x_start.shape[0]
        x0_student, eps_student = self.denoise(x_start, torch.full((batch_size,), t_start, dtype=torch.int64), plan["embeds"])
        with torch.no_grad():
            x_end = renoise(self.schedule, x0_student.detach(), eps_student.detach(), t_end, config.eta, self.noise_generator)
            x_t, t = self._noisy_sample(x_end, t_end)
            x0_teacher = self.teacher_x0(x_t, t, plan["embeds"], guidance=True)
            with self.models.role("fake"):
                x0_fake = self.denoise(x_t, t, plan["embeds"])[0]
        return student_loss(x0_student, x0_teacher, x0_fake, huber_scale=config.huber_scale)

    def _average_gradients(self, parameters):
        if self.accelerator.num_processes == 1:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
        flat = self.accelerator.reduce(torch.cat([g.reshape(-1) for g in grads]), reduction="mean")
        for parameter, chunk in zip(parameters, flat.split([p.numel() for p in parameters])):
            parameter.grad = chunk.view_as(parameter)

    def _apply(self, adapter):
        parameters = self.models.parameters(adapter)
        self._average_gradients(parameters)
        norm = torch.nn.utils.clip_grad_norm_(parameters, self.config.max_grad_norm)
        self.optimizers[adapter].step()
        self.optimizers[adapter].zero_grad(set_to_none=True)
        return norm

    def train_step(self, micro_batches) -> dict:
        accumulation = len(micro_batches)
        plans = [self._plan(batch) for batch in micro_batches]

        fake_losses, kept = [], 0
        with self.models.role("fake"):
            for plan in plans:
                loss = self._fake_loss(plan)
                global_loss = self.accelerator.reduce(loss.detach(), reduction="mean")
                fake_losses.append(global_loss)
                if self.guard.keep(global_loss):
                    (loss / accumulation).backward()
                    kept += 1
                # A skipped loss's graph is dropped without a backward pass.
            if kept:
                fake_norm = self._apply("fake")
                self.schedulers["fake"].step()
            else:
                fake_norm = torch.zeros(())
                self.optimizers["fake"].zero_grad(set_to_none=True)

        student_losses = []
        with self.models.role("student"):
            for plan in plans:
                loss = self._student_loss(plan)
                # Backward inside the student role: gradient checkpointing recomputes with this adapter.
                (loss / accumulation).backward()
                student_losses.append(self.accelerator.reduce(loss.detach(), reduction="mean"))
            student_norm = self._apply("student")
        lr = self.schedulers["student"].get_last_lr()[0]
        self.schedulers["student"].step()
        return {
            "loss_fake": torch.stack(fake_losses).mean(),
            "loss_student": torch.stack(student_losses).mean(),
            "grad_norm_fake": fake_norm,
            "grad_norm_student": student_norm,
            "lr_student": lr,
            "fake_updates_kept": kept,
        }

    # checkpoints -------------------------------------------------------------------------------

    def state_tensors(self):
        tensors = {}
        for adapter in ADAPTERS:
            for index, parameter in enumerate(self.models.parameters(adapter)):
                tensors[f"lora.{adapter}.{index}"] = parameter.detach()
        rest = {}
        for name, optimizer in self.optimizers.items():
            flat, rest[name] = checkpoints.flatten_optimizer(optimizer.state_dict(), f"optimizer.{name}")
            tensors.update(flat)
        return tensors, rest

    def save(self, root):
        tensors, optimizer_rest = self.state_tensors()
        state = {
            "step": self.step,
            "config": self.config.to_dict(),
            "optimizers": optimizer_rest,
            "schedulers": {name: scheduler.state_dict() for name, scheduler in self.schedulers.items()},
            "fake_skipped": self.guard.skipped,
        }
        rng = {"cpu_generator": self.cpu_generator.get_state(), "noise_generator": self.noise_generator.get_state(),
               "torch": torch.get_rng_state()}
        return checkpoints.write_checkpoint(
            self.accelerator, root, self.step, tensors, state, rng, self.config.keep_checkpoints,
            write_extra=lambda folder: save_lora(self.transformer, folder, adapter_name="student"),
        )

    def load(self, path):
        tensors, state, rng = checkpoints.read_checkpoint(path, self.accelerator.process_index)
        current = self.config.to_dict()
        changed = sorted(key for key in current if key not in _RESUMABLE_CHANGES and state["config"].get(key) != current[key])
        if changed:
            raise ValueError(
                f"checkpoint {str(path)!r} was trained with other settings for {changed} "
                f"(checkpoint: {[state['config'].get(key) for key in changed]}, now: {[current[key] for key in changed]}); "
                "resume with the checkpoint's config or start a new output_dir"
            )
        if state["world_size"] != self.accelerator.num_processes:
            raise ValueError(
                f"checkpoint {str(path)!r} was written by {state['world_size']} processes, this run has "
                f"{self.accelerator.num_processes}; resume with the same number of processes"
            )
        with torch.no_grad():
            for adapter in ADAPTERS:
                for index, parameter in enumerate(self.models.parameters(adapter)):
                    parameter.copy_(tensors[f"lora.{adapter}.{index}"])
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(checkpoints.unflatten_optimizer(tensors, state["optimizers"][name], f"optimizer.{name}"))
        for name, scheduler in self.schedulers.items():
            scheduler.load_state_dict(state["schedulers"][name])
        self.cpu_generator.set_state(rng["cpu_generator"])
        self.noise_generator.set_state(rng["noise_generator"])
        torch.set_rng_state(rng["torch"])
        self.guard.skipped = state["fake_skipped"]
        self.step = state["step"]
        logger.info("resumed from %s at step %d", path, self.step)


def _trim_metrics(path: Path, step: int) -> None:
    # Rows written after the checkpoint we resume from would be written again: drop them.
    if not path.is_file():
        return
    from blade.io import atomic_write_text

    rows = [line for line in path.read_text(encoding="utf-8").splitlines() if line and json.loads(line)["step"] <= step]
    atomic_write_text(path, "".join(row + "\n" for row in rows))


def _flush(pending, metrics_path, results):
    # One host read for all pending steps: the device is synced once per log interval only.
    keys = ("loss_fake", "loss_student", "grad_norm_fake", "grad_norm_student")
    values = torch.stack([torch.stack([row[key].float().reshape(()) for key in keys]) for row in pending]).tolist()
    rows = []
    for row, numbers in zip(pending, values):
        rows.append({**{k: v for k, v in row.items() if k not in keys}, **dict(zip(keys, numbers))})
    if metrics_path is not None:
        with metrics_path.open("a", encoding="utf-8") as file:
            for row in rows:
                file.write(json.dumps(row) + "\n")
    results.extend(rows)
    pending.clear()
    return rows[-1]


def train(config: DistillConfig, *, resume: bool | str | Path = False, accelerator=None) -> TrainResult:
    """Distil a K-step ASA student from the config's teacher and prompt embeddings.

    Args:
        config: the run's settings.
        resume: False to start fresh, True to continue from the newest checkpoint in
            `output_dir/checkpoints` (fresh when there is none), or a checkpoint folder.
        accelerator: an `accelerate.Accelerator`; by default one is made with `cpu=config.cpu` and
            `mixed_precision=config.mixed_precision`. Launch with torchrun or `accelerate launch` for
            several processes.

    Returns:
        A TrainResult.
    """
    from accelerate import Accelerator

    from blade.io import atomic_write_json

    if not isinstance(config, DistillConfig):
        raise TypeError(f"config must be a DistillConfig, got {type(config).__name__}; use DistillConfig.from_file")
    if not config.embeddings:
        raise ValueError("config.embeddings is empty; point it at a folder written by `blade embed`")
    accelerator = accelerator or Accelerator(cpu=config.cpu, mixed_precision=config.mixed_precision)
    output_dir = Path(config.output_dir)
    checkpoint_root = output_dir / "checkpoints"
    metrics_path = output_dir / METRICS_NAME if accelerator.is_main_process else None
    trainer = _Trainer(config, accelerator)

    if resume:
        path = checkpoints.latest_checkpoint(checkpoint_root) if resume is True else Path(resume)
        if path is None:
            logger.info("no checkpoint in %s; starting from step 0", checkpoint_root)
        else:
            trainer.load(path)
    if accelerator.is_main_process:
        backend = torch.distributed.get_backend() if torch.distributed.is_initialized() else "none"
        logger.info("training on %d process(es), device %s, process group backend %s",
                    accelerator.num_processes, accelerator.device, backend)
        output_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(output_dir / "config.json", config.to_dict())
        if trainer.step:
            _trim_metrics(metrics_path, trainer.step)
        elif metrics_path.exists():
            metrics_path.unlink()
    accelerator.wait_for_everyone()

    stream = trainer.batches.iterate(start=trainer.step * config.gradient_accumulation_steps)
    results, pending = [], []
    progress = tqdm(total=config.max_train_steps, initial=trainer.step, desc="distill", unit="step",
                    disable=not accelerator.is_main_process)
    interval_start, interval_steps = time.perf_counter(), 0
    while trainer.step < config.max_train_steps:
        micro_batches = [next(stream) for _ in range(config.gradient_accumulation_steps)]
        row = trainer.train_step(micro_batches)
        trainer.step += 1
        interval_steps += 1
        pending.append({"step": trainer.step, **row, "fake_skipped": trainer.guard.skipped})
        progress.update(1)
        done = trainer.step == config.max_train_steps
        if trainer.step % config.log_every == 0 or done:
            last = _flush(pending, metrics_path, results)
            seconds = (time.perf_counter() - interval_start) / interval_steps
            progress.set_postfix(loss_fake=f"{last['loss_fake']:.4f}", loss_student=f"{last['loss_student']:.4f}")
            if accelerator.is_main_process:
                logger.info(
                    "step %d/%d loss_fake %.4f loss_student %.4f %.2f s/step (fake updates skipped: %d)",
                    trainer.step, config.max_train_steps, last["loss_fake"], last["loss_student"], seconds,
                    trainer.guard.skipped,
                )
            interval_start, interval_steps = time.perf_counter(), 0
        if (config.checkpoint_every and trainer.step % config.checkpoint_every == 0) or done:
            if pending:
                _flush(pending, metrics_path, results)
            trainer.save(checkpoint_root)
    progress.close()

    lora_path = output_dir / "pytorch_lora_weights.safetensors"
    if accelerator.is_main_process:
        lora_path = save_lora(trainer.transformer, output_dir, adapter_name="student")
        logger.info("wrote the student LoRA to %s", lora_path)
    accelerator.wait_for_everyone()
    from peft.utils import get_peft_model_state_dict

    student_lora = {
        key: value.detach().cpu().clone()
        for key, value in get_peft_model_state_dict(trainer.transformer, adapter_name="student").items()
    }
    return TrainResult(
        output_dir=output_dir,
        lora_path=lora_path,
        metrics=results if accelerator.is_main_process else [],
        fake_skipped=trainer.guard.skipped,
        student_lora=student_lora,
    )
