"""One base transformer as teacher, student and fake score, switched by peft adapters and ASA.

The three TDM models share the frozen base weights and differ only in

    teacher      adapters disabled, dense attention (ASA bypassed in every layer)
    student      adapter "student", ASA on
    fake score   adapter "fake", ASA on

so the base is held in memory once instead of three times. Both adapters start from the same seeded
initialisation with lora_B = 0, so at step 0 the student and the fake score both equal the base
model run with ASA, as TDM's "fake score = copy of the student" prescribes.

LoRA targets: by default to_q, to_k, to_v and to_out.0 of every attention module, i.e. self-attention
(attn1) and cross-attention (attn2) in Wan, as in the authors' code (peft matches module-name
suffixes). `target_modules=["attn1.to_q", ...]` restricts them to self-attention.
"""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager

import torch

from blade.config import BladeConfig
from blade.patching import apply_blade, dense_attention

logger = logging.getLogger(__name__)

ROLES = ("teacher", "student", "fake")
ADAPTERS = ("student", "fake")
DEFAULT_TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")


@contextmanager
def asa_disabled(transformer):
    """Run every patched self-attention layer of `transformer` densely inside the block.

    Args:
        transformer: a transformer patched with `blade.apply_blade`.
    """
    with dense_attention(transformer):
        yield


class WanCall:
    """Calls a `WanTransformer3DModel` on [B, C, F, H, W] latents."""

    family = "wan"

    def __call__(self, transformer, latents, timestep, prompt_embeds):
        """Return the [B, C, F, H, W] output for latents [B, C, F, H, W], timestep [B] and prompt_embeds [B, L, D]."""
        return transformer(
            hidden_states=latents, timestep=timestep, encoder_hidden_states=prompt_embeds, return_dict=False
        )[0]


class CogVideoXCall:
    """Calls a `CogVideoXTransformer3DModel` on [B, C, F, H, W] latents (it wants [B, F, C, H, W]).

    Args:
        rotary_emb: the 3D rotary embedding the CogVideoX pipeline computes for the latent size, or
            None for models without rotary embeddings.
    """

    family = "cogvideox"

    def __init__(self, rotary_emb=None):
        self.rotary_emb = rotary_emb

    def __call__(self, transformer, latents, timestep, prompt_embeds):
        """Return the [B, C, F, H, W] output for latents [B, C, F, H, W], timestep [B] and prompt_embeds [B, L, D]."""
        output = transformer(
            hidden_states=latents.transpose(1, 2),  # [B, F, C, H, W]
            timestep=timestep,
            encoder_hidden_states=prompt_embeds,
            image_rotary_emb=self.rotary_emb,
            return_dict=False,
        )[0]
        return output.transpose(1, 2)  # [B, C, F, H, W]


def transformer_call_for(pipeline, latent_shape) -> WanCall | CogVideoXCall:
    """Return the call adapter of a Wan or CogVideoX pipeline for latents of `latent_shape` (C, F, H, W)."""
    name = type(pipeline.transformer).__name__
    if name == "WanTransformer3DModel":
        return WanCall()
    if name == "CogVideoXTransformer3DModel":
        rotary = None
        if pipeline.transformer.config.use_rotary_positional_embeddings:
            _, frames, height, width = latent_shape
            spatial = pipeline.vae_scale_factor_spatial
            rotary = pipeline._prepare_rotary_positional_embeddings(
                height * spatial, width * spatial, frames, pipeline.transformer.device
            )
        return CogVideoXCall(rotary)
    raise TypeError(f"distillation supports Wan and CogVideoX transformers, got {name}")


class DistillModels:
    """The base transformer with ASA and two LoRA adapters, switched between the three TDM roles.

    Args:
        transformer: a diffusers Wan or CogVideoX transformer; it is frozen, patched with ASA and
            given the adapters "student" and "fake" in place.
        blade_config: ASA settings of the student and fake score.
        lora_rank, lora_alpha: LoRA rank and alpha (64 and 64 in TDM).
        target_modules: module-name suffixes that get LoRA layers.
        seed: seed of the LoRA initialisation (the same on every rank, so ranks start identical).

    Attributes:
        transformer: the shared transformer.
        active_role: the role of the innermost `role` context, or None outside one.
    """

    def __init__(
        self,
        transformer,
        blade_config: BladeConfig,
        *,
        lora_rank: int = 64,
        lora_alpha: float = 64,
        target_modules=DEFAULT_TARGET_MODULES,
        seed: int = 0,
    ):
        from peft import LoraConfig

        if lora_rank < 1:
            raise ValueError(f"lora_rank must be >= 1, got {lora_rank}")
        self.transformer = transformer
        self.active_role = None
        transformer.requires_grad_(False)
        apply_blade(transformer, blade_config)
        lora_config = LoraConfig(
            r=lora_rank, lora_alpha=lora_alpha, target_modules=list(target_modules), init_lora_weights=True
        )
        for adapter in ADAPTERS:
            # Same seed for both: the fake score starts as a copy of the student.
            with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
                # peft warns that a second adapter joins the first: that is the point here.
                warnings.filterwarnings("ignore", message="Already found a `peft_config`")
                torch.manual_seed(seed)
                transformer.add_adapter(lora_config, adapter_name=adapter)
        self._parameters = {
            adapter: [p for name, p in transformer.named_parameters() if f".{adapter}." in name] for adapter in ADAPTERS
        }
        if not self._parameters["student"]:
            raise ValueError(f"target_modules {list(target_modules)} matched no module of {type(transformer).__name__}")
        self._make_trainable()
        transformer.set_adapter("student")
        self._make_trainable()
        logger.info(
            "LoRA rank %d alpha %s on %s: %d trainable parameters per adapter",
            lora_rank,
            lora_alpha,
            list(target_modules),
            sum(p.numel() for p in self._parameters["student"]),
        )

    def parameters(self, adapter: str) -> list[torch.nn.Parameter]:
        """Return the LoRA parameters of adapter "student" or "fake", in a fixed order."""
        if adapter not in ADAPTERS:
            raise ValueError(f"adapter must be one of {ADAPTERS}, got {adapter!r}")
        return self._parameters[adapter]

    def _make_trainable(self):
        # peft flips requires_grad when adapters are switched. Both adapters stay trainable here, so
        # torch.no_grad around the calls that must not train decides what gets gradients.
        for parameters in self._parameters.values():
            for parameter in parameters:
                parameter.requires_grad_(True)

    @contextmanager
    def role(self, name: str):
        """Run the enclosed transformer calls as "teacher", "student" or "fake".

        Under gradient checkpointing a backward pass recomputes the forward, so call `backward` inside
        the same role as the forward it differentiates.
        """
        if name not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {name!r}")
        previous = self.active_role
        transformer = self.transformer
        self.active_role = name
        try:
            if name == "teacher":
                transformer.disable_adapters()
                with asa_disabled(transformer):
                    yield
            else:
                transformer.set_adapter(name)
                self._make_trainable()
                yield
        finally:
            self.active_role = previous
            if name == "teacher":
                transformer.enable_adapters()
            if previous in ADAPTERS:
                transformer.set_adapter(previous)
            self._make_trainable()
