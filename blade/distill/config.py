"""Every knob of a distillation run, read from YAML or JSON and stored in each checkpoint."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from blade.config import BladeConfig

_BLADE_PRESETS = {"wan": BladeConfig.wan, "cogvideox": BladeConfig.cogvideox, "dense": BladeConfig.dense}
_MIXED_PRECISION = ("no", "bf16")


@dataclass
class DistillConfig:
    """Settings of one TDM distillation run. Defaults are the authors' Wan2.1 settings.

    Model and data:
        model: a diffusers pipeline folder (loaded with `blade.models.load_pipeline`), or
            "tiny-wan" / "tiny-cogvideox" for a tiny seeded pipeline (tests, smoke runs).
        model_seed: weight seed of the tiny pipelines.
        embeddings: folder written by `blade embed` (prompt embeddings and the negative embedding).
        latent_shape: (C, F, H, W) of the latents the student learns to generate.
        output_dir: where checkpoints, metrics.jsonl, config.json and the final LoRA go.
        blade: ASA settings: a preset name ("wan", "cogvideox", "dense") or a dict of
            `BladeConfig` fields.

    TDM:
        num_steps: K, student steps.
        eta: noise mixing of the stochastic rollout.
        guidance_scale: CFG scale of the teacher.
        lambda_reg: weight of the fake score's teacher term (0.5 for CogVideoX).
        t_max: exclusive upper bound of the drawn timesteps.
        fake_loss_threshold: fake-score updates with a larger loss are skipped; None disables.
        huber_scale: leading factor of the pseudo-Huber constant.

    LoRA and optimisation:
        lora_rank, lora_alpha, lora_target_modules: LoRA on both adapters.
        student_lr, fake_lr: AdamW learning rates; the student's follows a cosine with warm-up,
            the fake score's is constant.
        warmup_steps: linear warm-up of the student learning rate.
        adam_betas, weight_decay, adam_epsilon: AdamW settings (beta1 = 0 as in TDM; weight decay
            0.01 is torch's AdamW default, which the authors did not change).
        max_grad_norm: gradient clipping per adapter.
        max_train_steps: optimizer steps.
        batch_size: prompts per process per micro-batch.
        gradient_accumulation_steps: micro-batches per optimizer step.
        mixed_precision: "no" or "bf16" (autocast; LoRA weights and optimizer states stay float32).
        gradient_checkpointing: recompute transformer blocks in the backward pass.
        seed: seed of the data order, noise and LoRA initialisation.
        cpu: force the CPU even when a GPU is present.
        num_workers: DataLoader workers.

    Bookkeeping:
        checkpoint_every: steps between checkpoints (0: only at the end).
        keep_checkpoints: how many of the newest checkpoints to keep.
        log_every: steps between log lines and metric flushes.
    """

    model: str = "tiny-wan"
    model_seed: int = 0
    embeddings: str = ""
    latent_shape: tuple[int, int, int, int] = (16, 21, 60, 104)
    output_dir: str = "results/distill/run"
    blade: object = "wan"

    num_steps: int = 8
    eta: float = 0.9
    guidance_scale: float = 5.0
    lambda_reg: float = 0.0
    t_max: int = 980
    fake_loss_threshold: float | None = 2.0
    huber_scale: float = 1e-3

    lora_rank: int = 64
    lora_alpha: float = 64.0
    lora_target_modules: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
    student_lr: float = 1e-4
    fake_lr: float = 5e-4
    warmup_steps: int = 5
    adam_betas: tuple[float, float] = (0.0, 0.95)
    weight_decay: float = 0.01
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    max_train_steps: int = 300
    batch_size: int = 1
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "bf16"
    gradient_checkpointing: bool = True
    seed: int = 0
    cpu: bool = False
    num_workers: int = 0

    checkpoint_every: int = 50
    keep_checkpoints: int = 3
    log_every: int = 10

    def __post_init__(self):
        self.latent_shape = tuple(int(v) for v in self.latent_shape)
        self.lora_target_modules = tuple(self.lora_target_modules)
        self.adam_betas = tuple(float(v) for v in self.adam_betas)
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field."""
        if len(self.latent_shape) != 4 or min(self.latent_shape) < 1:
            raise ValueError(f"latent_shape must be four positive sizes (C, F, H, W), got {self.latent_shape}")
        if self.mixed_precision not in _MIXED_PRECISION:
            raise ValueError(
                f"mixed_precision must be one of {_MIXED_PRECISION}, got {self.mixed_precision!r} "
                "(fp16 would need loss scaling across two optimizers; use bf16)"
            )
        for name in ("num_steps", "max_train_steps", "batch_size", "gradient_accumulation_steps", "keep_checkpoints", "log_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0 (0: only at the end), got {self.checkpoint_every}")
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eta must lie in [0, 1], got {self.eta}")
        if not 0 < self.t_max <= 1000:
            raise ValueError(f"t_max must lie in (0, 1000], got {self.t_max}")
        self.blade_config()

    def blade_config(self) -> BladeConfig:
        """Return the ASA settings as a BladeConfig."""
        if isinstance(self.blade, BladeConfig):
            return self.blade
        if isinstance(self.blade, str):
            if self.blade not in _BLADE_PRESETS:
                raise ValueError(f"blade must be a preset in {sorted(_BLADE_PRESETS)} or a dict, got {self.blade!r}")
            return _BLADE_PRESETS[self.blade]()
        if isinstance(self.blade, dict):
            data = dict(self.blade)
            preset = data.pop("preset", None)
            if preset is not None:
                return _BLADE_PRESETS[preset](**data)
            return BladeConfig.from_dict(data)
        raise TypeError(f"blade must be a preset name or a dict of BladeConfig fields, got {type(self.blade).__name__}")

    def to_dict(self) -> dict:
        """Return a JSON-ready dict that `from_dict` turns back into an equal config."""
        data = dataclasses.asdict(self)
        for name in ("latent_shape", "lora_target_modules", "adam_betas"):
            data[name] = list(data[name])
        if isinstance(self.blade, BladeConfig):
            data["blade"] = self.blade.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "DistillConfig":
        """Build from a dict, rejecting unknown keys with the list of valid ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown distillation settings {unknown}; valid settings are {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_file(cls, path: str | Path, **overrides) -> "DistillConfig":
        """Read a YAML (.yaml, .yml) or JSON (.json) file of settings; `overrides` replace settings before validation."""
        from blade.io import read_settings_file

        missing = f"no distillation config at {str(path)!r}; see configs/distill/ for examples"
        return cls.from_dict(read_settings_file(path, missing_hint=missing) | overrides)
