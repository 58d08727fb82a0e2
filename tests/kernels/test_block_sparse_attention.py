"""Every block-sparse attention backend against the dense float32 reference."""

import logging
import math

import pytest
import torch
import torch.nn.functional as F

import blade.kernels.api as kernels_api
from blade.kernels import available_backends, block_sparse_attention, num_blocks, random_block_mask
from blade.kernels.bsa import bsa_supports
from blade.kernels.reference import reference_attention
from blade.kernels.torch_blocks import torch_block_sparse_attention

TOLERANCES = {
    # (out, lse, grads) absolute = relative tolerances
    torch.float32: (2e-5, 2e-5, 1e-4),
    torch.bfloat16: (2e-2, 2e-2, 4e-2),
}

# (name, batch, heads, q_len, k_len, head_dim, block_size, mask batch, mask heads, density)
CASES = [
    ("square_ragged_1000", 1, 2, 1000, 1000, 64, 128, 1, 2, 0.5),
    ("cross_lengths", 1, 2, 517, 300, 64, 64, 1, 2, 0.6),
    ("batch2_mask_batch1", 2, 2, 390, 390, 64, 128, 1, 2, 0.4),
    ("head1_mask", 2, 3, 260, 260, 128, 64, 2, 1, 0.3),
    ("head_dim_128", 1, 2, 640, 640, 128, 128, 1, 2, 0.7),
]


def make_inputs(case, dtype, seed=0, empty_row=True):
    _, batch, heads, q_len, k_len, head_dim, block_size, mask_batch, mask_heads, density = case
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, q_len, head_dim, generator=generator).to(dtype)
    k = torch.randn(batch, heads, k_len, head_dim, generator=generator).to(dtype)
    v = torch.randn(batch, heads, k_len, head_dim, generator=generator).to(dtype)
    n_q, n_k = num_blocks(q_len, block_size), num_blocks(k_len, block_size)
    mask = random_block_mask(mask_batch, mask_heads, n_q, n_k, density, generator=generator, equal_rows=False)
    if empty_row:
        mask[0, 0, 1] = False  # one query block that keeps nothing
    return q, k, v, mask, block_size


def run_with_grads(attention, q, k, v, mask, block_size, seed=1, lse_weight=0.0):
    """Run attention and return out, lse and the gradients of q, k, v under a random upstream gradient."""
    q, k, v = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    out, lse = attention(q, k, v, mask, block_size)
    generator = torch.Generator().manual_seed(seed)
    grad_out = torch.randn(out.shape, generator=generator).to(out.dtype)
    loss = (out.float() * grad_out.float()).sum()
    if lse_weight:
        grad_lse = torch.randn(lse.shape, generator=generator)
        loss = loss + lse_weight * (torch.where(torch.isinf(lse), 0.0, lse) * grad_lse).sum()
    grads = torch.autograd.grad(loss, (q, k, v))
    return out.detach(), lse.detach(), grads


def reference(q, k, v, mask, block_size):
    return reference_attention(q, k, v, mask, block_size, 1.0 / math.sqrt(q.shape[-1]))


def assert_matches_reference(got, want, dtype):
    out_tol, lse_tol, grad_tol = TOLERANCES[dtype]
    (out, lse, grads), (ref_out, ref_lse, ref_grads) = got, want
    torch.testing.assert_close(out.float(), ref_out.float(), atol=out_tol, rtol=out_tol)
    assert torch.equal(torch.isinf(lse), torch.isinf(ref_lse)), "rows with -inf LSE differ"
    finite = torch.isfinite(ref_lse)
    torch.testing.assert_close(lse[finite], ref_lse[finite], atol=lse_tol, rtol=lse_tol)
    for name, grad, ref_grad in zip("qkv", grads, ref_grads):
        assert torch.isfinite(grad).all(), f"d{name} has non-finite values"
        torch.testing.assert_close(grad.float(), ref_grad.float(), atol=grad_tol, rtol=grad_tol, msg=f"d{name}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("engine", ["aten", "matmul"])
def test_torch_backend_matches_reference(case, dtype, engine):
    q, k, v, mask, block_size = make_inputs(case, dtype)

    def torch_backend(q, k, v, mask, block_size):
        return torch_block_sparse_attention(q, k, v, mask, block_size, 1.0 / math.sqrt(q.shape[-1]), engine=engine)

    got = run_with_grads(torch_backend, q, k, v, mask, block_size)
    want = run_with_grads(reference, q.float(), k.float(), v.float(), mask, block_size)
    assert_matches_reference(got, want, dtype)


@pytest.mark.parametrize("density", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
def test_public_api_torch_densities(density):
    case = ("density", 2, 2, 333, 333, 64, 32, 1, 2, density)
    q, k, v, mask, block_size = make_inputs(case, torch.float32, seed=int(density * 10), empty_row=False)

    def public(q, k, v, mask, block_size):
        return block_sparse_attention(q, k, v, mask, block_size=block_size, backend="torch", return_lse=True)

    got = run_with_grads(public, q, k, v, mask, block_size)
    want = run_with_grads(reference, q, k, v, mask, block_size)
    assert_matches_reference(got, want, torch.float32)


@pytest.mark.parametrize("engine", ["aten", "matmul"])
def test_lse_gradient_matches_reference(engine):
    q, k, v, mask, block_size = make_inputs(CASES[1], torch.float32)

    def torch_backend(q, k, v, mask, block_size):
        return torch_block_sparse_attention(q, k, v, mask, block_size, 1.0 / math.sqrt(q.shape[-1]), engine=engine)

    got = run_with_grads(torch_backend, q, k, v, mask, block_size, lse_weight=1.0)
    want = run_with_grads(reference, q, k, v, mask, block_size, lse_weight=1.0)
    assert_matches_reference(got, want, torch.float32)


def test_full_mask_equals_dense_sdpa():
    generator = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 3, 450, 64, generator=generator) for _ in range(3))
    mask = torch.ones(1, 1, num_blocks(450, 128), num_blocks(450, 128), dtype=torch.bool)
    out, lse = block_sparse_attention(q, k, v, mask, backend="torch", return_lse=True)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), atol=2e-5, rtol=2e-5)
    logits = q @ k.transpose(-1, -2) / 8.0  # 1 / sqrt(64)
    torch.testing.assert_close(lse, torch.logsumexp(logits, dim=-1), atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_empty_rows_give_zero_and_minus_inf(backend):
    generator = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(1, 2, 200, 32, generator=generator, requires_grad=True) for _ in range(3))
    mask = torch.ones(1, 2, 4, 4, dtype=torch.bool)
    mask[0, 1, 2] = False  # tokens 100..149 of head 1 keep no key
    out, lse = block_sparse_attention(q, k, v, mask, block_size=50, backend=backend, return_lse=True)
    assert torch.equal(out[0, 1, 100:150], torch.zeros(50, 32))
    assert torch.isneginf(lse[0, 1, 100:150]).all()
    assert torch.isfinite(lse[0, 0]).all()
    out.sum().backward()
    for tensor in (q, k, v):
        assert torch.isfinite(tensor.grad).all()
    assert torch.equal(q.grad[0, 1, 100:150], torch.zeros(50, 32))


FLEX_CASES = [CASES[0], CASES[1], CASES[3]]


@pytest.mark.skipif("flex" not in available_backends("cpu"), reason="FlexAttention cannot compile here")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("case", FLEX_CASES, ids=[c[0] for c in FLEX_CASES])
def test_flex_forward_matches_reference(case, dtype):
    q, k, v, mask, block_size = make_inputs(case, dtype)
    with torch.no_grad():
        out = block_sparse_attention(q, k, v, mask, block_size=block_size, backend="flex")
    ref_out, _ = reference(q.float(), k.float(), v.float(), mask, block_size)
    out_tol = TOLERANCES[dtype][0]
    torch.testing.assert_close(out.float(), ref_out, atol=out_tol, rtol=out_tol)


def test_flex_rejects_backward_on_cpu():
    q = torch.randn(1, 1, 128, 32, requires_grad=True)
    mask = torch.ones(1, 1, 1, 1, dtype=torch.bool)
    with pytest.raises(ValueError, match="backend 'flex' cannot serve this request.*no backward on CPU"):
        block_sparse_attention(q, q, q, mask, backend="flex")


def test_auto_falls_back_with_one_warning(caplog, monkeypatch):
    """With flex preferred (as on CUDA), a CPU request that flex cannot serve warns once and runs torch."""
    monkeypatch.setitem(kernels_api._AUTO_ORDER, ("cpu", torch.float32), ("flex", "torch"))
    kernels_api._warned_fallbacks.clear()
    q, k, v, mask, block_size = make_inputs(CASES[1], torch.float32)
    q.requires_grad_(True)
    with caplog.at_level(logging.WARNING, logger="blade.kernels.api"):
        for _ in range(3):
            out, lse = block_sparse_attention(q, k, v, mask, block_size=block_size, return_lse=True)
    warnings = [r.getMessage() for r in caplog.records if r.name == "blade.kernels.api"]
    assert len(warnings) == 1
    assert "forward + backward with LSE" in warnings[0]
    assert "'flex' cannot serve it" in warnings[0]
    assert "using 'torch'" in warnings[0]
    ref_out, ref_lse = reference(q.detach(), k, v, mask, block_size)
    torch.testing.assert_close(out.detach(), ref_out, atol=2e-5, rtol=2e-5)


def test_auto_on_cpu_runs_torch_without_warning(caplog):
    kernels_api._warned_fallbacks.clear()
    q = torch.randn(1, 1, 128, 32)
    for dtype in (torch.float32, torch.bfloat16):
        for needs_grad in (False, True):
            chosen = kernels_api._choose_auto(q.to(dtype), 128, needs_grad=needs_grad, return_lse=needs_grad)
            assert chosen == "torch"
    assert not [r for r in caplog.records if r.name == "blade.kernels.api"]


def _valid_inputs():
    q = torch.randn(2, 2, 300, 64)
    mask = torch.ones(1, 2, 3, 3, dtype=torch.bool)
    return q, q.clone(), q.clone(), mask


def test_rejects_wrong_rank():
    q, k, v, mask = _valid_inputs()
    with pytest.raises(ValueError, match=r"q must be 4-D \[B, H, Lq, D\], got 3-D"):
        block_sparse_attention(q[0], k, v, mask)


def test_rejects_mismatched_dtypes():
    q, k, v, mask = _valid_inputs()
    with pytest.raises(TypeError, match="q, k and v must share one dtype, got q torch.float32, k torch.bfloat16"):
        block_sparse_attention(q, k.bfloat16(), v, mask)


def test_rejects_unsupported_dtype():
    q, k, v, mask = _valid_inputs()
    with pytest.raises(TypeError, match="float32, float16 or bfloat16, got torch.float64"):
        block_sparse_attention(q.double(), k.double(), v.double(), mask)


def test_rejects_mismatched_devices():
    q, k, v, mask = _valid_inputs()
    with pytest.raises(ValueError, match="must be on one device, got q cpu, k meta"):
        block_sparse_attention(q, k.to("meta"), v, mask)


def test_rejects_wrong_mask_shape_with_expected_shape():
    q, k, v, _ = _valid_inputs()
    bad = torch.ones(1, 2, 2, 3, dtype=torch.bool)
    expected = r"\[1 or B=2, 1 or H=2, 3, 3\] for Lq=300, Lk=300 and block_size=128, got \(1, 2, 2, 3\)"
    with pytest.raises(ValueError, match=expected):
        block_sparse_attention(q, k, v, bad)
    with pytest.raises(ValueError, match=r"\[1 or B=2, 1 or H=2, 5, 5\] for Lq=300, Lk=300 and block_size=64"):
        block_sparse_attention(q, k, v, bad, block_size=64)


def test_rejects_non_bool_mask():
    q, k, v, mask = _valid_inputs()
    with pytest.raises(TypeError, match=r"block_mask must be a bool tensor .* got dtype torch.float32 \(use .bool\(\)\)"):
        block_sparse_attention(q, k, v, mask.float())


def test_rejects_mismatched_key_shape():
    q, k, v, mask = _valid_inputs()
    with pytest.raises(ValueError, match=r"k must have shape \[B=2, H=2, Lk, D=64\] to match q, got \(2, 2, 300, 32\)"):
        block_sparse_attention(q, k[..., :32], v, mask)


def test_rejects_unknown_backend():
    q, k, v, mask = _valid_inputs()
    with pytest.raises(ValueError, match="backend must be one of .*'torch'.*got 'triton'"):
        block_sparse_attention(q, k, v, mask, backend="triton")


def test_rejects_unavailable_backend():
    q, k, v, mask = _valid_inputs()
    with pytest.raises(ValueError, match="backend 'bsa' is not available on cpu"):
        block_sparse_attention(q, k, v, mask, backend="bsa")


@pytest.mark.parametrize("block_size", [0, -4, 2.5, True])
def test_rejects_invalid_block_size(block_size):
    q, k, v, mask = _valid_inputs()
    with pytest.raises(ValueError, match="block_size must be a positive int"):
        block_sparse_attention(q, k, v, mask, block_size=block_size)


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan")])
def test_rejects_invalid_scale(scale):
    q, k, v, mask = _valid_inputs()
    with pytest.raises(ValueError, match="scale must be a positive finite float"):
        block_sparse_attention(q, k, v, mask, scale=scale)


def test_bsa_constraints_name_the_limit():
    cuda = torch.device("cuda")
    assert bsa_supports(cuda, torch.bfloat16, 64, 128, False) == (True, "")
    assert "head dims (32, 64, 128), not 96" in bsa_supports(cuda, torch.bfloat16, 96, 128, False)[1]
    assert "float16 or bfloat16" in bsa_supports(cuda, torch.float32, 64, 128, False)[1]
    assert "blocks of 128 tokens, not 64" in bsa_supports(cuda, torch.float16, 64, 64, False)[1]
    assert "no log-sum-exp" in bsa_supports(cuda, torch.float16, 64, 128, True)[1]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_cuda_backends_match_reference(dtype):
    device = torch.device("cuda")
    q, k, v, mask, block_size = make_inputs(CASES[0], dtype)
    q, k, v, mask = q.to(device), k.to(device), v.to(device), mask.to(device)
    ref_out, _ = reference(q.float(), k.float(), v.float(), mask, block_size)
    tolerance = TOLERANCES.get(dtype, TOLERANCES[torch.bfloat16])[0]
    for backend in available_backends(device):
        if backend in ("auto", "reference"):
            continue
        if backend == "bsa" and dtype == torch.float32:
            continue
        with torch.no_grad():
            out = block_sparse_attention(q, k, v, mask, block_size=block_size, backend=backend)
        torch.testing.assert_close(out.float(), ref_out, atol=tolerance, rtol=tolerance, msg=backend)


@pytest.mark.parametrize("chunk_bytes", [1, 300_000])
def test_torch_backend_chunking_matches_reference(monkeypatch, chunk_bytes):
    """Chunk boundaries (one row per chunk, or a few) must not change results or drop gradients."""
    import blade.kernels.torch_blocks as torch_blocks

    monkeypatch.setattr(torch_blocks, "_CHUNK_BYTES", chunk_bytes)
    q, k, v, mask, block_size = make_inputs(CASES[2], torch.float32)

    def torch_backend(q, k, v, mask, block_size):
        return torch_block_sparse_attention(q, k, v, mask, block_size, 1.0 / math.sqrt(q.shape[-1]))

    got = run_with_grads(torch_backend, q, k, v, mask, block_size, lse_weight=1.0)
    want = run_with_grads(reference, q, k, v, mask, block_size, lse_weight=1.0)
    assert_matches_reference(got, want, torch.float32)
