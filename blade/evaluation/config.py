"""Settings of `blade evaluate`: the model, the prompts, and the list of variants compared in one run.

A variant is one way of sampling videos from the model folder:

- sampler "pipeline": the pipeline's own scheduler, `steps` steps, classifier-free guidance `guidance`
  (the teacher: 50 steps, guidance 5; the few-step teacher: 8 steps, guidance 1).
- sampler "student": the K-step stochastic rollout a TDM student was trained with
  (`blade.distill.student_latents`), no guidance, with eta `eta`.

Each variant runs with or without a LoRA. `lora: true` takes the run's `lora` (the student distilled
with ASA), and `lora: dense` takes `dense_lora` (a student distilled with dense attention). Each
variant also picks one attention: "dense" (the model's own), "asa" (`apply_blade` with `blade`), or a
training-free static mask, "sliding_tile" or "radial", at a target `sparsity`. A sparsity given as a
variant name takes the attention sparsity measured for that earlier variant, so peers run at the
sparsity ASA reached.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from blade.config import BladeConfig

SAMPLERS = ("pipeline", "student")
ATTENTIONS = ("dense", "asa", "sliding_tile", "radial")
STATIC_ATTENTIONS = ("sliding_tile", "radial")
TOY_PROMPT_SETS = ("toy:heldin", "toy:heldout", "toy:eval", "toy:train", "toy:demo")
_PRESETS = {"wan": BladeConfig.wan, "cogvideox": BladeConfig.cogvideox, "dense": BladeConfig.dense}


def resolve_blade(value) -> BladeConfig:
    """Turn a `blade` setting into a BladeConfig.

    Args:
        value: a BladeConfig, a preset name ("wan", "cogvideox", "dense"), a YAML/JSON file of
            BladeConfig fields, or a dict of fields with an optional "preset" key whose fields the
            others override (the form `blade distill` configs use).
    """
    from blade.generate.prepare import blade_config_from_option

    if isinstance(value, dict):
        data = dict(value)
        preset = data.pop("preset", None)
        if preset is None:
            return BladeConfig.from_dict(data)
        if preset not in _PRESETS:
            raise ValueError(f"blade.preset must be one of {sorted(_PRESETS)}, got {preset!r}")
        return _PRESETS[preset](**data)
    return blade_config_from_option(value)


@dataclass
class VariantSpec:
    """One sampled configuration of the model.

    Attributes:
        name: unique label (folder name and table row); letters, digits, "_" and "-".
        sampler: "pipeline" or "student" (see the module docstring).
        steps: denoising steps (K for the student).
        guidance: classifier-free guidance scale of the pipeline sampler; <= 1 disables it. The
            student sampler runs without guidance and requires 1.0.
        eta: noise mixing of the student sampler (as trained); ignored by the pipeline sampler.
        lora: False for none, True for `EvalConfig.lora`, "dense" for `EvalConfig.dense_lora`, or
            the path of another LoRA (file or `blade distill` output folder), e.g. a 4-step student
            compared in the same run.
        attention: "dense", "asa", "sliding_tile" or "radial".
        blade: ASA settings for "asa" (see `resolve_blade`); None takes `EvalConfig.blade`. For the
            static masks only its block_size and backend are used.
        sparsity: target sparsity of a static mask: a float in [0, 1) or the name of an earlier
            variant whose measured attention sparsity is taken.
    """

    name: str
    sampler: str = "pipeline"
    steps: int = 50
    guidance: float = 1.0
    eta: float = 0.9
    lora: object = False
    attention: str = "dense"
    blade: object = None
    sparsity: object = None

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field."""
        where = f"variant {self.name!r}"
        if not isinstance(self.name, str) or not self.name or not all(c.isalnum() or c in "_-" for c in self.name):
            raise ValueError(f"variant name must be non-empty letters, digits, '_' or '-', got {self.name!r}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"{where}: sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"{where}: steps must be an int >= 1, got {self.steps!r}")
        if not isinstance(self.guidance, (int, float)) or not self.guidance >= 0:
            raise ValueError(f"{where}: guidance must be a number >= 0, got {self.guidance!r}")
        if self.sampler == "student" and self.guidance != 1.0:
            raise ValueError(
                f"{where}: the student sampler runs without guidance, got guidance {self.guidance!r}; "
                "set guidance: 1.0 or use sampler: pipeline"
            )
        if not isinstance(self.eta, (int, float)) or not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"{where}: eta must be in [0, 1], got {self.eta!r}")
        if self.lora not in (False, True, "dense") and not (isinstance(self.lora, str) and self.lora.strip()):
            raise ValueError(
                f"{where}: lora must be false, true (the run's lora), 'dense' (dense_lora) or a LoRA path, got {self.lora!r}"
            )
        if self.attention not in ATTENTIONS:
            raise ValueError(f"{where}: attention must be one of {ATTENTIONS}, got {self.attention!r}")
        if self.attention in STATIC_ATTENTIONS:
            if self.sparsity is None:
                raise ValueError(
                    f"{where}: attention {self.attention!r} needs sparsity: a float in [0, 1) or the name of "
                    "an earlier variant whose measured sparsity to match"
                )
            if not isinstance(self.sparsity, str) and not (
                isinstance(self.sparsity, (int, float)) and 0.0 <= self.sparsity < 1.0
            ):
                raise ValueError(f"{where}: sparsity must be a float in [0, 1) or a variant name, got {self.sparsity!r}")
        elif self.sparsity is not None:
            raise ValueError(f"{where}: sparsity applies only to {STATIC_ATTENTIONS}, got attention {self.attention!r}")


@dataclass
class EvalConfig:
    """Every setting of `blade evaluate`.

    Attributes:
        model: diffusers pipeline folder (Wan or CogVideoX; the toy teacher folder enables ToyBench).
        lora: LoRA file or folder (`pytorch_lora_weights.safetensors`) of the student distilled with
            ASA, or None. The default variant list includes "student_asa" only when it is given.
        dense_lora: LoRA of a student distilled with dense attention, or None; adds "student_dense".
        blade: ASA settings of "asa" variants that set none (see `resolve_blade`).
        prompts: a list of prompts, a prompt file (one per line), or a toy prompt set: "toy:heldin"
            (24 training prompts), "toy:heldout" (12), "toy:eval" (both, held-in first), "toy:train",
            "toy:demo" (see `blade.toy.prompts`).
        max_prompts: keep only the first this-many prompts; None keeps all.
        seed: run seed; prompt i draws its noise from `blade.generate.prompt_seed(seed, i)` in
            every variant.
        repeats: generations per video. With more than one, the first is left out of the timing and
            the median of the rest is reported. Sparse variants always leave out their first
            generation, which records attention sparsity, so with 1 they run one extra, untimed.
        height, width, frames: video size; None takes the toy config's or the pipeline's default.
        max_sequence_length: text tokens; None takes the toy config's `text_len`, else the
            pipeline's default.
        device, dtype: as in `blade.generate.prepare_pipeline` (None: CUDA and bfloat16 when
            available, else CPU and float32).
        reference: name of the variant that speedups and PSNR / SSIM are measured against.
        variants: the variants, run in order; None builds `default_variants`.
        teacher_steps, teacher_guidance, student_steps, eta: settings of the default variants.
        training_free: static or ASA variants added to the default list, on the dense student
            (or the few-step teacher without a LoRA) at the ASA student's measured sparsity.
        out_dir, run_id: results go to `<out_dir>/<run_id>/`; run_id None takes the current time.
        fps, gif_max_side: of the exported videos.
    """

    model: str
    lora: str | None = None
    dense_lora: str | None = None
    blade: object = "wan"
    prompts: object = "toy:heldout"
    max_prompts: int | None = None
    seed: int = 0
    repeats: int = 1
    height: int | None = None
    width: int | None = None
    frames: int | None = None
    max_sequence_length: int | None = None
    device: str | None = None
    dtype: str | None = None
    reference: str = "teacher"
    variants: list | None = None
    teacher_steps: int = 50
    teacher_guidance: float = 5.0
    student_steps: int = 8
    eta: float = 0.9
    training_free: list = field(default_factory=list)
    out_dir: str = "results/eval"
    run_id: str | None = None
    fps: float | None = None
    gif_max_side: int | None = 256

    def __post_init__(self):
        if self.variants is None:
            self.variants = default_variants(self)
        self.variants = [_variant_from(entry) for entry in self.variants]
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first invalid setting."""
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"model must be a pipeline folder path, got {self.model!r}")
        if isinstance(self.repeats, bool) or not isinstance(self.repeats, int) or self.repeats < 1:
            raise ValueError(f"repeats must be an int >= 1, got {self.repeats!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {self.seed!r}")
        if self.max_prompts is not None and (not isinstance(self.max_prompts, int) or self.max_prompts < 1):
            raise ValueError(f"max_prompts must be None or an int >= 1, got {self.max_prompts!r}")
        if isinstance(self.prompts, str) and self.prompts.startswith("toy:") and self.prompts not in TOY_PROMPT_SETS:
            raise ValueError(f"prompts {self.prompts!r} is not a valid toy prompt set; use one of {TOY_PROMPT_SETS}")
        if isinstance(self.prompts, list) and not all(isinstance(p, str) and p.strip() for p in self.prompts):
            raise ValueError("prompts given as a list must all be non-blank strings")
        if self.blade is not None:
            resolve_blade(self.blade)

        names = [variant.name for variant in self.variants]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"variant names must be unique, got {duplicates} more than once")
        if self.reference not in names:
            raise ValueError(f"reference {self.reference!r} does not name a variant; variants are {names}")

        for index, variant in enumerate(self.variants):
            variant.validate()
            if variant.lora is True and self.lora is None:
                raise ValueError(f"variant {variant.name!r} sets lora: true but no lora file is given; set lora: PATH")
            if variant.lora == "dense" and self.dense_lora is None:
                raise ValueError(f"variant {variant.name!r} sets lora: dense but no dense_lora is given; set dense_lora: PATH")
            if isinstance(variant.sparsity, str) and variant.sparsity not in names[:index]:
                raise ValueError(
                    f"variant {variant.name!r} matches the sparsity of {variant.sparsity!r}, which is not an earlier "
                    f"variant; earlier variants are {names[:index]}"
                )
            if variant.attention == "asa" and variant.blade is None and self.blade is None:
                raise ValueError(f"variant {variant.name!r} uses ASA but neither it nor the config sets blade")

        if self.run_id is not None and (not isinstance(self.run_id, str) or "/" in self.run_id or not self.run_id):
            raise ValueError(f"run_id must be a folder name without '/', got {self.run_id!r}")

    def lora_path(self, variant: VariantSpec):
        """Return the LoRA path `variant` loads, or None for the bare model."""
        if variant.lora is False:
            return None
        return {True: self.lora, "dense": self.dense_lora}.get(variant.lora, variant.lora)

    def blade_for(self, variant: VariantSpec) -> BladeConfig | None:
        """Return the BladeConfig a variant patches the transformer with, or None for dense attention."""
        if variant.attention == "dense":
            return None
        return resolve_blade(variant.blade if variant.blade is not None else self.blade)

    def to_dict(self) -> dict:
        """Return the settings as JSON-ready data (variants as dicts)."""
        data = dataclasses.asdict(self)
        data["variants"] = [dataclasses.asdict(variant) for variant in self.variants]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "EvalConfig":
        """Build a config from a mapping, rejecting unknown keys by name."""
        if not isinstance(data, dict):
            raise ValueError(f"an evaluation config must be a mapping of settings, got {type(data).__name__}")
        _check_known(data, cls, "evaluation settings")
        if "model" not in data:
            raise ValueError("an evaluation config needs model: the pipeline folder to evaluate")
        return cls(**data)

    @classmethod
    def from_file(cls, path, **overrides) -> "EvalConfig":
        """Read a YAML (.yaml, .yml) or JSON (.json) file of settings; `overrides` replace settings before validation."""
        from blade.io import read_settings_file

        missing = f"no evaluation config at {str(path)!r}; see configs/evaluate/toy.yaml for an example"
        return cls.from_dict(read_settings_file(path, missing_hint=missing) | overrides)


def _check_known(data: dict, cls, kind: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {kind} {unknown}; valid settings are {sorted(known)}")


def _variant_from(entry) -> VariantSpec:
    if isinstance(entry, VariantSpec):
        return entry
    if not isinstance(entry, dict):
        raise ValueError(f"each variant must be a mapping of VariantSpec fields, got {entry!r}")
    _check_known(entry, VariantSpec, f"settings of variant {entry.get('name')!r}")
    if "name" not in entry:
        raise ValueError(f"a variant needs a name, got {entry!r}")
    return VariantSpec(**entry)


def default_variants(config: EvalConfig) -> list[VariantSpec]:
    """Build the standard comparison: teacher, few-step teacher, students, training-free peers.

    Returns, in order: "teacher" (pipeline, `teacher_steps`, `teacher_guidance`, dense) and
    "teacher_8step" (pipeline, `student_steps`, no guidance, dense). That name keeps "8step" whatever
    `student_steps` is, so tables line up across runs. Then "student_dense" (with `dense_lora`) and
    "student_asa" (with `lora`, ASA on), both on the student sampler. Each entry of `training_free`
    ("asa", "sliding_tile", "radial") adds "free_<entry>" on the dense student, or on the few-step
    teacher without a `dense_lora`. Static masks run at the measured sparsity of "free_asa" when it
    is listed, else of "student_asa".
    """
    variants = [
        VariantSpec("teacher", "pipeline", config.teacher_steps, config.teacher_guidance),
        VariantSpec("teacher_8step", "pipeline", config.student_steps, 1.0),
    ]
    student = dict(sampler="student", steps=config.student_steps, guidance=1.0, eta=config.eta)
    if config.dense_lora is not None:
        variants.append(VariantSpec("student_dense", lora="dense", **student))
    if config.lora is not None:
        variants.append(VariantSpec("student_asa", lora=True, attention="asa", **student))
    entries = list(config.training_free or [])
    unknown = [entry for entry in entries if entry not in ("asa", *STATIC_ATTENTIONS)]
    if unknown:
        raise ValueError(f"training_free entries must be among {('asa', *STATIC_ATTENTIONS)}, got {unknown}")
    if config.dense_lora is not None:
        base = dict(lora="dense", **student)
    else:
        base = dict(sampler="pipeline", steps=config.student_steps, guidance=1.0)
    matched = None
    if "asa" in entries:
        matched = "free_asa"
    elif config.lora is not None:
        matched = "student_asa"
    # ASA first, so the static masks can match its measured sparsity
    for entry in sorted(entries, key=lambda name: name != "asa"):
        sparsity = None
        if entry in STATIC_ATTENTIONS:
            if matched is None:
                raise ValueError(
                    f"training_free {entry!r} needs a sparsity to match: list 'asa' in training_free or give lora"
                )
            sparsity = matched
        variants.append(VariantSpec(f"free_{entry}", attention=entry, sparsity=sparsity, **base))
    return variants


def median(values) -> float:
    """Median of a non-empty sequence of numbers (mean of the middle two for an even count)."""
    ordered = sorted(float(value) for value in values)
    if not ordered:
        raise ValueError("median of an empty sequence")
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return 0.5 * (ordered[middle - 1] + ordered[middle])


def finite_or_none(value):
    """Return a float, or None for NaN and infinity (JSON has no such numbers)."""
    value = float(value)
    return value if math.isfinite(value) else None
