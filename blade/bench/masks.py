"""`blade bench masks`: ASA against sliding-tile, radial and oracle block masks at matched sparsity.

Two measurements, written to masks.json (and masks.png) under results/bench/:

1. Quality on structured attention inputs (`blade.bench.synthetic`, stated as synthetic in the
   JSON): for each target sparsity, attention recall and relative L2 output error against dense
   attention of every strategy. Static strategies, the oracle and ASA's sparse branch alone keep the
   same block budget 1 - sparsity. ASA with its global branch keeps 1 - sparsity - 1 / n blocks, so
   its reported sparsity (1 - kept - 1 / n) matches the target. Recall is always compared with the
   oracle at the same block budget.
2. Cost of the block-importance estimate (sampling, scores and selection) as a share of dense SDPA
   time, for several samples per block, at L = 16384 by default.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from blade.bench.common import describe_machine, save_figure, utc_timestamp
from blade.bench.synthetic import SyntheticAttentionSpec, synthetic_video_attention
from blade.config import BladeConfig
from blade.io import atomic_write_json
from blade.sparsity import asa_attention, estimate_block_scores, metrics, select_blocks, strategies
from blade.sparsity.layout import sequence_order

logger = logging.getLogger(__name__)

STATIC_STRATEGIES = ("sliding_tile", "radial")


@dataclass(frozen=True)
class MasksBenchSettings:
    """Settings of `blade bench masks`; the defaults are the full run (1.5 to 4 minutes on a 2-core CPU, by load)."""

    grid: tuple[int, int, int] = (9, 24, 40)
    heads: int = 6
    head_dim: int = 64
    sparsities: tuple[float, ...] = (0.5, 0.75, 0.9)
    block_size: int = 128
    samples_per_block: int = 16
    pool_group: int = 30
    backend: str = "auto"
    timing_length: int = 16384
    timing_heads: int = 12
    timing_samples: tuple[int, ...] = (8, 16, 32)
    repeats: int = 3
    seed: int = 0

    def validate(self) -> None:
        if len(self.grid) != 3 or min(self.grid) < 1:
            raise ValueError(f"grid must be three sizes T, H, W >= 1, got {self.grid!r}")
        for sparsity in self.sparsities:
            if not 0.0 <= sparsity < 1.0:
                raise ValueError(f"sparsity must be in [0, 1), got {sparsity!r}")
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats!r}")


# blocks of 32 so the small grid still has 30 blocks per row to choose from
QUICK_SETTINGS = MasksBenchSettings(
    grid=(5, 12, 16), heads=3, block_size=32, samples_per_block=8, timing_length=4096, timing_heads=4, repeats=1
)


def settings_from_arguments(quick: bool, **overrides) -> MasksBenchSettings:
    """Start from the full or quick settings and replace the fields given (None leaves a field as is)."""
    base = QUICK_SETTINGS if quick else MasksBenchSettings()
    settings = replace(base, **{name: value for name, value in overrides.items() if value is not None})
    settings.validate()
    return settings


def _summary(values: torch.Tensor) -> dict:
    per_head = values.float().mean(dim=0)  # [H], averaged over the batch
    return {"mean": round(float(per_head.mean()), 5), "per_head": [round(float(x), 5) for x in per_head]}


def _quality_row(name, sparsity, plan_or_mask, block_mass, output, dense, *, oracle_recall, global_group):
    recall = metrics.attention_recall(None, None, plan_or_mask, block_size=0, block_mass=block_mass)
    kept = float(plan_or_mask.float().mean())
    row = {
        "strategy": name,
        "target_sparsity": sparsity,
        "kept_fraction": round(kept, 5),
        "global_branch": global_group > 0,
        "reported_sparsity": round(1.0 - kept - (1.0 / global_group if global_group else 0.0), 5),
        "recall": _summary(recall),
        "relative_l2_error": _summary(metrics.relative_l2_error(output, dense)),
    }
    if oracle_recall is not None:
        row["recall_vs_oracle"] = round(float(recall.mean() / oracle_recall.mean()), 5)
    return row


def measure_quality(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    grid_thw,
    sparsities,
    config: BladeConfig,
    backend: str,
) -> list[dict]:
    """Compare every strategy on one input; returns one JSON-ready row per (sparsity, strategy)."""
    block_size = config.block_size
    group = config.pool_group
    dense = F.scaled_dot_product_attention(q, k, v)
    curve_order, _ = sequence_order(grid_thw, 0, "prefix", q.device)
    # oracle and ASA share the curve-order blocks; one dense pass gives every budget's recall
    curve_mass = metrics.block_attention_mass(q.index_select(2, curve_order), k.index_select(2, curve_order), block_size=block_size)

    rows = []
    for sparsity in sparsities:
        logger.info("sparsity %.2f", sparsity)
        common = {"grid_thw": grid_thw, "sparsity": sparsity, "block_size": block_size}
        oracle = strategies.oracle_topk_mask(q, k, block_mass=curve_mass, **common)
        oracle_recall = metrics.attention_recall(None, None, oracle.block_mask, block_size=block_size, block_mass=curve_mass)
        rows.append(
            _quality_row("oracle_topk", sparsity, oracle.block_mask, curve_mass,
                         strategies.attend(oracle, q, k, v, backend=backend), dense,
                         oracle_recall=None, global_group=0)
        )
        for name in STATIC_STRATEGIES:
            plan = strategies.STRATEGIES[name](q, k, **common)
            # static masks use their own token order, so their recall needs their own block mass
            mass = metrics.block_attention_mass(plan.reorder(q), plan.reorder(k), block_size=block_size)
            rows.append(
                _quality_row(name, sparsity, plan.block_mask, mass, strategies.attend(plan, q, k, v, backend=backend),
                             dense, oracle_recall=oracle_recall, global_group=0)
            )

        generator = torch.Generator().manual_seed(config.seed)
        plan = strategies.asa_mask(q, k, config=config, generator=generator, **common)
        rows.append(
            _quality_row("asa_sparse_only", sparsity, plan.block_mask, curve_mass,
                         strategies.attend(plan, q, k, v, backend=backend), dense,
                         oracle_recall=oracle_recall, global_group=0)
        )

        if group > 0 and 1.0 - sparsity - 1.0 / group > 0:
            kept_target = 1.0 - sparsity - 1.0 / group
            asa_config = dataclasses.replace(
                config, selection="topk", min_ratio=0.0, max_ratio=kept_target, backend=backend
            )
            generator = torch.Generator().manual_seed(config.seed)
            out, stats = asa_attention(q, k, v, grid_thw=grid_thw, config=asa_config, generator=generator, record=True)
            same_budget = strategies.oracle_topk_mask(q, k, block_mass=curve_mass, **{**common, "sparsity": 1.0 - kept_target})
            same_budget_recall = metrics.attention_recall(
                None, None, same_budget.block_mask, block_size=block_size, block_mass=curve_mass
            )
            rows.append(
                _quality_row("asa", sparsity, stats["block_mask"], curve_mass, out, dense,
                             oracle_recall=same_budget_recall, global_group=group)
            )
    return rows


def _significant(value: float) -> float:
    return float(f"{value:.6g}")


def _seconds(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def measure_estimation_cost(
    *, length: int, heads: int, head_dim: int, samples: list[int], block_size: int, repeats: int, seed: int
) -> dict:
    """Time the sampled estimate plus selection against dense SDPA on random q, k of length `length`.

    The cost does not depend on the values, so random inputs suffice. Each of `repeats` rounds runs
    dense attention once, then every estimate three times and the selection three times (keeping the
    fastest of each), and computes the round's fraction of dense time. Load that drifts on a shared
    machine then affects both sides of a ratio alike; the median over rounds is reported.
    """
    generator = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(1, heads, length, head_dim, generator=generator) for _ in range(3))
    dense_times = []
    estimate_times = {count: [] for count in samples}
    select_times = {count: [] for count in samples}
    fractions = {count: [] for count in samples}
    with torch.no_grad():
        for _ in range(repeats):
            dense_times.append(_seconds(lambda: F.scaled_dot_product_attention(q, k, v)))
            for count in samples:
                sampler = torch.Generator().manual_seed(seed)
                estimate = lambda: estimate_block_scores(  # noqa: E731
                    q, k, block_size=block_size, samples_per_block=count, generator=sampler
                )
                scores = estimate()
                estimate_times[count].append(min(_seconds(estimate) for _ in range(3)))
                select_times[count].append(min(_seconds(lambda: select_blocks(scores)) for _ in range(3)))
                fractions[count].append((estimate_times[count][-1] + select_times[count][-1]) / dense_times[-1])

    rows = []
    for count in samples:
        rows.append(
            {
                "samples_per_block": count,
                "estimate_seconds": _significant(statistics.median(estimate_times[count])),
                "select_seconds": _significant(statistics.median(select_times[count])),
                "fraction_of_dense": _significant(statistics.median(fractions[count])),
                "fraction_of_dense_per_round": [_significant(x) for x in fractions[count]],
            }
        )
        logger.info("samples %d: estimate + select = %.1f%% of dense", count, 100 * rows[-1]["fraction_of_dense"])
    return {
        "length": length,
        "heads": heads,
        "head_dim": head_dim,
        "block_size": block_size,
        "dtype": "float32",
        "rounds": repeats,
        "statistic": "median over rounds; per round, dense once and the fastest of 3 runs of estimate and select",
        "dense_sdpa_seconds": _significant(statistics.median(dense_times)),
        "dense_sdpa_seconds_per_round": [_significant(x) for x in dense_times],
        "rows": rows,
    }


def _acceptance(quality: list[dict], timing: dict) -> dict:
    at = {row["strategy"]: row for row in quality if abs(row["target_sparsity"] - 0.75) < 1e-9}
    result = {}
    if at:
        best_static = min(at[name]["relative_l2_error"]["mean"] for name in STATIC_STRATEGIES)
        for name in ("asa", "asa_sparse_only"):
            if name in at:
                result[f"{name}_error_below_static_at_0.75"] = at[name]["relative_l2_error"]["mean"] < best_static
                result[f"{name}_recall_vs_oracle_at_0.75"] = at[name]["recall_vs_oracle"]
    fraction = {row["samples_per_block"]: row["fraction_of_dense"] for row in timing["rows"]}
    if 16 in fraction:
        result["estimation_fraction_16_samples"] = fraction[16]
        result["estimation_at_most_5_percent"] = fraction[16] <= 0.05
    return result


def run_masks_benchmark(settings: MasksBenchSettings) -> dict:
    """Measure mask quality on synthetic structured inputs and the cost of the estimate; return the report."""
    settings.validate()
    torch.manual_seed(settings.seed)
    grid = tuple(settings.grid)
    config = BladeConfig(
        block_size=settings.block_size,
        samples_per_block=settings.samples_per_block,
        pool_group=settings.pool_group,
        seed=settings.seed,
    )
    spec = SyntheticAttentionSpec()
    generator = torch.Generator().manual_seed(settings.seed)
    q, k, v = synthetic_video_attention(grid, heads=settings.heads, head_dim=settings.head_dim, generator=generator, spec=spec)

    started = time.perf_counter()
    quality = measure_quality(
        q, k, v, grid_thw=grid, sparsities=settings.sparsities, config=config, backend=settings.backend
    )
    logger.info("quality measured in %.1f s", time.perf_counter() - started)
    timing = measure_estimation_cost(
        length=settings.timing_length,
        heads=settings.timing_heads,
        head_dim=settings.head_dim,
        samples=list(settings.timing_samples),
        block_size=settings.block_size,
        repeats=settings.repeats,
        seed=settings.seed,
    )
    return {
        "benchmark": "masks",
        "created": utc_timestamp(),
        "settings": dataclasses.asdict(settings),
        "inputs": {
            "kind": "synthetic",
            "note": (
                "SYNTHETIC q, k, v from blade.bench.synthetic.synthetic_video_attention (3D-local Gaussian "
                "kernel, drifting content clusters, sink tokens), not captured from a trained transformer"
            ),
            "grid_thw": list(grid),
            "heads": settings.heads,
            "head_dim": settings.head_dim,
            "batch": 1,
            "spec": dataclasses.asdict(spec),
        },
        "config": config.to_dict(),
        "machine": describe_machine(),
        "quality": quality,
        "estimation_cost": timing,
        "acceptance": _acceptance(quality, timing),
    }


def plot_report(report: dict, path: Path) -> Path:
    """Draw output error and recall against target sparsity, one line per strategy; save a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from blade.plotting import plot_mask_quality

    title = f"block masks on synthetic inputs, grid {tuple(report['inputs']['grid_thw'])}"
    return save_figure(plot_mask_quality(report["quality"], title=title), path)


def write_report(report: dict, out_dir: Path) -> dict[str, Path]:
    """Write masks.json and masks.png to out_dir; return their paths."""
    out_dir = Path(out_dir)
    return {
        "json": atomic_write_json(out_dir / "masks.json", report),
        "figure": plot_report(report, out_dir / "masks.png"),
    }
