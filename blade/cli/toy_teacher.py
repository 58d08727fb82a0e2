"""`blade toy-teacher train|evaluate`: train the toy Wan teacher and score it with ToyBench."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    parser = subparsers.add_parser("toy-teacher", help="train or evaluate the toy Wan teacher")
    commands = parser.add_subparsers(dest="toy_command", metavar="ACTION", required=True)

    train = commands.add_parser("train", help="train from scratch or resume; export the pipeline folder at the end")
    train.add_argument("--run-dir", type=Path, default=Path("results/toy-teacher"),
                       help="folder for checkpoints and logs; an existing run resumes (default: %(default)s)")
    train.add_argument("--export", type=Path, default=Path("data/models/toy-wan"),
                       help="diffusers pipeline folder written when training finishes (default: %(default)s)")
    train.add_argument("--config", type=Path, default=None,
                       help="JSON file with ToyTeacherConfig fields (default: the built-in recipe)")
    train.add_argument("--stop-after", type=int, default=None,
                       help="stop after this many global steps (VAE steps first), checkpointing first")
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser("evaluate", help="generate held-in and held-out prompts and score them")
    evaluate.add_argument("--model", type=Path, default=Path("data/models/toy-wan"),
                          help="pipeline folder or training run folder (default: %(default)s)")
    evaluate.add_argument("--out", type=Path, default=Path("results/toy-teacher-eval/metrics.json"),
                          help="metrics JSON (default: %(default)s)")
    evaluate.add_argument("--steps", type=int, default=50, help="sampling steps (default: %(default)s)")
    evaluate.add_argument("--guidance", type=float, default=5.0, help="CFG scale; 1 disables it (default: %(default)s)")
    evaluate.add_argument("--seed", type=int, default=0, help="first generator seed (default: %(default)s)")
    evaluate.add_argument("--limit", type=int, default=None,
                          help="score only N evenly spaced prompts of each split (default: all)")
    evaluate.add_argument("--size", type=int, nargs=3, metavar=("FRAMES", "HEIGHT", "WIDTH"), default=None,
                          help="video size (default: the model's configured generation size)")
    evaluate.set_defaults(handler=_evaluate)


def _train(args: argparse.Namespace) -> int:
    from blade.toy.teacher import ToyTeacherConfig
    from blade.toy.train import train_teacher

    config = ToyTeacherConfig()
    if args.config is not None:
        config = ToyTeacherConfig.from_dict(json.loads(args.config.read_text(encoding="utf-8")))
    train_teacher(config, args.run_dir, export_dir=args.export, stop_after=args.stop_after)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from blade.toy.evaluate import default_eval_prompts, evaluate_teacher

    splits = default_eval_prompts()
    if args.limit is not None:
        if args.limit < 1:
            raise ValueError(f"--limit must be at least 1, got {args.limit}")
        splits = {name: prompts[:: max(1, len(prompts) // args.limit)][: args.limit] for name, prompts in splits.items()}
    size = dict(zip(("num_frames", "height", "width"), args.size)) if args.size else {}
    result = evaluate_teacher(
        args.model, args.out, splits=splits, num_inference_steps=args.steps,
        guidance_scale=args.guidance, seed=args.seed, **size,
    )
    for name in splits:
        logger.info("%s %s", name, json.dumps(result[name]["aggregate"]))
    logger.info("metrics written to %s", args.out)
    return 0
