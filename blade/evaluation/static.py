"""Run a transformer with a training-free static block mask (sliding tile or radial) in place of ASA.

`apply_static_mask` patches the transformer with `apply_blade` (the same processors, call context and
mask recording) and then swaps each processor's sparse call for one that builds the strategy's mask
from `blade.sparsity.strategies` at the target sparsity and attends under it. The static masks have
no global branch, so their sparsity is 1 - kept block fraction. Matching ASA's reported sparsity
(1 - kept - 1/n) therefore gives both the same attention cost.
"""

from __future__ import annotations

import types

import torch

from blade.config import BladeConfig
from blade.evaluation.config import STATIC_ATTENTIONS


def _static_sparse_attention(processor, query, key, value, *, text_tokens: int = 0):
    from blade.sparsity.strategies import STRATEGIES, attend

    state = processor.state
    context = state.context
    plan = STRATEGIES[processor.static_strategy](
        query,
        key,
        grid_thw=context.grid_thw,
        sparsity=processor.static_sparsity,
        block_size=state.config.block_size,
        text_tokens=text_tokens,
        text_position="prefix",
    )
    out = attend(plan, query, key, value, backend=state.config.backend)  # [B, H, L, D]
    recorder = state.recorder
    if recorder is not None and recorder.wants(processor.layer, context):
        batch, heads = query.shape[0], query.shape[1]
        mask = plan.block_mask.expand(batch, heads, -1, -1)  # [B, H, nq, nk]
        kept = mask.float().mean(dim=(-2, -1))  # [B, H]
        recorder.add(processor.layer, context, {
            "sparsity": 1.0 - kept, "kept_fraction": kept, "block_mask": mask, "block_scores": mask.float(),
        })
    return out.type_as(query)


def apply_static_mask(transformer, strategy: str, sparsity: float, config: BladeConfig | None = None, *, schedule=None):
    """Patch a Wan or CogVideoX transformer so its self-attention runs a static block mask.

    Args:
        transformer: the diffusers transformer (not yet patched).
        strategy: "sliding_tile" or "radial".
        sparsity: target share of skipped block pairs, in [0, 1). Each query block keeps
            floor(n_k (1 - sparsity)) key blocks (at least one), plus text blocks.
        config: supplies block_size, backend, dense_steps and dense_layers (default `BladeConfig()`).
        schedule: as in `apply_blade` (needed for dense_steps).

    Undo with `blade.remove_blade(transformer)`.
    """
    from blade.patching import apply_blade
    from blade.patching.apply import blade_state

    if strategy not in STATIC_ATTENTIONS:
        raise ValueError(f"strategy must be one of {STATIC_ATTENTIONS}, got {strategy!r}")
    if not isinstance(sparsity, (int, float)) or not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"sparsity must be a float in [0, 1), got {sparsity!r}")
    apply_blade(transformer, config or BladeConfig(), schedule=schedule)
    for attn, _ in blade_state(transformer).original_processors:
        processor = attn.get_processor()
        processor.static_strategy = strategy
        processor.static_sparsity = float(sparsity)
        # an instance attribute shadows the class's ASA call for this processor only
        processor.sparse_attention = types.MethodType(torch.compiler.disable(_static_sparse_attention), processor)
    return transformer
