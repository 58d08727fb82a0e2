"""Capture the q, k, v that a Wan or CogVideoX transformer's self-attention receives, for offline analysis.

Block-mask strategies are compared on real attention inputs by capturing them during a pipeline run
and scoring every strategy on the same tensors afterwards (`blade.bench.masks.measure_quality`).
The capture works on a plain or an ASA-patched transformer. A forward pre-hook on each selected
attention module recomputes the projections with the same functions the blade processors use, so
the captured tensors are exactly what ASA (or dense attention) receives in that call.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from dataclasses import dataclass, field

import torch

logger = logging.getLogger(__name__)


@dataclass
class CapturedCall:
    """The inputs of one self-attention call.

    Attributes:
        layer: transformer block index.
        step: denoising step index on the schedule, or None without a schedule.
        forward_index: transformer forwards since the capture started (the two CFG forwards of a
            Wan step have consecutive indices, the conditional one first).
        grid_thw: latent token grid (T, H, W) of the video tokens.
        text_tokens: number of text tokens in front of the video tokens (CogVideoX), 0 for Wan.
        q, k, v: [B, H, text_tokens + T*H*W, D] on the CPU in the model's dtype, post-norm and
            post-rotary, video tokens in raster (t, h, w) order.
    """

    layer: int
    step: int | None
    forward_index: int
    grid_thw: tuple[int, int, int]
    text_tokens: int
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor

    def video_qkv(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return q, k, v of the video tokens only, each [B, H, T*H*W, D]."""
        return tuple(x[:, :, self.text_tokens :] for x in (self.q, self.k, self.v))


@dataclass
class AttentionCapture:
    """The calls captured by `capture_attention_inputs`, in execution order."""

    calls: list[CapturedCall] = field(default_factory=list)

    def find(self, layer: int, step: int | None = None) -> CapturedCall:
        """Return the first captured call of `layer` (at `step`, unless None).

        Raises:
            KeyError: no such call was captured; the message lists what was.
        """
        for call in self.calls:
            if call.layer == layer and (step is None or call.step == step):
                return call
        captured = sorted({(call.layer, call.step) for call in self.calls}, key=str)
        raise KeyError(f"no captured call of layer {layer} at step {step}; captured (layer, step) pairs: {captured}")


class _Capturer:
    def __init__(self, family, transformer, layers, steps, schedule, max_bytes):
        from blade.patching.cogvideox import cogvideox_latent_grid
        from blade.patching.wan import wan_latent_grid

        self.family = family
        self.grid_of = {"wan": wan_latent_grid, "cogvideox": cogvideox_latent_grid}[family](transformer)
        self.signature = inspect.signature(transformer.forward)
        self.layers = layers
        self.steps = steps
        self.schedule = schedule
        self.max_bytes = max_bytes
        self.stored_bytes = 0
        self.forward_index = -1
        self.grid_thw = None
        self.step = None
        self.capture = AttentionCapture()
        self._seen: set[tuple[int, int]] = set()
        self._budget_warning_logged = False

    def before_forward(self, module, args, kwargs):
        from blade.patching.common import step_index

        arguments = self.signature.bind_partial(*args, **kwargs).arguments
        self.grid_thw = self.grid_of(arguments)
        self.step = None if self.schedule is None else step_index(arguments["timestep"], self.schedule)
        self.forward_index += 1

    def hook_for(self, layer: int, attn):
        signature = inspect.signature(attn.forward)
        extra_name = next(
            (name for name, parameter in signature.parameters.items() if parameter.kind is parameter.VAR_KEYWORD), None
        )

        def before_attention(module, args, kwargs):
            if self.steps is not None and self.step not in self.steps:
                return None
            if (self.forward_index, layer) in self._seen:
                return None  # a gradient-checkpointing recomputation of a captured call
            bound = signature.bind_partial(*args, **kwargs).arguments
            # keyword arguments a processor takes (CogVideoX's image_rotary_emb) arrive in **kwargs
            arguments = {**bound.pop(extra_name, {}), **bound} if extra_name else bound
            self._store(layer, module, arguments)
            return None

        return before_attention

    @torch.no_grad()
    def _store(self, layer, attn, arguments):
        from blade.patching.cogvideox import cogvideox_joint_qkv
        from blade.patching.wan import wan_self_attention_qkv

        hidden_states = arguments["hidden_states"]
        if self.family == "wan":
            if arguments.get("encoder_hidden_states") is not None:
                return  # not a self-attention call
            q, k, v = wan_self_attention_qkv(attn, hidden_states, arguments.get("rotary_emb"))
            text_tokens = 0
        else:
            encoder_hidden_states = arguments["encoder_hidden_states"]
            q, k, v = cogvideox_joint_qkv(attn, hidden_states, encoder_hidden_states, arguments.get("image_rotary_emb"))
            text_tokens = encoder_hidden_states.shape[1]
        size = 3 * q.numel() * q.element_size()
        self._seen.add((self.forward_index, layer))
        if self.stored_bytes + size > self.max_bytes:
            if not self._budget_warning_logged:
                logger.warning(
                    "attention capture reached max_bytes=%d; later calls are skipped. Narrow layers or steps, "
                    "or raise max_bytes",
                    self.max_bytes,
                )
                self._budget_warning_logged = True
            return
        self.stored_bytes += size
        self.capture.calls.append(
            CapturedCall(
                layer=layer,
                step=self.step,
                forward_index=self.forward_index,
                grid_thw=tuple(self.grid_thw),
                text_tokens=text_tokens,
                q=q.detach().to("cpu"),
                k=k.detach().to("cpu"),
                v=v.detach().to("cpu"),
            )
        )


@contextlib.contextmanager
def capture_attention_inputs(transformer, *, layers, steps=None, schedule=None, max_bytes: int = 2 * 2**30):
    """Capture the q, k, v of selected self-attention calls while the block runs.

    Wan: `blocks[i].attn1`; CogVideoX: `transformer_blocks[i].attn1` (joint text + video tokens). The
    tensors are copied to the CPU, which synchronises the device on every captured call, so keep the
    selection small on a real model (a Wan2.1 480p call is about 200 MB per tensor in float32).

    Args:
        transformer: a `WanTransformer3DModel` or `CogVideoXTransformer3DModel`, patched with
            `apply_blade` or not.
        layers: block indices to capture (an iterable of ints).
        steps: denoising step indices to capture, or None for every forward. Needs a schedule.
        schedule: where step indices come from: a diffusers scheduler or a 1-D sequence of timesteps,
            as in `apply_blade`. None takes the schedule registered by `apply_blade`, if any.
        max_bytes: budget for the stored q, k, v; calls beyond it are skipped with one warning.

    Yields:
        An `AttentionCapture` that fills while the block runs.

    Raises:
        TypeError: the transformer is neither Wan nor CogVideoX.
        ValueError: invalid layers, or steps without any schedule.
    """
    from blade.patching.apply import _family_of, _unwrap, blade_state, num_layers
    from blade.patching.common import check_schedule
    from blade.patching.recording import _check_indices

    model = _unwrap(transformer)
    family = _family_of(model)
    layers = _check_indices("layers", layers, num_layers(model))
    if not layers:
        raise ValueError(f"layers must list at least one block index in [0, {num_layers(model)}), got {layers!r}")
    check_schedule(schedule)
    if schedule is None and blade_state(model) is not None:
        schedule = blade_state(model).schedule
    if steps is not None and schedule is None:
        raise ValueError(
            "steps=... needs the step index, which comes from the denoising schedule; pass schedule=pipe.scheduler"
        )
    if not isinstance(max_bytes, int) or max_bytes < 0:
        raise ValueError(f"max_bytes must be an int >= 0, got {max_bytes!r}")

    capturer = _Capturer(family, model, frozenset(layers), None if steps is None else frozenset(steps), schedule, max_bytes)
    blocks = model.blocks if family == "wan" else model.transformer_blocks
    handles = [model.register_forward_pre_hook(capturer.before_forward, with_kwargs=True)]
    for layer in layers:
        attn = blocks[layer].attn1
        handles.append(attn.register_forward_pre_hook(capturer.hook_for(layer, attn), with_kwargs=True))
    try:
        yield capturer.capture
    finally:
        for handle in handles:
            handle.remove()
    logger.info("captured %d self-attention calls (%.1f MB)", len(capturer.capture.calls), capturer.stored_bytes / 2**20)
