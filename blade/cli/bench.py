"""`blade bench`: the project's benchmarks. Each writes JSON (and a PNG) under results/bench/."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_OUT_DIR = Path("results/bench")


def _comma_list(cast):
    def parse(text: str):
        try:
            return tuple(cast(item) for item in text.split(",") if item.strip())
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"invalid list {text!r}: {error}") from error

    return parse


def register(subparsers) -> None:
    bench = subparsers.add_parser("bench", help="run a benchmark; results land in results/bench/")
    kinds = bench.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)

    attention = kinds.add_parser(
        "attention",
        help="block-sparse attention backends against dense SDPA",
        description="Time dense scaled_dot_product_attention and each block-sparse backend side by side "
        "(forward, and forward + backward) and write attention.json, attention.md and attention.png. "
        "The full grid takes hours on a 2-core CPU; --quick runs a subset in about two minutes.",
    )
    attention.add_argument("--quick", action="store_true", help="L 4096 and 8192, D 64, float32, sparsity 0.8")
    attention.add_argument("--lengths", type=_comma_list(int), help="sequence lengths, e.g. 4096,16384,32760")
    attention.add_argument("--heads", type=int, help="attention heads (default 12)")
    attention.add_argument("--head-dims", type=_comma_list(int), help="head dims, e.g. 64,128")
    attention.add_argument("--sparsities", type=_comma_list(float), help="fractions of skipped blocks, e.g. 0.5,0.8,0.9")
    attention.add_argument("--dtypes", type=_comma_list(str), help="float32, bfloat16 and/or float16")
    attention.add_argument("--modes", type=_comma_list(str), help="forward and/or forward_backward")
    attention.add_argument("--backends", type=_comma_list(str), help="backends to time (default auto,torch,flex)")
    attention.add_argument("--repeats", type=int, help="timed rounds per configuration; medians are reported (default 3)")
    attention.add_argument("--device", help="cpu or cuda (default cpu)")
    attention.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR, help="output folder (default results/bench)")
    attention.set_defaults(handler=_run_attention)

    masks = kinds.add_parser(
        "masks",
        help="ASA against sliding-tile, radial and oracle block masks at matched sparsity",
        description="Compare the attention recall and output error of ASA, sliding-tile, radial and oracle "
        "top-k block masks at matched sparsity on synthetic 3D-structured q, k, v, and time ASA's block "
        "estimate against dense attention. Writes masks.json and masks.png. The full run takes about 4 "
        "minutes on a 2-core CPU; --quick about 20 s.",
    )
    masks.add_argument("--quick", action="store_true", help="grid 5,12,16 with 3 heads, blocks of 32 with 8 samples; timing at L 4096 with 4 heads")
    masks.add_argument("--grid", type=_comma_list(int), help="token grid T,H,W of the synthetic input (default 9,24,40)")
    masks.add_argument("--heads", type=int, help="heads of the synthetic input (default 6)")
    masks.add_argument("--head-dim", type=int, help="head dimension, at least 53 (default 64)")
    masks.add_argument("--sparsities", type=_comma_list(float), help="target sparsities (default 0.5,0.75,0.9)")
    masks.add_argument("--block-size", type=int, help="tokens per block (default 128)")
    masks.add_argument("--samples-per-block", type=int, help="tokens sampled per block by ASA (default 16)")
    masks.add_argument("--pool-group", type=int, help="tokens per pooled group of ASA's global branch, 0 for none (default 30)")
    masks.add_argument("--backend", help="block_sparse_attention backend (default auto)")
    masks.add_argument("--timing-length", type=int, help="sequence length of the estimate timing (default 16384)")
    masks.add_argument("--timing-heads", type=int, help="heads of the estimate timing (default 12)")
    masks.add_argument("--timing-samples", type=_comma_list(int), help="samples per block to time (default 8,16,32)")
    masks.add_argument("--repeats", type=int, help="timing rounds of dense attention and the estimate; the median round is reported (default 3)")
    masks.add_argument("--seed", type=int, help="seed of the inputs and of ASA's sampling (default 0)")
    masks.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR, help="output folder (default results/bench)")
    masks.set_defaults(handler=_run_masks)


def _run_attention(args) -> int:
    from blade.bench.attention import format_table, run_attention_benchmark, settings_from_arguments, write_report

    settings = settings_from_arguments(
        args.quick,
        lengths=args.lengths,
        heads=args.heads,
        head_dims=args.head_dims,
        sparsities=args.sparsities,
        dtypes=args.dtypes,
        modes=args.modes,
        backends=args.backends,
        repeats=args.repeats,
        device=args.device,
    )
    try:
        settings.validate()
    except ValueError as error:
        logger.error("blade bench attention: %s", error)
        return 2
    report = run_attention_benchmark(settings)
    paths = write_report(report, args.out_dir)
    print(format_table(report))
    logger.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return 0


def _run_masks(args) -> int:
    from blade.bench.masks import run_masks_benchmark, write_report

    try:
        settings = _masks_settings(args)
        settings.validate()
    except ValueError as error:
        logger.error("blade bench masks: %s", error)
        return 2
    report = run_masks_benchmark(settings)
    paths = write_report(report, args.out_dir)
    logger.info("acceptance figures: %s", report["acceptance"])
    logger.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return 0


def _masks_settings(args):
    from blade.bench.masks import settings_from_arguments

    return settings_from_arguments(
        args.quick,
        grid=args.grid,
        heads=args.heads,
        head_dim=args.head_dim,
        sparsities=args.sparsities,
        block_size=args.block_size,
        samples_per_block=args.samples_per_block,
        pool_group=args.pool_group,
        backend=args.backend,
        timing_length=args.timing_length,
        timing_heads=args.timing_heads,
        timing_samples=args.timing_samples,
        repeats=args.repeats,
        seed=args.seed,
    )
