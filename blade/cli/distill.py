"""`blade distill`: train a K-step ASA student LoRA from a dense teacher (TDM)."""

import argparse
import logging

from blade.cli.settings import add_set_option, parse_settings

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    """Add the `distill` subcommand to `subparsers`."""
    parser = subparsers.add_parser(
        "distill",
        help="distil a few-step ASA student LoRA from the teacher (TDM)",
        description=(
            "Train the student and fake-score LoRAs of sparsity-aware TDM distillation from prompt embeddings "
            "(`blade embed`). Every setting lives in the config file (YAML or JSON; see configs/distill/). "
            "Several processes: torchrun --nproc_per_node N -m blade distill ..., or accelerate launch."
        ),
    )
    parser.add_argument("--config", required=True, help="YAML or JSON file with the distillation settings")
    parser.add_argument(
        "--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
        help="continue from the newest checkpoint in OUTPUT_DIR/checkpoints, or from the given checkpoint folder",
    )
    parser.add_argument("--output-dir", default=None, help="override output_dir of the config")
    parser.add_argument("--max-train-steps", type=int, default=None, help="override max_train_steps of the config")
    add_set_option(parser, "e.g. --set num_steps=4 --set output_dir=results/distill/toy-4step")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run `blade distill` with parsed arguments; return the exit code (2 on an invalid config)."""
    from blade.distill import DistillConfig, train

    try:
        overrides = parse_settings(args.settings)
        if args.output_dir is not None:
            overrides["output_dir"] = args.output_dir
        if args.max_train_steps is not None:
            overrides["max_train_steps"] = args.max_train_steps
        config = DistillConfig.from_file(args.config, **overrides)
    except (ValueError, TypeError, FileNotFoundError) as error:
        logger.error("%s", error)
        return 2
    result = train(config, resume=args.resume)
    logger.info("student LoRA: %s", result.lora_path)
    return 0
