"""`apply_blade` / `remove_blade`: put ASA into a diffusers video transformer and take it out again."""

from __future__ import annotations

import contextlib
import logging

from blade.config import BladeConfig
from blade.patching.common import BladeState, check_schedule, uninstall_hook

logger = logging.getLogger(__name__)

_STATE_ATTRIBUTE = "_blade_state"


def _family_of(transformer) -> str:
    from diffusers import CogVideoXTransformer3DModel, WanTransformer3DModel

    if isinstance(transformer, WanTransformer3DModel):
        return "wan"
    if isinstance(transformer, CogVideoXTransformer3DModel):
        return "cogvideox"
    raise TypeError(
        "blade patches WanTransformer3DModel and CogVideoXTransformer3DModel (diffusers), got "
        f"{type(transformer).__name__}; pass pipe.transformer of a WanPipeline or CogVideoXPipeline"
    )


def _unwrap(transformer):
    # torch.compile returns an OptimizedModule that forwards to the original module in `_orig_mod`.
    return getattr(transformer, "_orig_mod", transformer)


def blade_state(transformer) -> BladeState | None:
    """Return the BladeState of a patched transformer, or None if it is not patched."""
    return getattr(_unwrap(transformer), _STATE_ATTRIBUTE, None)


def num_layers(transformer) -> int:
    """Return the number of transformer blocks of a Wan or CogVideoX transformer."""
    return transformer.config.num_layers


def num_heads(transformer) -> int:
    """Return the attention heads per block of a Wan or CogVideoX transformer."""
    return transformer.config.num_attention_heads


def apply_blade(transformer, config: BladeConfig, *, schedule=None):
    """Route a diffusers video transformer's self-attention through adaptive block-sparse attention.

    Wan: every `blocks[i].attn1` (self-attention); cross-attention stays dense. CogVideoX: every
    `transformer_blocks[i].attn1` (joint text + video attention, text as ASA's prefix). The latent
    grid is read from each call's input shape, so any resolution and frame count divisible by the
    patch size works. Dense steps and layers call the original processors. Applying to a patched
    transformer replaces its config and schedule.

    Args:
        transformer: `WanTransformer3DModel` or `CogVideoXTransformer3DModel`, or a `torch.compile`
            wrapper of one (patch before compiling to avoid a recompile).
        config: the ASA settings.
        schedule: where the denoising step index comes from: a diffusers scheduler (e.g.
            `pipe.scheduler`, whose current `timesteps` are read at each forward) or a 1-D sequence
            of timesteps. Each forward's step is the index of the schedule entry nearest its
            timestep. Required when `config.dense_steps > 0`.

    Returns:
        The same transformer, patched in place.

    NOTE: under gradient checkpointing the recomputation during backward reads the step of the
    latest forward. Without a schedule that step is always None, so masks always match. With a
    schedule, run backward before the next forward of the same transformer at another step.

    Raises:
        TypeError: unsupported model or config type.
        ValueError: dense_steps > 0 without a schedule, or dense_layers outside the model.
    """
    model = _unwrap(transformer)
    family = _family_of(model)
    if not isinstance(config, BladeConfig):
        raise TypeError(f"config must be a blade.BladeConfig, got {type(config).__name__}; e.g. BladeConfig.wan()")
    check_schedule(schedule)
    if config.dense_steps > 0 and schedule is None:
        raise ValueError(
            f"config.dense_steps={config.dense_steps} needs the denoising step index; pass "
            "schedule=pipe.scheduler (or the list of timesteps your loop runs) to apply_blade"
        )
    layers = num_layers(model)
    outside = [layer for layer in config.dense_layers if not 0 <= layer < layers]
    if outside:
        raise ValueError(f"config.dense_layers {outside} are outside the model's {layers} blocks [0, {layers})")

    if blade_state(model) is not None:
        remove_blade(model)

    from blade.patching.cogvideox import patch_cogvideox
    from blade.patching.wan import patch_wan

    state = BladeState(config=config, family=family, schedule=schedule)
    {"wan": patch_wan, "cogvideox": patch_cogvideox}[family](model, state)
    setattr(model, _STATE_ATTRIBUTE, state)
    logger.info(
        "applied ASA to %d %s attention layers (dense layers %s, dense steps %d)",
        layers,
        family,
        list(config.dense_layers),
        config.dense_steps,
    )
    return transformer


def set_schedule(transformer, schedule) -> None:
    """Replace the schedule a patched transformer reads its step index from (see `apply_blade`)."""
    state = blade_state(transformer)
    if state is None:
        raise ValueError("set_schedule needs a transformer patched with blade.apply_blade")
    check_schedule(schedule)
    if state.config.dense_steps > 0 and schedule is None:
        raise ValueError(f"config.dense_steps={state.config.dense_steps} needs a schedule; got None")
    state.schedule = schedule


def remove_blade(transformer):
    """Restore the original attention processors and remove the forward pre-hook.

    Args:
        transformer: a transformer patched with `apply_blade` (or its `torch.compile` wrapper).

    Returns:
        The same transformer, with exactly the processors it had before patching.

    Raises:
        ValueError: the transformer is not patched.
    """
    model = _unwrap(transformer)
    state = blade_state(model)
    if state is None:
        raise ValueError(f"{type(model).__name__} is not patched by blade; nothing to remove")
    for attn, processor in state.original_processors:
        attn.set_processor(processor)
    uninstall_hook(model)
    delattr(model, _STATE_ATTRIBUTE)
    logger.info("removed ASA from %d %s attention layers", len(state.original_processors), state.family)
    return transformer


@contextlib.contextmanager
def dense_attention(transformer):
    """Run every patched layer of `transformer` with its original dense processor inside the block.

    The output is then exactly the unpatched model's; the previous setting returns on exit, also on
    an exception. Distillation uses it for the dense teacher on the same base model as the student.

    Args:
        transformer: a transformer patched with `apply_blade`.

    Raises:
        ValueError: if the transformer is not patched.
    """
    state = blade_state(transformer)
    if state is None:
        raise ValueError(
            f"dense_attention needs a transformer patched with blade.apply_blade; {type(transformer).__name__} is not"
        )
    previous = state.force_dense
    state.force_dense = True
    try:
        yield transformer
    finally:
        state.force_dense = previous
