"""Adaptive block-sparse attention (ASA) for one self-attention call.

Video-BLADE (Gu et al., arXiv 2508.10774), "Adaptive block-sparse attention": reorder the video
tokens along a 3D Gilbert curve, estimate block importance from sampled tokens, keep per query block
the key blocks holding most of the estimated mass, attend exactly inside them, add a mean-pooled
global branch for the rest, merge the two through their log-sum-exps and restore the input order.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from blade.config import BladeConfig
from blade.kernels import block_sparse_attention
from blade.sparsity._checks import check_attention_tensor, check_generator
from blade.sparsity.estimate import estimate_block_scores
from blade.sparsity.gilbert import check_grid_thw
from blade.sparsity.layout import check_text_layout, sequence_order, text_block_mask
from blade.sparsity.pooled import merge_branches, pooled_attention
from blade.sparsity.select import select_blocks


def asa_block_mask(
    q_curve: torch.Tensor,
    k_curve: torch.Tensor,
    *,
    config: BladeConfig,
    generator: torch.Generator,
    text_tokens: int = 0,
    text_position: str = "prefix",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Estimate block scores and select the kept blocks of q, k that are already in curve order.

    Args:
        q_curve, k_curve: [B, H, L, D] in curve order (see `blade.sparsity.layout.sequence_order`).
        config: block size, samples per block, pooling and selection settings.
        generator: torch.Generator for the sampled tokens.
        text_tokens, text_position: text run whose blocks are forced on in both directions.

    Returns:
        block_mask: bool [B, H, nq, nk] and block_scores: float32 [B, H, nq, nk], both in curve order.
    """
    scores = estimate_block_scores(
        q_curve,
        k_curve,
        block_size=config.block_size,
        samples_per_block=config.samples_per_block,
        generator=generator,
        pooling=config.pooling,
    )
    forced = text_block_mask(q_curve.shape[2], text_tokens, text_position, config.block_size, q_curve.device)
    mask = select_blocks(
        scores,
        mode=config.selection,
        threshold=config.threshold,
        min_ratio=config.min_ratio,
        max_ratio=config.max_ratio,
        forced=forced,
    )
    return mask, scores


def asa_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    grid_thw: Sequence[int],
    config: BladeConfig,
    generator: torch.Generator,
    text_tokens: int = 0,
    text_position: str = "prefix",
    record: bool = False,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Run adaptive block-sparse self-attention on a video (or joint text + video) sequence.

    Args:
        q, k, v: [B, H, L, D] post-norm, post-RoPE projections, float32, bfloat16 or float16. The
            video tokens are in raster order (t, h, w with w fastest); with text, the sequence is
            [text | video] ("prefix") or [video | text] ("suffix"), L = T*H*W + text_tokens.
        grid_thw: (T, H, W) token grid of the video part after patching.
        config: `blade.BladeConfig`; uses block_size, samples_per_block, pooling, selection,
            threshold, min_ratio, max_ratio, pool_group (0 disables the global branch), merge_grad
            and backend. The dense_steps / dense_layers schedule is the caller's business.
        generator: torch.Generator for block sampling (the global RNG is never touched); the same
            generator state and inputs give the same mask and output.
        text_tokens: number of text tokens, kept as one run and never split by the reordering;
            their blocks are forced on for every query, and text queries see every key block.
        text_position: "prefix" or "suffix", where the text run sits in q, k, v.
        record: also return the block mask and scores (in curve order) in `stats`.

    Returns:
        out: [B, H, L, D] in the input order and dtype.
        stats: dict of tensors, none of them synchronised with the host:
            "kept_fraction": float32 [B, H], share of (query block, key block) pairs kept.
            "sparsity": float32 [B, H], 1 - kept_fraction - 1 / pool_group (the global branch costs
                about 1 / n of dense), or 1 - kept_fraction without the global branch.
            "estimation_seconds": float64 scalar, host time spent estimating and selecting. NOTE: on
                CUDA this is launch time unless `record` is set, which synchronises around the step.
            with record=True, "block_mask": bool [B, H, nq, nk] and "block_scores": float32
            [B, H, nq, nk], both indexed by blocks of the curve-ordered sequence.
    """
    check_attention_tensor("q", q)
    check_attention_tensor("k", k, like=q)
    check_attention_tensor("v", v, like=q)
    if k.shape[2] != q.shape[2] or v.shape[2] != q.shape[2]:
        raise ValueError(
            f"asa_attention is self-attention: q, k, v need one length, got {q.shape[2]}, {k.shape[2]}, {v.shape[2]}"
        )
    if not isinstance(config, BladeConfig):
        raise TypeError(f"config must be a blade.BladeConfig, got {type(config).__name__}")
    check_generator(generator)
    grid = check_grid_thw(grid_thw)
    check_text_layout(grid, q.shape[2], text_tokens, text_position)

    order, inverse = sequence_order(grid, text_tokens, text_position, q.device)
    q_curve = q.index_select(2, order)  # [B, H, L, D]
    k_curve = k.index_select(2, order)
    v_curve = v.index_select(2, order)

    synchronize = record and q.is_cuda
    if synchronize:
        torch.cuda.synchronize(q.device)
    started = time.perf_counter()
    mask, scores = asa_block_mask(
        q_curve, k_curve, config=config, generator=generator, text_tokens=text_tokens, text_position=text_position
    )
    if synchronize:
        torch.cuda.synchronize(q.device)
    estimation_seconds = time.perf_counter() - started

    group = config.pool_group
    if group > 0:
        out_sparse, lse_sparse = block_sparse_attention(
            q_curve, k_curve, v_curve, mask, block_size=config.block_size, backend=config.backend, return_lse=True
        )
        out_global, lse_global = pooled_attention(q_curve, k_curve, v_curve, group=group)
        out_curve = merge_branches(
            out_sparse, lse_sparse, out_global, lse_global, weight_grad=config.merge_grad
        ).to(q.dtype)
    else:
        out_curve = block_sparse_attention(
            q_curve, k_curve, v_curve, mask, block_size=config.block_size, backend=config.backend
        )
    out = out_curve.index_select(2, inverse)  # [B, H, L, D], input order

    kept = mask.float().mean(dim=(-2, -1))  # [B, H]
    stats = {
        "kept_fraction": kept,
        "sparsity": 1.0 - kept - (1.0 / group if group > 0 else 0.0),
        "estimation_seconds": torch.tensor(estimation_seconds, dtype=torch.float64),
    }
    if record:
        stats["block_mask"] = mask
        stats["block_scores"] = scores
    return out, stats
