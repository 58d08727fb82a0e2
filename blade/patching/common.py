"""State shared by the per-family patches: per-call context, step index, seeding and the ASA call.

A patched transformer carries one `BladeState`. A forward pre-hook on the transformer fills in the
per-call context (latent grid, denoising step, forward counter) before any block runs, because
diffusers calls the attention processors without the model's arguments (Wan calls self-attention as
`attn1(x, None, None, rotary_emb)`). Each patched attention module gets its own processor that stores
its layer index and reads the context from the state.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from blade.config import BladeConfig

logger = logging.getLogger(__name__)

# Multiplier (the 64-bit golden-ratio constant) and mask of the hash that mixes (seed, layer, step)
# into one 63-bit generator seed.
_SEED_MULTIPLIER = 0x9E3779B97F4A7C15
_SEED_MASK = (1 << 63) - 1


@dataclass
class CallContext:
    """Shape and step of the current transformer forward, set by the forward pre-hook.

    Attributes:
        grid_thw: latent token grid (T, H, W) after patching.
        step: denoising step index on the registered schedule, or None without a schedule.
        forward_index: counter of transformer forwards since patching; a recomputation under
            gradient checkpointing runs inside the same forward index.
    """

    grid_thw: tuple[int, int, int]
    step: int | None
    forward_index: int


@dataclass
class BladeState:
    """Everything `apply_blade` attaches to a transformer, and what `remove_blade` needs to undo it.

    Attributes:
        config: the ASA settings.
        family: "wan" or "cogvideox".
        schedule: a diffusers scheduler (its `timesteps` are read at every forward, so they follow
            `set_timesteps`), a 1-D float tensor of timesteps, or None.
        context: the current call's context, or None before the first forward.
        recorder: the active `MaskRecorder` of `record_masks`, or None.
        original_processors: (attention module, the processor that patching replaced) pairs.
        forward_count: number of forwards seen so far.
        force_dense: every layer runs the original dense processor (set by `dense_attention`).
    """

    config: BladeConfig
    family: str
    schedule: Any = None
    context: CallContext | None = None
    recorder: Any = None
    original_processors: list[tuple[Any, Any]] = field(default_factory=list)
    forward_count: int = 0
    force_dense: bool = False

    def runs_dense(self, layer: int) -> bool:
        """Return whether `layer` runs the original dense processor in the current call."""
        if self.force_dense or layer in self.config.dense_layers:
            return True
        step = self.context.step if self.context is not None else None
        return step is not None and step < self.config.dense_steps


def schedule_timesteps(schedule) -> torch.Tensor | None:
    """Return the timesteps of a schedule (scheduler or 1-D tensor/sequence) as a float64 CPU tensor."""
    if schedule is None:
        return None
    timesteps = getattr(schedule, "timesteps", schedule)
    if timesteps is None:
        raise ValueError(
            f"the registered scheduler {type(schedule).__name__} has no timesteps yet; call its "
            "set_timesteps(num_inference_steps) (pipelines do this at the start of each call)"
        )
    return torch.as_tensor(timesteps).detach().to("cpu", torch.float64).reshape(-1)


def check_schedule(schedule) -> None:
    """Raise TypeError or ValueError unless `schedule` is None, a scheduler or a 1-D timestep sequence."""
    if schedule is None or hasattr(schedule, "timesteps"):
        return
    try:
        timesteps = torch.as_tensor(schedule)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(
            "schedule must be a diffusers scheduler (e.g. pipe.scheduler) or a 1-D sequence of timesteps, "
            f"got {type(schedule).__name__}"
        ) from error
    if timesteps.ndim != 1 or timesteps.numel() == 0:
        raise ValueError(
            f"schedule must be a non-empty 1-D sequence of timesteps, got shape {tuple(timesteps.shape)}"
        )


def step_index(timestep, schedule) -> int | None:
    """Map the timestep of a transformer call to its index on the registered schedule.

    The index is that of the schedule entry nearest to the timestep, so a training call at a
    timestep between two entries counts as the nearer step. A per-token timestep ([B, L], Wan2.2
    TI2V) counts as its maximum, the noise level of the tokens being denoised.

    Args:
        timestep: the `timestep` argument of the transformer: a number or a tensor [B] or [B, L].
        schedule: see `BladeState.schedule`.

    Returns:
        The step index, or None when no schedule is registered.

    Raises:
        ValueError: the batch mixes timesteps of different steps.

    NOTE: reading the timestep copies one small tensor to the host once per transformer forward (a
    device sync on GPU), never per attention call.
    """
    timesteps = schedule_timesteps(schedule)
    if timesteps is None:
        return None
    values = torch.as_tensor(timestep).detach().to("cpu", torch.float64)
    values = values.reshape(values.shape[0], -1).amax(dim=1) if values.ndim > 0 else values.reshape(1)  # [B]
    distances = (values[:, None] - timesteps[None, :]).abs()  # [B, n_steps]
    indices = distances.argmin(dim=1).tolist()
    if len(set(indices)) > 1:
        raise ValueError(
            f"the batch mixes timesteps of different denoising steps {indices}; blade chooses dense or "
            "sparse attention per call, so split the batch by timestep"
        )
    return indices[0]


def call_seed(seed: int, layer: int, step: int | None) -> int:
    """Derive the seed of one attention call's sampling generator from (seed, layer, step).

    The same triple always gives the same seed, so the recomputed forward of gradient checkpointing
    and the two CFG calls of one step sample the same tokens.

    NOTE: without a registered schedule the step is None, so every call of a layer samples the same
    positions. A training loop that wants fresh samples per iteration must vary `config.seed`.
    """
    value = seed & _SEED_MASK
    for part in (layer, -1 if step is None else step):
        value = ((value ^ (part & _SEED_MASK)) * _SEED_MULTIPLIER + 1) & _SEED_MASK
    return value


def make_generator(device: torch.device, seed: int) -> torch.Generator:
    """Return a generator on `device` seeded with `seed`."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def run_asa(q, k, v, *, grid_thw, config, generator, text_tokens=0, record=False):
    """Run adaptive block-sparse attention on one self-attention call.

    Args:
        q, k, v: [B, H, L, D] post-norm, post-RoPE projections in raster (t, h, w) video order, with
            `text_tokens` text tokens in front.
        grid_thw: latent token grid (T, H, W); T * H * W + text_tokens must equal L.
        config: BladeConfig.
        generator: seeded generator of the block sampling.
        text_tokens: number of text tokens at the start of the sequence (CogVideoX), 0 for Wan.
        record: also return "block_mask" and "block_scores" in the stats.

    Returns:
        (out [B, H, L, D] in the input order and dtype, stats dict of tensors).
    """
    from blade.sparsity import asa_attention

    return asa_attention(
        q,
        k,
        v,
        grid_thw=grid_thw,
        config=config,
        generator=generator,
        text_tokens=text_tokens,
        text_position="prefix",
        record=record,
    )


def check_grid(dimension_names, sizes, patch_sizes, model_name) -> tuple[int, int, int]:
    """Divide latent sizes by the patch size, raising ValueError with valid nearby sizes if they do not divide.

    Args:
        dimension_names: names of the three latent axes, e.g. ("frames", "height", "width").
        sizes: latent sizes along those axes.
        patch_sizes: the model's patch size along those axes.
        model_name: class name used in the message.

    Returns:
        The token grid (T, H, W).
    """
    for name, size, patch in zip(dimension_names, sizes, patch_sizes):
        if size % patch or size == 0:
            lower = max(patch, size - size % patch)
            upper = lower + patch if size >= lower else lower
            valid = sorted({lower, upper})
            pixels = ""
            if name in ("height", "width"):
                # Both Wan2.1's and CogVideoX's VAEs downsample 8x in space.
                pixels = f" (pixel {name} {' or '.join(str(8 * value) for value in valid)} with an 8x VAE)"
            raise ValueError(
                f"latent {name} {size} is not divisible by the patch size {patch} of {model_name}; "
                f"valid nearby latent {name} values are {valid}{pixels}; resize the video or latents"
            )
    return tuple(size // patch for size, patch in zip(sizes, patch_sizes))


class LatentGrid:
    """Reader of a call's token grid (T, H, W) from its 5-D latents and the model's patch size.

    Args:
        model_name: class name used in messages.
        layout: axis letters of `hidden_states`, "BCFHW" for Wan and "BFCHW" for CogVideoX.
        patch_thw: patch size along frames, height and width.
    """

    def __init__(self, model_name: str, layout: str, patch_thw: tuple[int, int, int]):
        self.model_name = model_name
        self.layout = layout
        self.patch_thw = tuple(patch_thw)

    def __call__(self, arguments) -> tuple[int, int, int]:
        hidden_states = arguments["hidden_states"]
        if hidden_states.ndim != 5:
            raise ValueError(
                f"{self.model_name} expects hidden_states [{', '.join(self.layout)}], got shape "
                f"{tuple(hidden_states.shape)}"
            )
        sizes = tuple(hidden_states.shape[self.layout.index(axis)] for axis in "FHW")
        return check_grid(("frames", "height", "width"), sizes, self.patch_thw, self.model_name)


class CallContextHook:
    """Forward pre-hook that fills `state.context` before every transformer forward.

    A callable object rather than a closure, so `copy.deepcopy` of a patched transformer gives the
    copy a hook that writes into the copy's own state (the processors' state is copied alongside).

    Args:
        state: the transformer's BladeState.
        signature: `inspect.signature` of the transformer's forward, to read arguments by name.
        grid_of: maps the bound forward arguments to the token grid (T, H, W), raising on bad sizes
            (a `LatentGrid`).
    """

    def __init__(self, state: BladeState, signature: inspect.Signature, grid_of: Callable):
        self.state = state
        self.signature = signature
        self.grid_of = grid_of

    # Runs eagerly under torch.compile: binding arguments and reading the schedule are host-side
    # Python work, and tracing them would only add guards on the forward counter.
    @torch.compiler.disable
    def __call__(self, module, args, kwargs):
        state = self.state
        arguments = self.signature.bind_partial(*args, **kwargs).arguments
        grid_thw = self.grid_of(arguments)
        step = step_index(arguments["timestep"], state.schedule) if state.schedule is not None else None
        state.context = CallContext(grid_thw=grid_thw, step=step, forward_index=state.forward_count)
        state.forward_count += 1
        return None


def install(transformer, state: BladeState, attention_modules, processor_class, grid_of: Callable) -> None:
    """Put a `processor_class` on each attention module and register the `CallContextHook`.

    Args:
        transformer: the diffusers transformer.
        state: its BladeState; receives the (module, original processor) pairs.
        attention_modules: the attention modules to patch, in block order (index = layer).
        processor_class: a `BladeProcessorBase` subclass.
        grid_of: see `CallContextHook`.
    """
    for layer, attn in enumerate(attention_modules):
        original = attn.get_processor()
        state.original_processors.append((attn, original))
        attn.set_processor(processor_class(state, layer, original))
    hook = CallContextHook(state, inspect.signature(transformer.forward), grid_of)
    transformer.register_forward_pre_hook(hook, with_kwargs=True)
    logger.debug("patched %d attention layers of %s", len(state.original_processors), type(transformer).__name__)


def uninstall_hook(transformer) -> None:
    """Remove every `CallContextHook` from the transformer.

    Found by type instead of through the registration handle, because a handle survives
    `copy.deepcopy` pointing at the original module's hook table.
    """
    for key, hook in list(transformer._forward_pre_hooks.items()):
        if isinstance(hook, CallContextHook):
            del transformer._forward_pre_hooks[key]
            transformer._forward_pre_hooks_with_kwargs.pop(key, None)


class BladeProcessorBase:
    """Common part of the patched processors: layer index, original processor, dense fallback.

    diffusers' `set_attention_backend` writes `_attention_backend` on every processor; the property
    forwards it to the original processor, which runs the dense calls.
    """

    def __init__(self, state: BladeState, layer: int, original):
        self.state = state
        self.layer = layer
        self.original = original

    @property
    def _attention_backend(self):
        return getattr(self.original, "_attention_backend", None)

    @_attention_backend.setter
    def _attention_backend(self, backend):
        self.original._attention_backend = backend

    @property
    def _parallel_config(self):
        return getattr(self.original, "_parallel_config", None)

    @_parallel_config.setter
    def _parallel_config(self, parallel_config):
        self.original._parallel_config = parallel_config

    # Runs eagerly under torch.compile: the data-dependent block selection cannot be captured in
    # one graph anyway. Tracing into ASA's host-side curve tables made the first compiled call of
    # the tiny Wan model take 38 s instead of 3.3 s (backend "eager", shared 2-core CPU).
    @torch.compiler.disable
    def sparse_attention(self, query, key, value, *, text_tokens: int = 0):
        """Run ASA on [B, H, L, D] projections for this layer and the current call, recording if asked.

        Returns:
            [B, H, L, D] attention output in the input order and dtype.
        """
        state = self.state
        context = state.context
        recorder = state.recorder
        record = recorder is not None and recorder.wants(self.layer, context)
        generator = make_generator(query.device, call_seed(state.config.seed, self.layer, context.step))
        out, stats = run_asa(
            query,
            key,
            value,
            grid_thw=context.grid_thw,
            config=state.config,
            generator=generator,
            text_tokens=text_tokens,
            record=record,
        )
        if record:
            recorder.add(self.layer, context, stats)
        return out

    def record_dense(self, batch_size: int, heads: int):
        """Record a dense call (sparsity 0 for each of the [batch_size, heads] pairs) if it is selected."""
        recorder = self.state.recorder
        context = self.state.context
        if recorder is not None and context is not None and recorder.wants(self.layer, context):
            recorder.add_dense(self.layer, context, batch_size, heads)
