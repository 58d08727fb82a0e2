"""`blade bench masks`: ASA against sliding-tile, radial and oracle block masks at matched sparsity.

Two measurements, written to one JSON file (default results/bench/masks.json):

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

import argparse
import dataclasses
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from blade.bench.synthetic import SyntheticAttentionSpec, synthetic_video_attention
from blade.config import BladeConfig
from blade.sparsity import asa_attention, estimate_block_scores, metrics, select_blocks, strategies
from blade.sparsity.layout import sequence_order

logger = logging.getLogger(__name__)

DEFAULT_OUTPUT = Path("results/bench/masks.json")
STATIC_STRATEGIES = ("sliding_tile", "radial")


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


def _median_seconds(function, repeats: int) -> float:
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def measure_estimation_cost(
    *, length: int, heads: int, head_dim: int, samples: list[int], block_size: int, repeats: int, seed: int
) -> dict:
    """Time dense SDPA and the sampled estimate plus selection on random q, k of length `length`."""
    generator = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(1, heads, length, head_dim, generator=generator) for _ in range(3))
    with torch.no_grad():
        dense_seconds = _median_seconds(lambda: F.scaled_dot_product_attention(q, k, v), repeats)
        rows = []
        for count in samples:
            sampler = torch.Generator().manual_seed(seed)
            estimate = lambda: estimate_block_scores(  # noqa: E731
                q, k, block_size=block_size, samples_per_block=count, generator=sampler
            )
            scores = estimate()
            estimate_seconds = _median_seconds(estimate, repeats)
            select_seconds = _median_seconds(lambda: select_blocks(scores), repeats)
            rows.append(
                {
                    "samples_per_block": count,
                    "estimate_seconds": round(estimate_seconds, 5),
                    "select_seconds": round(select_seconds, 5),
                    "fraction_of_dense": round((estimate_seconds + select_seconds) / dense_seconds, 5),
                }
            )
            logger.info("samples %d: estimate + select = %.1f%% of dense", count, 100 * rows[-1]["fraction_of_dense"])
    return {
        "length": length,
        "heads": heads,
        "head_dim": head_dim,
        "block_size": block_size,
        "dtype": "float32",
        "repeats": repeats,
        "dense_sdpa_seconds": round(dense_seconds, 5),
        "rows": rows,
    }


def _write_json_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(descriptor, "w") as handle:
        json.dump(data, handle, indent=2)
        handle.write("\n")
    os.replace(temporary, path)


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


def run_masks_benchmark(args: argparse.Namespace) -> int:
    """Run `blade bench masks` with parsed arguments (see `register_masks`) and write the JSON."""
    torch.manual_seed(args.seed)
    grid = tuple(args.grid)
    config = BladeConfig(
        block_size=args.block_size, samples_per_block=args.samples_per_block, pool_group=args.pool_group, seed=args.seed
    )
    spec = SyntheticAttentionSpec()
    generator = torch.Generator().manual_seed(args.seed)
    q, k, v = synthetic_video_attention(grid, heads=args.heads, head_dim=args.head_dim, generator=generator, spec=spec)

    started = time.perf_counter()
    quality = measure_quality(q, k, v, grid_thw=grid, sparsities=args.sparsities, config=config, backend=args.backend)
    logger.info("quality measured in %.1f s", time.perf_counter() - started)
    timing = measure_estimation_cost(
        length=args.timing_length,
        heads=args.timing_heads,
        head_dim=args.head_dim,
        samples=args.timing_samples,
        block_size=args.block_size,
        repeats=args.repeats,
        seed=args.seed,
    )

    report = {
        "benchmark": "masks",
        "inputs": {
            "kind": "synthetic",
            "note": (
                "SYNTHETIC q, k, v from blade.bench.synthetic.synthetic_video_attention (3D-local Gaussian "
                "kernel, drifting content clusters, sink tokens), not captured from a trained transformer"
            ),
            "grid_thw": list(grid),
            "heads": args.heads,
            "head_dim": args.head_dim,
            "batch": 1,
            "spec": dataclasses.asdict(spec),
            "seed": args.seed,
        },
        "config": {**config.to_dict(), "backend": args.backend},
        "machine": {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "processor": platform.processor() or platform.machine(),
        },
        "quality": quality,
        "estimation_cost": timing,
        "acceptance": _acceptance(quality, timing),
    }
    output = Path(args.output)
    _write_json_atomic(output, report)
    logger.info("wrote %s: %s", output, report["acceptance"])
    return 0


def add_masks_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of `blade bench masks` to `parser`."""
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT), help="JSON file to write (default %(default)s)")
    parser.add_argument("--grid", type=int, nargs=3, default=[9, 24, 40], metavar=("T", "H", "W"),
                        help="token grid of the synthetic video (default %(default)s)")
    parser.add_argument("--heads", type=int, default=6, help="heads of the synthetic input (default %(default)s)")
    parser.add_argument("--head-dim", type=int, default=64, help="head dimension D (default %(default)s)")
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.75, 0.9],
                        help="target sparsities to compare at (default %(default)s)")
    parser.add_argument("--block-size", type=int, default=128, help="tokens per block (default %(default)s)")
    parser.add_argument("--samples-per-block", type=int, default=16,
                        help="sampled tokens per block for ASA's estimate (default %(default)s)")
    parser.add_argument("--pool-group", type=int, default=30,
                        help="tokens per pooled group of ASA's global branch; 0 disables it (default %(default)s)")
    parser.add_argument("--backend", default="auto", help="block_sparse_attention backend (default %(default)s)")
    parser.add_argument("--timing-length", type=int, default=16384,
                        help="sequence length of the estimation-cost timing (default %(default)s)")
    parser.add_argument("--timing-heads", type=int, default=12, help="heads of the timing input (default %(default)s)")
    parser.add_argument("--timing-samples", type=int, nargs="+", default=[8, 16, 32],
                        help="samples per block to time (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats; the median is kept (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of inputs and sampling (default %(default)s)")


def register_masks(bench_subparsers) -> argparse.ArgumentParser:
    """Add the `masks` subcommand to the subparsers of `blade bench`; returns its parser."""
    parser = bench_subparsers.add_parser(
        "masks",
        help="compare ASA with sliding-tile, radial and oracle block masks at matched sparsity",
        description=__doc__.split("\n\n")[0],
    )
    add_masks_arguments(parser)
    parser.set_defaults(handler=run_masks_benchmark)
    return parser


def main(argv=None) -> int:
    """Run the benchmark standalone: `python -m blade.bench.masks [options]`."""
    parser = argparse.ArgumentParser(prog="python -m blade.bench.masks", description=__doc__.split("\n\n")[0])
    add_masks_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    return run_masks_benchmark(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
