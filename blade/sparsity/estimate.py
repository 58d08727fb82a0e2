"""Block importance from sampled tokens: which key blocks matter for each query block.

Step 3 of ASA (Video-BLADE, Gu et al., arXiv 2508.10774, "Adaptive block-sparse attention"): draw a
few tokens from every query block and every key block, compute the logits between the samples only
(about (samples / block_size)^2 of the dense QK^T cost) and pool them into one score per block pair.
"""

from __future__ import annotations

import math

import torch

from blade.sparsity._checks import check_attention_tensor, check_generator, check_positive_int

POOLINGS = ("max", "softmax")

# logits held at once while pooling, in elements (float32: 4 bytes each)
_CHUNK_ELEMENTS = 1 << 26


def sample_block_tokens(
    length: int, block_size: int, samples: int, generator: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw `samples` distinct token positions from each block of `block_size` tokens.

    Args:
        length: sequence length L; the last block holds L - (n - 1) * block_size real tokens.
        block_size: tokens per block.
        samples: positions drawn per block, at most block_size.
        generator: source of randomness; draws happen on its device, then move to `device`.
        device: device of the returned tensors.

    Returns:
        index: int64 [n * samples], sequence positions grouped by block, ascending inside a block.
        valid: bool [n, samples]; False where a ragged last block has fewer real tokens than
            `samples` (those slots repeat a real position and must be masked out by the caller).
    """
    blocks = math.ceil(length / block_size)
    offsets = torch.arange(block_size, device=generator.device)  # [bs]
    starts = torch.arange(blocks, device=generator.device) * block_size  # [n]
    real = (starts[:, None] + offsets[None, :]) < length  # [n, bs]

    # random keys in [0, 1); padding gets 2 so it is drawn only after every real token
    keys = torch.rand((blocks, block_size), generator=generator, device=generator.device)
    keys = keys.masked_fill(~real, 2.0)
    chosen = keys.topk(samples, dim=-1, largest=False).indices.sort(dim=-1).values  # [n, s]
    valid = real.gather(1, chosen)  # [n, s]
    index = (starts[:, None] + chosen).clamp_max(length - 1)  # [n, s]
    return index.reshape(-1).to(device), valid.to(device)


def estimate_block_scores(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    block_size: int,
    samples_per_block: int,
    generator: torch.Generator,
    pooling: str = "max",
    scale: float | None = None,
) -> torch.Tensor:
    """Estimate the importance of every (query block, key block) pair from sampled tokens.

    Args:
        q: [B, H, Lq, D] queries, any floating dtype.
        k: [B, H, Lk, D] keys, same B, H, D and device as q.
        block_size: tokens per block; the last block of q or k may be ragged.
        samples_per_block: tokens drawn per block, in [1, block_size]. A ragged block with fewer
            real tokens uses all of them; padding is never drawn.
        generator: torch.Generator for the draws (the global RNG is never touched). One set of
            positions is drawn per call and shared by every batch element and head, queries first.
        pooling: "max" (authors' score): for each sampled query, exp(max logit inside key block j
            minus its max over all sampled keys), then the max over the sampled queries of the block.
            "softmax": softmax over all sampled keys, summed per key block, max over sampled queries.
        scale: logit scale; 1 / sqrt(D) when None.

    Returns:
        float32 [B, H, ceil(Lq / block_size), ceil(Lk / block_size)], each row summing to 1.
        Computed without gradients; memory grows with the number of sampled pairs, never Lq x Lk.
    """
    check_attention_tensor("q", q)
    check_attention_tensor("k", k, like=q)
    check_positive_int("block_size", block_size)
    check_positive_int("samples_per_block", samples_per_block)
    if samples_per_block > block_size:
        raise ValueError(
            f"samples_per_block must be at most block_size={block_size}, got {samples_per_block}"
        )
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    check_generator(generator)

    batch, heads, q_len, dim = q.shape
    k_len = k.shape[2]
    samples = samples_per_block
    scale = dim**-0.5 if scale is None else float(scale)

    with torch.no_grad():
        q_index, q_valid = sample_block_tokens(q_len, block_size, samples, generator, q.device)
        k_index, k_valid = sample_block_tokens(k_len, block_size, samples, generator, q.device)
        q_blocks, k_blocks = q_valid.shape[0], k_valid.shape[0]
        q_sampled = q.index_select(2, q_index)  # [B, H, nq * s, D]
        k_sampled = k.index_select(2, k_index).transpose(-1, -2)  # [B, H, D, nk * s]
        key_padding = ~k_valid.reshape(-1)  # [nk * s]

        rows_per_chunk = max(1, _CHUNK_ELEMENTS // (batch * heads * samples * k_blocks * samples))
        scores = []
        for start in range(0, q_blocks, rows_per_chunk):
            stop = min(start + rows_per_chunk, q_blocks)
            chunk = q_sampled[:, :, start * samples : stop * samples]  # [B, H, c * s, D]
            logits = torch.matmul(chunk, k_sampled).float() * scale  # [B, H, c * s, nk * s]
            logits.masked_fill_(key_padding, float("-inf"))
            per_query = _pool_keys(logits, k_blocks, samples, pooling)  # [B, H, c * s, nk]
            per_query = per_query.view(batch, heads, stop - start, samples, k_blocks)
            # padded query slots must not win the max over sampled queries
            per_query = per_query.masked_fill(~q_valid[start:stop, :, None], 0.0)
            scores.append(per_query.amax(dim=3))  # [B, H, c, nk]
        scores = torch.cat(scores, dim=2)  # [B, H, nq, nk]
        return scores / scores.sum(dim=-1, keepdim=True)


def _pool_keys(logits: torch.Tensor, k_blocks: int, samples: int, pooling: str) -> torch.Tensor:
    """Reduce sampled-key logits [B, H, r, nk * s] to one value per key block [B, H, r, nk]."""
    grouped = logits.unflatten(-1, (k_blocks, samples))  # [B, H, r, nk, s]
    if pooling == "max":
        block_max = grouped.amax(dim=-1)  # [B, H, r, nk]
        row_max = block_max.amax(dim=-1, keepdim=True)  # [B, H, r, 1]
        return torch.exp(block_max - row_max)
    probabilities = torch.softmax(logits, dim=-1).unflatten(-1, (k_blocks, samples))
    return probabilities.sum(dim=-1)
