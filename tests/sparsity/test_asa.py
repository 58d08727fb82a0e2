import math

import pytest
import torch
import torch.nn.functional as F

from blade.config import BladeConfig
from blade.sparsity import asa_attention, estimate_block_scores, gilbert_order
from blade.sparsity.layout import sequence_order
from blade.sparsity.pooled import mean_pool_groups

SMALL = dict(block_size=16, samples_per_block=4, min_ratio=0.2, max_ratio=0.4, pool_group=7, backend="torch")


def _curve_order(grid, text_tokens, text_position):
    video, _ = gilbert_order(grid)
    text = torch.arange(text_tokens)
    if text_position == "prefix":
        return torch.cat([text, video + text_tokens])
    return torch.cat([video, text + video.numel()])


def _reference(q, k, v, block_mask, *, grid, config, text_tokens=0, text_position="prefix", rows=None, merge_grad=True):
    """ASA in float64 without the library's kernels: token-level masks and pooled keys repeated
    once per token they average, so the merge is one softmax over [kept tokens | pooled tokens]."""
    order = _curve_order(grid, text_tokens, text_position)
    inverse = torch.argsort(order)
    qc, kc, vc = (x.double()[:, :, order] for x in (q, k, v))  # [B, H, L, D], curve order
    length, dim, bs, n = q.shape[2], q.shape[3], config.block_size, config.pool_group
    rows = torch.arange(length) if rows is None else rows

    token_mask = block_mask.repeat_interleave(bs, -2).repeat_interleave(bs, -1)[..., :length, :length][..., rows, :]
    logits = qc[:, :, rows] @ kc.transpose(-1, -2) / math.sqrt(dim)  # [B, H, r, L]
    sparse_logits = logits.masked_fill(~token_mask, float("-inf"))

    if n == 0:
        out = torch.softmax(sparse_logits, -1) @ vc
        return out if len(rows) != length else out[:, :, inverse]

    groups = torch.arange(length) // n  # group of each curve position
    counts = torch.bincount(groups)
    pooled_k = torch.zeros(*kc.shape[:2], len(counts), dim, dtype=torch.float64).index_add_(2, groups, kc) / counts[:, None]
    pooled_v = torch.zeros_like(pooled_k).index_add_(2, groups, vc) / counts[:, None]
    repeated_k = pooled_k.repeat_interleave(counts, dim=2)  # [B, H, L, D]
    repeated_v = pooled_v.repeat_interleave(counts, dim=2)
    global_logits = qc[:, :, rows] @ repeated_k.transpose(-1, -2) / math.sqrt(dim)

    if merge_grad:
        both = torch.cat([sparse_logits, global_logits], dim=-1)
        out = torch.softmax(both, -1) @ torch.cat([vc, repeated_v], dim=2)
    else:
        lse_sparse = torch.logsumexp(sparse_logits, -1, keepdim=True)
        lse_global = torch.logsumexp(global_logits, -1, keepdim=True)
        weight = torch.sigmoid(lse_sparse - lse_global).detach()
        out_sparse = torch.softmax(sparse_logits, -1) @ vc
        out_global = torch.softmax(global_logits, -1) @ repeated_v
        out = weight * out_sparse + (1 - weight) * out_global
    return out if len(rows) != length else out[:, :, inverse]


def _inputs(shape, seed=0, dtype=torch.float32, grad=False):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator).to(dtype).requires_grad_(grad) for _ in range(3)]


@pytest.mark.parametrize("text_position", ["prefix", "suffix"])
@pytest.mark.parametrize("merge_grad", [False, True])
def test_matches_float64_reference_forward_and_backward(text_position, merge_grad):
    grid, text = (3, 5, 7), 10  # 105 video + 10 text = 115 tokens: 8 blocks of 16, the last ragged
    config = BladeConfig(**SMALL, merge_grad=merge_grad)
    q, k, v = _inputs((2, 2, 115, 8), grad=True)
    out, stats = asa_attention(
        q, k, v, grid_thw=grid, config=config, generator=torch.Generator().manual_seed(0),
        text_tokens=text, text_position=text_position, record=True,
    )
    q64, k64, v64 = (x.detach().double().requires_grad_() for x in (q, k, v))
    expected = _reference(q64, k64, v64, stats["block_mask"], grid=grid, config=config, text_tokens=text,
                          text_position=text_position, merge_grad=merge_grad)
    torch.testing.assert_close(out.double(), expected, atol=2e-5, rtol=1e-4)

    upstream = torch.randn_like(expected)
    (out.double() * upstream).sum().backward()
    (expected * upstream).sum().backward()
    for name, got, want in (("q", q, q64), ("k", k, k64), ("v", v, v64)):
        assert bool(torch.isfinite(got.grad).all()), name
        torch.testing.assert_close(got.grad.double(), want.grad, atol=5e-5, rtol=1e-3, msg=f"grad of {name}")


@pytest.mark.parametrize("text_position", ["prefix", "suffix"])
def test_inference_forward_matches_float64_reference(text_position):
    """Without gradients the global branch takes the fused CPU path; same reference as training."""
    grid, text = (3, 5, 7), 10
    config = BladeConfig(**SMALL)
    q, k, v = _inputs((2, 2, 115, 8), seed=2)
    with torch.no_grad():
        out, stats = asa_attention(
            q, k, v, grid_thw=grid, config=config, generator=torch.Generator().manual_seed(0),
            text_tokens=text, text_position=text_position, record=True,
        )
    expected = _reference(q.double(), k.double(), v.double(), stats["block_mask"], grid=grid, config=config,
                          text_tokens=text, text_position=text_position, merge_grad=False)
    torch.testing.assert_close(out.double(), expected, atol=2e-5, rtol=1e-4)


def test_pooled_fused_path_equals_chunked_path():
    from blade.sparsity.pooled import pooled_attention

    q, k, v = _inputs((2, 3, 101, 16), seed=5)  # 101 tokens in groups of 7: the last group has 3
    with torch.no_grad():
        fused_out, fused_lse = pooled_attention(q, k, v, group=7)
    grads = [x.clone().requires_grad_() for x in (q, k, v)]
    chunked_out, chunked_lse = pooled_attention(*grads, group=7)
    torch.testing.assert_close(fused_out, chunked_out.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused_lse, chunked_lse.detach(), atol=1e-5, rtol=1e-5)


def test_merge_grad_changes_gradients():
    grid = (3, 5, 7)
    q, k, v = _inputs((1, 2, 105, 8), grad=True)
    grads = []
    for merge_grad in (False, True):
        config = BladeConfig(**SMALL, merge_grad=merge_grad)
        out, _ = asa_attention(q, k, v, grid_thw=grid, config=config, generator=torch.Generator().manual_seed(0))
        grads.append(torch.autograd.grad(out.square().sum(), q)[0])
    assert not torch.allclose(grads[0], grads[1], atol=1e-6)


@pytest.mark.parametrize("dtype,atol", [(torch.float32, 2e-6), (torch.bfloat16, 3e-2)])
def test_full_ratio_without_global_branch_is_dense(dtype, atol):
    grid = (3, 7, 9)  # 189 tokens + 11 text = 200, not a multiple of 16
    q, k, v = _inputs((2, 3, 200, 16), seed=1, dtype=dtype)
    config = BladeConfig.dense(block_size=16, samples_per_block=4, backend="torch")
    out, stats = asa_attention(q, k, v, grid_thw=grid, config=config, generator=torch.Generator(), text_tokens=11,
                               text_position="suffix")
    dense = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), dense, atol=atol, rtol=0)
    assert torch.equal(stats["kept_fraction"], torch.ones(2, 3))
    assert torch.equal(stats["sparsity"], torch.zeros(2, 3))


def test_same_seed_same_result_and_global_rng_untouched():
    grid = (4, 6, 9)
    q, k, v = _inputs((1, 2, 216, 8), seed=2)
    config = BladeConfig(**SMALL)
    state = torch.random.get_rng_state()
    runs = [
        asa_attention(q, k, v, grid_thw=grid, config=config, generator=torch.Generator().manual_seed(seed), record=True)
        for seed in (5, 5, 6)
    ]
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(runs[0][0], runs[1][0])
    assert torch.equal(runs[0][1]["block_mask"], runs[1][1]["block_mask"])
    assert not torch.equal(runs[0][1]["block_mask"], runs[2][1]["block_mask"])


def test_batch_of_two_equals_two_calls():
    grid = (3, 5, 7)
    q, k, v = _inputs((2, 2, 105, 8), seed=3)
    config = BladeConfig(**SMALL)
    both, stats = asa_attention(q, k, v, grid_thw=grid, config=config, generator=torch.Generator().manual_seed(1), record=True)
    for b in range(2):
        one, one_stats = asa_attention(
            q[b : b + 1], k[b : b + 1], v[b : b + 1], grid_thw=grid, config=config,
            generator=torch.Generator().manual_seed(1), record=True,
        )
        torch.testing.assert_close(both[b : b + 1], one, atol=1e-6, rtol=1e-5)
        assert torch.equal(stats["block_mask"][b : b + 1], one_stats["block_mask"])
    # each sample gets its own mask
    assert not torch.equal(stats["block_mask"][0], stats["block_mask"][1])


def test_no_empty_rows_even_for_constant_inputs():
    grid = (2, 5, 9)
    config = BladeConfig(**{**SMALL, "min_ratio": 0.0, "max_ratio": 0.05})  # floor(6 * 0.05) = 0 blocks
    for q in (torch.zeros(1, 2, 90, 8), torch.randn(1, 2, 90, 8) * 50):
        out, stats = asa_attention(q, q, q, grid_thw=grid, config=config, generator=torch.Generator(), record=True)
        assert bool(stats["block_mask"].any(dim=-1).all())
        assert bool(torch.isfinite(out).all())


def test_wan_sized_sequence_rows_match_reference():
    """Lq = 20160 (21 x 24 x 40) with blocks of 128 and the Wan preset; sampled rows against float64."""
    grid = (21, 24, 40)
    q, k, v = _inputs((1, 1, 20160, 16), seed=4)
    config = BladeConfig.wan(backend="torch")
    out, stats = asa_attention(q, k, v, grid_thw=grid, config=config, generator=torch.Generator().manual_seed(0), record=True)
    mask = stats["block_mask"]
    assert mask.shape == (1, 1, 158, 158)
    kept_per_row = mask.sum(dim=-1)
    assert int(kept_per_row.min()) >= math.floor(158 * 0.05)
    assert int(kept_per_row.max()) <= math.floor(158 * 0.17)
    order = _curve_order(grid, 0, "prefix")
    rows = torch.tensor([0, 1, 127, 128, 5000, 12345, 20031, 20159])  # curve positions, incl. the ragged block
    expected = _reference(q, k, v, mask, grid=grid, config=config, rows=rows)
    torch.testing.assert_close(out[:, :, order[rows]].double(), expected, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(stats["sparsity"], 1 - stats["kept_fraction"] - 1 / 30)


def test_cogvideox_text_prefix_forced_and_kept_together():
    """226 text tokens before a 13 x 6 x 9 grid (13 x 30 x 45 scaled down) with the CogVideoX preset."""
    grid, text = (13, 6, 9), 226
    q, k, v = _inputs((1, 2, 226 + 702, 16), seed=5)
    config = BladeConfig.cogvideox(backend="torch")
    out, stats = asa_attention(q, k, v, grid_thw=grid, config=config, generator=torch.Generator().manual_seed(0),
                               text_tokens=text, record=True)
    mask = stats["block_mask"]  # [1, 2, 8, 8]; blocks 0 and 1 hold text
    assert bool(mask[..., :2, :].all())
    assert bool(mask[..., :, :2].all())
    order, _ = sequence_order(grid, text, "prefix", q.device)
    assert torch.equal(order[:text], torch.arange(text))
    assert bool((order[text:] >= text).all())
    expected = _reference(q, k, v, mask, grid=grid, config=config, text_tokens=text)
    torch.testing.assert_close(out.double(), expected, atol=2e-5, rtol=1e-4)


def test_bfloat16_forward_and_backward_close_to_float32():
    grid = (3, 5, 7)
    q, k, v = _inputs((1, 2, 105, 16), seed=6, dtype=torch.bfloat16, grad=True)
    config = BladeConfig(**SMALL)
    out, stats = asa_attention(q, k, v, grid_thw=grid, config=config, generator=torch.Generator(), record=True)
    assert out.dtype == torch.bfloat16
    expected = _reference(q.float(), k.float(), v.float(), stats["block_mask"], grid=grid, config=config)
    torch.testing.assert_close(out.double(), expected, atol=3e-2, rtol=0)
    out.float().sum().backward()
    for tensor in (q, k, v):
        assert tensor.grad.dtype == torch.bfloat16
        assert bool(torch.isfinite(tensor.grad.float()).all())


def test_stats_without_record():
    q, k, v = _inputs((1, 2, 105, 8))
    _, stats = asa_attention(q, k, v, grid_thw=(3, 5, 7), config=BladeConfig(**SMALL), generator=torch.Generator())
    assert set(stats) == {"kept_fraction", "sparsity", "estimation_seconds"}
    assert stats["kept_fraction"].shape == (1, 2)
    assert stats["estimation_seconds"].dim() == 0
    assert float(stats["estimation_seconds"]) >= 0


def test_mean_pool_ignores_padding():
    x = torch.arange(2 * 11, dtype=torch.float32).view(1, 2, 11, 1)
    pooled, log_counts = mean_pool_groups(x, 4)  # groups of 4, 4 and 3 tokens
    assert pooled[0, 0, :, 0].tolist() == [1.5, 5.5, 9.0]
    torch.testing.assert_close(log_counts, torch.tensor([4.0, 4.0, 3.0]).log())


def test_rejects_bad_inputs():
    q = torch.randn(1, 2, 105, 8)
    config = BladeConfig(**SMALL)
    generator = torch.Generator()
    with pytest.raises(ValueError, match=r"sequence length 105 does not match grid_thw=\(3, 5, 8\) \(120 video tokens\)"):
        asa_attention(q, q, q, grid_thw=(3, 5, 8), config=config, generator=generator)
    with pytest.raises(ValueError, match=r"text_position must be one of \('prefix', 'suffix'\), got 'middle'"):
        asa_attention(q, q, q, grid_thw=(3, 5, 6), config=config, generator=generator, text_tokens=15, text_position="middle")
    with pytest.raises(TypeError, match="config must be a blade.BladeConfig, got dict"):
        asa_attention(q, q, q, grid_thw=(3, 5, 7), config={}, generator=generator)
    with pytest.raises(ValueError, match="asa_attention is self-attention"):
        asa_attention(q, q[:, :, :50], q[:, :, :50], grid_thw=(3, 5, 7), config=config, generator=generator)
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        asa_attention(q, q, q, grid_thw=(3, 5, 7), config=config, generator=None)


def test_no_allocation_near_length_squared():
    """Estimation and ASA must never build an Lq x Lk tensor; the largest single allocation is checked."""
    from torch.profiler import ProfilerActivity, profile

    grid = (8, 32, 32)  # L = 8192: an L x L float32 tensor would be 256 MiB
    q = torch.randn(1, 1, 8192, 16)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        estimate_block_scores(q, q, block_size=128, samples_per_block=16, generator=torch.Generator())
        asa_attention(q, q, q, grid_thw=grid, config=BladeConfig(backend="torch"), generator=torch.Generator())
    largest = max(event.cpu_memory_usage for event in profiler.events())
    # measured: 8.6 MiB, the global branch's L x ceil(L / 30) logits
    assert 0 < largest < 8192 * 8192 * 4 // 8


@pytest.mark.gpu
def test_cuda_bfloat16_matches_reference():
    device = torch.device("cuda")
    grid = (5, 8, 9)
    q, k, v = (x.to(device) for x in _inputs((2, 2, 360, 64), seed=7, dtype=torch.bfloat16))
    config = BladeConfig(block_size=64, samples_per_block=16, min_ratio=0.2, max_ratio=0.5, pool_group=15)
    generator = torch.Generator(device=device).manual_seed(0)
    out, stats = asa_attention(q, k, v, grid_thw=grid, config=config, generator=generator, record=True)
    assert out.device.type == "cuda"
    expected = _reference(q.cpu().float(), k.cpu().float(), v.cpu().float(), stats["block_mask"].cpu(), grid=grid, config=config)
    torch.testing.assert_close(out.cpu().double(), expected, atol=3e-2, rtol=0)
