"""`blade evaluate`: compare the teacher, the few-step teacher, students and sparse variants in one run;
`blade demo-summary`: the headline numbers of `make demo` from an evaluation's metrics."""

import argparse
import json
import logging
import time
from pathlib import Path

from blade.cli.settings import add_set_option, parse_settings

logger = logging.getLogger(__name__)

# command-line overrides of config settings: option -> setting
_OVERRIDES = {"model": "model", "lora": "lora", "dense_lora": "dense_lora", "out_dir": "out_dir",
              "run_id": "run_id", "device": "device", "dtype": "dtype"}


def register(subparsers) -> None:
    """Add the `evaluate` and `demo-summary` subcommands to `subparsers`."""
    parser = subparsers.add_parser(
        "evaluate",
        help="time and score teacher, students and sparse variants on the same prompts and seeds",
        description=(
            "Run every variant of the config (default: 50-step CFG teacher, 8-step teacher without CFG, the "
            "students of the given LoRAs, training-free sparse variants) on the same prompts and seeds; write "
            "metrics.json, metrics.md, figures and videos to OUT_DIR/RUN_ID/. A rerun with the same run id "
            "reuses every variant whose settings are unchanged. See configs/evaluate/toy.yaml."
        ),
    )
    parser.add_argument("--config", required=True, help="YAML or JSON file with the evaluation settings")
    for option in _OVERRIDES:
        parser.add_argument(f"--{option.replace('_', '-')}", dest=option, default=None,
                            help=f"override {_OVERRIDES[option]} of the config")
    add_set_option(parser, "e.g. --set prompts=toy:heldin --set training_free=[]")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(handler=run)

    summary = subparsers.add_parser(
        "demo-summary",
        help="write summary.json (speedup, ToyBench ratio, sparsity, wall time) from an evaluation's metrics",
    )
    summary.add_argument("--metrics", required=True, help="metrics.json of a `blade evaluate` run")
    summary.add_argument("--out", required=True, help="summary JSON to write")
    summary.add_argument("--started", type=float, required=True, help="start time of the demo, seconds since the epoch")
    summary.add_argument("--student", default="student_asa", help="variant the headline numbers describe")
    summary.set_defaults(handler=run_summary)


def run(args: argparse.Namespace) -> int:
    """Run `blade evaluate`; return the exit code (2 on an invalid config or a missing input)."""
    from blade.evaluation import EvalConfig, evaluate

    try:
        overrides = parse_settings(args.settings)
        overrides.update({setting: getattr(args, option) for option, setting in _OVERRIDES.items()
                          if getattr(args, option) is not None})
        config = EvalConfig.from_file(args.config, **overrides)
    except (ValueError, TypeError, FileNotFoundError) as error:
        logger.error("%s", error)
        return 2
    try:
        metrics = evaluate(config, progress=not args.no_progress)
    except FileNotFoundError as error:  # a missing model, LoRA or prompt file, found before any model work
        logger.error("%s", error)
        return 2
    from blade.evaluation import metrics_table

    print(metrics_table(metrics))
    logger.info("results in %s", metrics["run_dir"])
    return 0


def run_summary(args: argparse.Namespace) -> int:
    """Write and print the demo summary; return the exit code (2 on a missing or unsuitable metrics file)."""
    from blade.evaluation import write_demo_summary

    try:
        path = Path(args.metrics)
        if not path.is_file():
            raise FileNotFoundError(f"no metrics file at {str(path)!r}; run blade evaluate first")
        metrics = json.loads(path.read_text(encoding="utf-8"))
        summary = write_demo_summary(args.out, metrics, time.time() - args.started, student=args.student)
    except (ValueError, FileNotFoundError) as error:
        logger.error("%s", error)
        return 2
    print(json.dumps(summary, indent=2))
    return 0
