"""Sparsity-aware TDM step distillation: a LoRA student with ASA learns K-step sampling from a dense teacher.

Modules, one concept each: `schedules` (sigma(t), abar(t), x0/eps conversions), `sampling` (segments,
timestep draws, the stochastic rollout), `losses`, `models` (one base transformer in three roles),
`teacher` (loading), `data` (per-rank prompt batches), `checkpoints`, `lora_files` (diffusers LoRA
format), `loop` (`train`), `inference` (sampling a trained student), `config` (`DistillConfig`).

Decisions a reader should know:
- All samples of a micro-batch share one drawn segment (one transformer call per segment); each sample
  draws its own timestep t.
- The fake-loss guard decides on the loss averaged over ranks, so every rank skips together.
- The transformer is not wrapped in DDP; LoRA gradients are averaged explicitly (see `loop`).
- LoRA goes on to_q, to_k, to_v, to_out.0 of self- and cross-attention by default, as the authors do.
- Students sample at inference with the same rollout and timesteps as in training (`student_latents`).
"""

from blade.distill.config import DistillConfig
from blade.distill.lora_files import LORA_WEIGHT_NAME, load_lora, save_lora
from blade.distill.loop import TrainResult, train
from blade.distill.models import DistillModels, asa_disabled
from blade.distill.data import PromptBatches
from blade.distill.inference import decode_latents, student_latents
from blade.distill.losses import FakeLossGuard, classifier_free_guidance, fake_score_loss, pseudo_huber_constant, student_loss
from blade.distill.sampling import (
    Rollout,
    mix_noise,
    renoise,
    sample_segment,
    sample_timesteps,
    segment_bounds,
    student_rollout,
)
from blade.distill.schedules import (
    FlowMatchSchedule,
    VPredictionSchedule,
    add_noise,
    ddpm_alphas_cumprod,
    diffuse_forward,
    flow_sigma,
    flow_to_x0_eps,
    schedule_from_scheduler,
    v_prediction_to_x0_eps,
)

__all__ = [
    "DistillConfig",
    "DistillModels",
    "LORA_WEIGHT_NAME",
    "PromptBatches",
    "TrainResult",
    "asa_disabled",
    "load_lora",
    "save_lora",
    "train",
    "FakeLossGuard",
    "FlowMatchSchedule",
    "Rollout",
    "VPredictionSchedule",
    "add_noise",
    "classifier_free_guidance",
    "ddpm_alphas_cumprod",
    "decode_latents",
    "diffuse_forward",
    "fake_score_loss",
    "flow_sigma",
    "flow_to_x0_eps",
    "mix_noise",
    "pseudo_huber_constant",
    "renoise",
    "sample_segment",
    "sample_timesteps",
    "schedule_from_scheduler",
    "segment_bounds",
    "student_rollout",
    "student_latents",
    "student_loss",
    "v_prediction_to_x0_eps",
]
