"""`blade bench attention`: block-sparse attention backends against dense SDPA, side by side.

For every (dtype, head dim, length, mode) the dense baseline and every backend at every sparsity are
timed in interleaved rounds, one call of each per round, so load that drifts during the run affects
all of them alike. Each figure is the median over the rounds. Masks keep the same number of key blocks
in every query-block row, as ASA does at its ratio clamp.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from blade.bench.common import describe_machine, median, save_figure, time_call, utc_timestamp
from blade.io import atomic_write_json, atomic_write_text
from blade.kernels import block_sparse_attention, num_blocks, random_block_mask
from blade.kernels.api import resolve_backend

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MODES = ("forward", "forward_backward")


@dataclass(frozen=True)
class AttentionBenchSettings:
    """Grid and settings of `blade bench attention`; the defaults are the full grid."""

    lengths: tuple[int, ...] = (4096, 16384, 32760)
    heads: int = 12
    head_dims: tuple[int, ...] = (64, 128)
    sparsities: tuple[float, ...] = (0.5, 0.8, 0.9)
    dtypes: tuple[str, ...] = ("float32", "bfloat16")
    modes: tuple[str, ...] = MODES
    backends: tuple[str, ...] = ("auto", "torch", "flex")
    repeats: int = 3
    block_size: int = 128
    device: str = "cpu"
    seed: int = 0

    def validate(self) -> None:
        for dtype in self.dtypes:
            if dtype not in DTYPES:
                raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        for mode in self.modes:
            if mode not in MODES:
                raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        for sparsity in self.sparsities:
            if not 0.0 <= sparsity < 1.0:
                raise ValueError(f"sparsity must be in [0, 1), got {sparsity!r}")
        from blade.kernels import BACKENDS

        for backend in self.backends:
            if backend not in BACKENDS:
                raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats!r}")


# Under two minutes on a 2-core CPU: one head dim, one dtype, the acceptance sparsity.
QUICK_SETTINGS = AttentionBenchSettings(
    lengths=(4096, 8192), head_dims=(64,), sparsities=(0.8,), dtypes=("float32",), repeats=3
)


def _make_call(backend, q, k, v, mask, block_size, mode, grad_out):
    """Return a zero-argument function that runs one attention call in the given mode."""

    def attend(q_, k_, v_):
        if backend == "dense":
            return F.scaled_dot_product_attention(q_, k_, v_)
        return block_sparse_attention(q_, k_, v_, mask, block_size=block_size, backend=backend)

    if mode == "forward":

        def forward():
            with torch.no_grad():
                attend(q, k, v)

        return forward

    leaves = [t.detach().requires_grad_(True) for t in (q, k, v)]

    def forward_backward():
        out = attend(*leaves)
        torch.autograd.grad(out, leaves, grad_out)

    return forward_backward


def _resolved_backend(backend, q, block_size, mode):
    """Return (backend that will run, reason it cannot run or "")."""
    needs_grad = mode == "forward_backward"
    probe = q.detach().requires_grad_(needs_grad)
    return resolve_backend(backend, probe, block_size, needs_grad=needs_grad, return_lse=False)


def _measure_configuration(settings, device, generator, dtype_name, head_dim, length, mode, backends) -> list[dict]:
    """Time dense SDPA and `backends` at every sparsity for one configuration; return report rows."""
    dtype = DTYPES[dtype_name]
    shape = (1, settings.heads, length, head_dim)
    q, k, v = (torch.randn(shape, generator=generator).to(device=device, dtype=dtype) for _ in range(3))
    grad_out = torch.randn(shape, generator=generator).to(device=device, dtype=dtype)
    n_blocks = num_blocks(length, settings.block_size)

    candidates = [{"backend": "dense", "runs_as": "dense", "reason": "", "sparsity": None}]
    candidates[0]["call"] = _make_call("dense", q, k, v, None, None, mode, grad_out)
    for sparsity, backend in itertools.product(settings.sparsities, backends):
        mask = random_block_mask(1, settings.heads, n_blocks, n_blocks, 1.0 - sparsity, generator=generator)
        mask = mask.to(device)
        runs_as, reason = _resolved_backend(backend, q, settings.block_size, mode)
        call = None if reason else _make_call(backend, q, k, v, mask, settings.block_size, mode, grad_out)
        candidates.append(
            {
                "backend": backend,
                "runs_as": runs_as,
                "reason": reason,
                "sparsity": sparsity,
                "kept_fraction": float(mask.float().mean()),
                "call": call,
            }
        )

    runnable = [c for c in candidates if c["call"] is not None]
    if len(runnable) == 1:
        runnable = []  # every backend is skipped here, so the dense baseline would compare with nothing
    for candidate in runnable:  # warm-up: compiles flex, fills allocator caches
        candidate["call"]()
        candidate["times"] = []
    for _ in range(settings.repeats):
        for candidate in runnable:
            candidate["times"].append(time_call(candidate["call"], device))

    dense_seconds = median(candidates[0]["times"]) if runnable else None
    rows = []
    for candidate in candidates:
        if candidate["backend"] == "dense" and not runnable:
            continue
        row = {
            "dtype": dtype_name,
            "head_dim": head_dim,
            "length": length,
            "heads": settings.heads,
            "mode": mode,
            "backend": candidate["backend"],
            "runs_as": candidate["runs_as"],
            "dense_median_s": dense_seconds,
        }
        if candidate["sparsity"] is not None:
            kept = candidate["kept_fraction"]
            row.update(sparsity=candidate["sparsity"], kept_fraction=kept, ideal_speedup=1.0 / kept)
        if candidate["call"] is None:
            row["skipped"] = candidate["reason"]
            logger.warning(
                "skipped backend %r for %s %s L=%d D=%d: %s",
                candidate["backend"], dtype_name, mode, length, head_dim, candidate["reason"],
            )
        else:
            row["times_s"] = candidate["times"]
            row["median_s"] = median(candidate["times"])
            row["speedup_vs_dense"] = dense_seconds / row["median_s"]
        rows.append(row)
    return rows


def run_attention_benchmark(settings: AttentionBenchSettings, progress: bool = True) -> dict:
    """Time dense SDPA and each block-sparse backend over the settings' grid; return the report dict.

    On CPU, `flex` is timed in a second pass after everything else, with dense SDPA timed again beside
    it, because once a compiled FlexAttention kernel has run, later CPU kernels in the same process
    run slower (measured: the torch backend 1.31 s before and 1.53 s after, dense SDPA 5.09 s
    and 5.35 s, at L=16384, H=12, D=64 on a 2-core CPU).
    """
    settings.validate()
    device = torch.device(settings.device)
    generator = torch.Generator().manual_seed(settings.seed)
    passes = [tuple(b for b in settings.backends if b != "flex")]
    if "flex" in settings.backends:
        passes.append(("flex",))
    configurations = list(itertools.product(settings.dtypes, settings.head_dims, settings.lengths, settings.modes))
    work = [(backends, configuration) for backends in passes if backends for configuration in configurations]
    rows = []
    for backends, (dtype_name, head_dim, length, mode) in tqdm(work, desc="attention bench", disable=not progress):
        rows.extend(
            _measure_configuration(settings, device, generator, dtype_name, head_dim, length, mode, backends)
        )
    return {
        "benchmark": "attention",
        "created": utc_timestamp(),
        "machine": describe_machine(),
        "settings": asdict(settings),
        "results": rows,
    }


def format_table(report: dict) -> str:
    """Return a markdown table of speedups over dense SDPA (medians), one row per configuration."""
    lines = [
        "| dtype | D | L | mode | sparsity | backend | median s | dense s | speedup | ideal |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["results"]:
        if row["backend"] == "dense" or "median_s" not in row:
            continue
        backend = row["backend"] if row["backend"] == row["runs_as"] else f"{row['backend']} ({row['runs_as']})"
        lines.append(
            f"| {row['dtype']} | {row['head_dim']} | {row['length']} | {row['mode'].replace('_', ' + ')} "
            f"| {row['sparsity']:.2f} | {backend} | {row['median_s']:.3f} | {row['dense_median_s']:.3f} "
            f"| {row['speedup_vs_dense']:.2f}x | {row['ideal_speedup']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def plot_report(report: dict, path: Path) -> Path:
    """Draw speedup over dense against sparsity, one panel per (dtype, mode); save a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["results"] if r["backend"] != "dense" and "median_s" in r]
    panels = sorted({(r["dtype"], r["mode"]) for r in rows})
    figure, axes = plt.subplots(1, max(1, len(panels)), figsize=(5 * max(1, len(panels)), 4), squeeze=False)
    for axis, (dtype, mode) in zip(axes[0], panels):
        panel_rows = [r for r in rows if r["dtype"] == dtype and r["mode"] == mode]
        sparsities = sorted({r["sparsity"] for r in panel_rows})
        axis.plot(sparsities, [1.0 / (1.0 - s) for s in sparsities], "k--", label="ideal 1/(1-s)")
        for backend, head_dim, length in sorted({(r["backend"], r["head_dim"], r["length"]) for r in panel_rows}):
            series = sorted(
                (r["sparsity"], r["speedup_vs_dense"])
                for r in panel_rows
                if (r["backend"], r["head_dim"], r["length"]) == (backend, head_dim, length)
            )
            axis.plot(*zip(*series), marker="o", label=f"{backend} D={head_dim} L={length}")
        axis.axhline(1.0, color="grey", linewidth=0.5)
        axis.set(title=f"{dtype}, {mode.replace('_', ' + ')}", xlabel="sparsity", ylabel="speedup over dense SDPA")
        axis.legend(fontsize=7)
    figure.tight_layout()
    return save_figure(figure, path)


def write_report(report: dict, out_dir: Path) -> dict[str, Path]:
    """Write attention.json, attention.md and attention.png to out_dir; return their paths."""
    out_dir = Path(out_dir)
    paths = {
        "json": atomic_write_json(out_dir / "attention.json", report),
        "table": atomic_write_text(out_dir / "attention.md", format_table(report)),
    }
    paths["figure"] = plot_report(report, out_dir / "attention.png")
    return paths


def settings_from_arguments(quick: bool, **overrides) -> AttentionBenchSettings:
    """Start from the full or quick grid and replace the fields given (None leaves a field as is)."""
    base = QUICK_SETTINGS if quick else AttentionBenchSettings()
    return replace(base, **{name: value for name, value in overrides.items() if value is not None})
