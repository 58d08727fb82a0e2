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
    report = run_attention_benchmark(settings)
    paths = write_report(report, args.out_dir)
    print(format_table(report))
    logger.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return 0
