"""The `torch` backend: block-sparse attention in plain PyTorch, forward and backward.

For every query block, the kept key and value blocks are gathered into one contiguous sequence and
attended to with a dense kernel; gradients are scattered back into the key and value blocks. Query
blocks are grouped by how many key blocks they keep, so each group is one batched call with no
padding, and groups are processed in chunks of bounded size. Peak memory therefore grows with the
kept blocks of one chunk plus O(L * D) for inputs, outputs and gradients; no Lq x Lk tensor is ever
allocated.

Two engines compute a chunk:
- "aten": PyTorch's fused CPU flash-attention operator and its backward (CPU only). It returns the
  log-sum-exp (LSE) that public `scaled_dot_product_attention` hides.
- "matmul": explicit float32 matmuls and softmax (any device). Used off CPU, and for the backward
  when a gradient flows into the LSE output, which the fused backward cannot take.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from blade.kernels.masks import num_blocks

# Bytes of gathered keys plus values per chunk. Chunks that stay in the last-level cache between the
# gather and the fused kernel run fastest on an idle CPU: forward at L=16384, H=12, D=64, density 0.2
# on a 2-core EPYC (32 MiB L3) ran 3.86x faster than dense SDPA with 8 MiB chunks against 3.39x with
# 64 MiB. On a CPU shared with other busy processes, many small chunks lose more time waiting for
# both threads at each kernel call, and 64 MiB chunks were about twice as fast there.
_CHUNK_BYTES = 8 * 2**20

_aten = torch.ops.aten


@dataclass
class _Group:
    """Query-block rows that keep the same number of key blocks."""

    rows: torch.Tensor  # [R] index into the flattened [B * H * n_q_blocks] rows
    key_blocks: torch.Tensor  # [R, c] index into the flattened [B * H * n_k_blocks] key blocks, ascending per row
    key_len: int  # gathered key tokens per row: c * block_size, less when the ragged last block is kept
    first_row: int | None  # set when rows is the range [first_row, first_row + R): chunks are then slices

    @classmethod
    def create(cls, rows: torch.Tensor, key_blocks: torch.Tensor, key_len: int) -> "_Group":
        first_row = None
        # rows come sorted from nonzero(), so they form a range exactly when the span equals the count
        if int(rows[-1]) - int(rows[0]) + 1 == rows.numel():
            first_row = int(rows[0])
        return cls(rows, key_blocks, key_len, first_row)


def _plan_groups(block_mask, batch, heads, n_q, n_k, k_len, block_size) -> list[_Group]:
    mask = block_mask.expand(batch, heads, n_q, n_k).reshape(batch * heads * n_q, n_k)  # [rows, nk]
    counts = mask.sum(dim=-1)  # [rows]
    row_head = torch.arange(batch * heads * n_q, device=mask.device) // n_q  # [rows], flat (b, h) of each row
    tail_padding = n_k * block_size - k_len  # padding tokens in the last key block

    groups = []
    # NOTE: reading the distinct counts is a host sync on CUDA; the chunk sizes must be known on the
    # host to allocate the gathered blocks.
    for count in torch.unique(counts).tolist():
        if count == 0:
            continue  # rows with no kept block keep out = 0 and lse = -inf
        rows = (counts == count).nonzero().squeeze(1)  # [R]
        kept = mask[rows].nonzero()[:, 1].view(-1, count)  # [R, c], ascending (row-major nonzero)
        key_blocks = row_head[rows].unsqueeze(1) * n_k + kept  # [R, c]
        if tail_padding == 0:
            groups.append(_Group.create(rows, key_blocks, count * block_size))
            continue
        # The ragged last key block is the last of its row, so trimming the gathered sequence drops
        # exactly its padding and no mask is needed.
        has_tail = kept[:, -1] == n_k - 1  # [R]
        for selected, key_len in ((~has_tail, count * block_size), (has_tail, count * block_size - tail_padding)):
            if bool(selected.any()):
                groups.append(_Group.create(rows[selected], key_blocks[selected], key_len))
    return groups


def _rows_per_chunk(group: _Group, head_dim: int, element_size: int) -> int:
    row_bytes = 2 * group.key_len * head_dim * element_size
    return max(1, _CHUNK_BYTES // row_bytes)


def _chunks(group: _Group, head_dim: int, element_size: int):
    rows_per_chunk = _rows_per_chunk(group, head_dim, element_size)
    for start in range(0, group.rows.numel(), rows_per_chunk):
        stop = min(start + rows_per_chunk, group.rows.numel())
        if group.first_row is not None:
            # Contiguous rows: slicing avoids copying queries in and outputs out (a view, not an index).
            rows = slice(group.first_row + start, group.first_row + stop)
        else:
            rows = group.rows[start:stop]
        yield rows, group.key_blocks[start:stop]


def _gather_buffers(k: torch.Tensor, groups: list[_Group], block_size: int):
    """Allocate one reusable gather buffer each for keys and values, sized for the largest chunk."""
    head_dim = k.shape[-1]
    elements = 0
    for group in groups:
        rows = min(group.rows.numel(), _rows_per_chunk(group, head_dim, k.element_size()))
        elements = max(elements, rows * group.key_blocks.shape[1] * block_size * head_dim)
    return k.new_empty(elements), k.new_empty(elements)


def _to_blocks(x: torch.Tensor, n_blocks: int, block_size: int) -> torch.Tensor:
    batch, heads, length, dim = x.shape
    padding = n_blocks * block_size - length
    if padding:
        x = F.pad(x, (0, 0, 0, padding))
    return x.reshape(batch * heads * n_blocks, block_size, dim)  # [B * H * n_blocks, bs, D]


def _gather_keys(blocks: torch.Tensor, key_blocks: torch.Tensor, key_len: int, buffer: torch.Tensor | None = None):
    """Gather key blocks [R, c] of blocks [N, bs, D] into [R, key_len, D], reusing `buffer` if given."""
    rows, count = key_blocks.shape
    block_size, head_dim = blocks.shape[1], blocks.shape[2]
    if buffer is None:
        gathered = blocks[key_blocks.reshape(-1)]
    else:
        # Writing into a reused buffer avoids a fresh allocation (and its page faults) per chunk.
        gathered = buffer[: rows * count * block_size * head_dim].view(rows * count, block_size, head_dim)
        torch.index_select(blocks, 0, key_blocks.reshape(-1), out=gathered)
    gathered = gathered.view(rows, count * block_size, head_dim)  # [R, c * bs, D]
    if key_len < gathered.shape[1]:
        gathered = gathered[:, :key_len].contiguous()  # [R, key_len, D]
    return gathered


def _scatter_add_blocks(target: torch.Tensor, key_blocks: torch.Tensor, source: torch.Tensor) -> None:
    """Add source [M, bs, D] into target [N, bs, D] at block indices key_blocks [M] (repeats allowed)."""
    if target.device.type != "cpu":
        target.index_add_(0, key_blocks, source)
        return
    # On CPU, index_add_ over large slices runs as an element-wise scatter that is about 15x slower
    # than adding whole blocks one by one (measured: 82 ms vs 5 ms for 1,014 blocks of 128 x 64).
    for position, block in enumerate(key_blocks.tolist()):
        target[block].add_(source[position])


def _engine_forward(engine, q, k, v, scale):
    """Attend q [R, bs, D] to k, v [R, Lg, D]; return out [R, bs, D] in q's dtype and lse [R, bs] float32."""
    if engine == "aten":
        out, lse = _aten._scaled_dot_product_flash_attention_for_cpu(
            q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1), 0.0, False, scale=scale
        )
        return out.squeeze(1), lse.squeeze(1)
    logits = torch.bmm(q.float(), k.float().transpose(1, 2)) * scale  # [R, bs, Lg]
    lse = torch.logsumexp(logits, dim=-1)  # [R, bs]
    probs = torch.exp(logits - lse.unsqueeze(-1))
    return torch.bmm(probs, v.float()).to(q.dtype), lse


def _engine_backward(engine, grad_out, grad_lse, q, k, v, out, lse, scale):
    """Return float32 gradients (dq [R, bs, D], dk, dv [R, Lg, D]) of one chunk."""
    if engine == "aten" and grad_lse is None:
        dq, dk, dv = _aten._scaled_dot_product_flash_attention_for_cpu_backward(
            grad_out.unsqueeze(1),
            q.unsqueeze(1),
            k.unsqueeze(1),
            v.unsqueeze(1),
            out.unsqueeze(1),
            lse.unsqueeze(1),
            0.0,
            False,
            scale=scale,
        )
        return dq.squeeze(1).float(), dk.squeeze(1).float(), dv.squeeze(1).float()

    q32, k32, v32, grad_out32 = q.float(), k.float(), v.float(), grad_out.float()
    logits = torch.bmm(q32, k32.transpose(1, 2)) * scale  # [R, bs, Lg]
    probs = torch.exp(logits - lse.unsqueeze(-1))  # [R, bs, Lg]
    dv = torch.bmm(probs.transpose(1, 2), grad_out32)  # [R, Lg, D]
    grad_probs = torch.bmm(grad_out32, v32.transpose(1, 2))  # [R, bs, Lg]
    # softmax backward: dS = P * (dP - rowsum(dO * O)); a gradient g on lse adds P * g.
    row_term = (grad_out32 * out.float()).sum(dim=-1, keepdim=True)  # [R, bs, 1]
    if grad_lse is not None:
        row_term = row_term - grad_lse.unsqueeze(-1)
    grad_logits = probs * (grad_probs - row_term)  # [R, bs, Lg]
    dq = torch.bmm(grad_logits, k32) * scale  # [R, bs, D]
    dk = torch.bmm(grad_logits.transpose(1, 2), q32) * scale  # [R, Lg, D]
    return dq, dk, dv


class _BlockSparseAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, block_mask, block_size, scale, engine):
        batch, heads, q_len, head_dim = q.shape
        k_len = k.shape[2]
        n_q, n_k = num_blocks(q_len, block_size), num_blocks(k_len, block_size)
        groups = _plan_groups(block_mask, batch, heads, n_q, n_k, k_len, block_size)

        q_blocks = _to_blocks(q, n_q, block_size)  # [B * H * nq, bs, D]
        k_blocks = _to_blocks(k, n_k, block_size)  # [B * H * nk, bs, D]
        v_blocks = _to_blocks(v, n_k, block_size)
        out_blocks = torch.zeros_like(q_blocks)
        lse_blocks = torch.full(q_blocks.shape[:2], float("-inf"), device=q.device)  # [B * H * nq, bs]
        k_buffer, v_buffer = _gather_buffers(k, groups, block_size)

        for group in groups:
            for rows, key_blocks in _chunks(group, head_dim, q.element_size()):
                q_chunk = q_blocks[rows]  # [R, bs, D]
                k_chunk = _gather_keys(k_blocks, key_blocks, group.key_len, k_buffer)  # [R, Lg, D]
                v_chunk = _gather_keys(v_blocks, key_blocks, group.key_len, v_buffer)
                out_chunk, lse_chunk = _engine_forward(engine, q_chunk, k_chunk, v_chunk, scale)
                out_blocks[rows] = out_chunk
                lse_blocks[rows] = lse_chunk

        ctx.save_for_backward(q, k, v)
        ctx.out_blocks, ctx.lse_blocks, ctx.groups = out_blocks, lse_blocks, groups
        ctx.block_size, ctx.scale, ctx.engine = block_size, scale, engine
        ctx.set_materialize_grads(False)

        out = out_blocks.view(batch, heads, n_q * block_size, head_dim)[:, :, :q_len]  # [B, H, Lq, D]
        lse = lse_blocks.view(batch, heads, n_q * block_size)[:, :, :q_len]  # [B, H, Lq]
        return out.clone(), lse.clone()

    @staticmethod
    def backward(ctx, grad_out, grad_lse):
        q, k, v = ctx.saved_tensors
        batch, heads, q_len, head_dim = q.shape
        k_len = k.shape[2]
        block_size = ctx.block_size
        n_q, n_k = num_blocks(q_len, block_size), num_blocks(k_len, block_size)
        if grad_out is None:
            grad_out = torch.zeros_like(q)

        q_blocks = _to_blocks(q, n_q, block_size)
        k_blocks = _to_blocks(k, n_k, block_size)
        v_blocks = _to_blocks(v, n_k, block_size)
        grad_out_blocks = _to_blocks(grad_out.to(q.dtype), n_q, block_size)  # [B * H * nq, bs, D]
        grad_lse_blocks = None
        if grad_lse is not None:
            grad_lse_blocks = F.pad(grad_lse.float(), (0, n_q * block_size - q_len)).reshape(-1, block_size)

        # float32 accumulators: a key block receives gradient from many query blocks.
        dq_blocks = torch.zeros(q_blocks.shape, dtype=torch.float32, device=q.device)
        dk_blocks = torch.zeros(k_blocks.shape, dtype=torch.float32, device=q.device)
        dv_blocks = torch.zeros(v_blocks.shape, dtype=torch.float32, device=q.device)

        k_buffer, v_buffer = _gather_buffers(k, ctx.groups, block_size)
        for group in ctx.groups:
            for rows, key_blocks in _chunks(group, head_dim, q.element_size()):
                k_chunk = _gather_keys(k_blocks, key_blocks, group.key_len, k_buffer)
                v_chunk = _gather_keys(v_blocks, key_blocks, group.key_len, v_buffer)
                dq, dk, dv = _engine_backward(
                    ctx.engine,
                    grad_out_blocks[rows],
                    None if grad_lse_blocks is None else grad_lse_blocks[rows],
                    q_blocks[rows],
                    k_chunk,
                    v_chunk,
                    ctx.out_blocks[rows],
                    ctx.lse_blocks[rows],
                    ctx.scale,
                )
                dq_blocks[rows] = dq
                rows_in_chunk, count = key_blocks.shape
                padding = count * block_size - group.key_len
                if padding:
                    dk, dv = F.pad(dk, (0, 0, 0, padding)), F.pad(dv, (0, 0, 0, padding))
                flat_blocks = key_blocks.reshape(-1)
                _scatter_add_blocks(dk_blocks, flat_blocks, dk.reshape(rows_in_chunk * count, block_size, head_dim))
                _scatter_add_blocks(dv_blocks, flat_blocks, dv.reshape(rows_in_chunk * count, block_size, head_dim))

        def unblock(blocks, n_blocks, length, like):
            return blocks.view(batch, heads, n_blocks * block_size, head_dim)[:, :, :length].to(like.dtype)

        dq = unblock(dq_blocks, n_q, q_len, q)
        dk = unblock(dk_blocks, n_k, k_len, k)
        dv = unblock(dv_blocks, n_k, k_len, v)
        return dq, dk, dv, None, None, None, None


def default_engine(device: torch.device) -> str:
    """Return the chunk engine for a device: the fused CPU operator on CPU, matmuls elsewhere."""
    return "aten" if device.type == "cpu" else "matmul"


def torch_block_sparse_attention(q, k, v, block_mask, block_size, scale, engine=None):
    """Run the `torch` backend. Shapes as in `block_sparse_attention`; returns (out, lse)."""
    engine = engine or default_engine(q.device)
    return _BlockSparseAttention.apply(q, k, v, block_mask, block_size, scale, engine)
