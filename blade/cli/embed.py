"""`blade embed`: encode a prompt file into a safetensors embedding cache."""

import argparse
import logging

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    """Add the `embed` subcommand to `subparsers`."""
    parser = subparsers.add_parser(
        "embed",
        help="encode a prompt file with a pipeline's text encoder",
        description=(
            "Encode every unique line of a UTF-8 prompt file with the text encoder of a diffusers pipeline "
            "folder and store the embeddings as safetensors shards plus index.json. A rerun into the same "
            "folder reuses finished shards."
        ),
    )

    parser.add_argument("--model", required=True, help="diffusers pipeline folder (model_index.json, text_encoder/, tokenizer/)")
    parser.add_argument("--prompts", required=True, help="UTF-8 text file, one prompt per line")
    parser.add_argument("--out", required=True, help="output folder for the shards and index.json")
    parser.add_argument("--negative", default="", help="negative prompt for classifier-free guidance (default: the empty prompt)")

    parser.add_argument("--batch-size", type=int, default=16, help="prompts per encoder call (default 16)")
    parser.add_argument("--shard-size", type=int, default=256, help="prompts per shard file (default 256)")
    parser.add_argument(
        "--max-length", type=int, default=None,
        help="tokens per embedding (default: Wan 512, CogVideoX 226, or the tokenizer's model_max_length "
             "when it is smaller or the pipeline is neither)",
    )
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="encoder and storage dtype")
    parser.add_argument("--device", default=None, help="encoder device (default: cuda when available, else cpu)")
    parser.add_argument(
        "--padding", default="zero", choices=["zero", "encoder"],
        help="zero: masked encoding, positions past the prompt set to 0 (Wan); "
             "encoder: unmasked encoding as the CogVideoX pipeline does",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run `blade embed` with parsed arguments; return the exit code (2 on invalid input)."""
    from blade.prompts import embed_prompts

    try:
        embeddings = embed_prompts(
            args.model,
            args.prompts,
            args.out,
            negative_prompt=args.negative,
            batch_size=args.batch_size,
            shard_size=args.shard_size,
            max_length=args.max_length,
            dtype=args.dtype,
            device=args.device,
            padding=args.padding,
            progress=not args.no_progress,
        )
    except (FileNotFoundError, ValueError, TypeError) as error:
        logger.error("blade embed failed: %s", error)
        return 2
    logger.info(
        "stored %d prompt embeddings of shape [%d, %d] (%s, %d truncated) in %s",
        len(embeddings), embeddings.max_length, embeddings.hidden_size,
        str(embeddings.dtype).removeprefix("torch."), int(embeddings.truncated.sum()), args.out,
    )
    return 0
