"""`blade generate`: text-to-video with a Wan or CogVideoX pipeline folder, optionally with a LoRA and ASA."""

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    """Add the `generate` subcommand to `subparsers`."""
    parser = subparsers.add_parser(
        "generate",
        help="generate videos from prompts (MP4, GIF preview and a JSON of settings and timings)",
        description=(
            "Generate one video per prompt with a local diffusers pipeline folder (Wan or CogVideoX, including "
            "the toy model). Writes <index>_<prompt>.mp4 and .gif per prompt and generation.json with the "
            "settings and per-video and per-step wall times. Sizes the model cannot take are rejected before "
            "the model is loaded; NaN or Inf latents stop the run with the step number. A rerun with the same "
            "settings and model files into the same folder keeps the videos already written (see --overwrite)."
        ),
    )
    parser.add_argument("--model", required=True, help="diffusers pipeline folder (model_index.json)")
    prompt_source = parser.add_mutually_exclusive_group(required=True)
    prompt_source.add_argument("--prompt", help="one prompt")
    prompt_source.add_argument("--prompts", help="UTF-8 text file, one prompt per line (duplicates are generated once)")
    parser.add_argument("--out", required=True, help="output folder")

    parser.add_argument("--steps", type=int, required=True, help="denoising steps per video")
    parser.add_argument("--guidance", type=float, required=True,
                        help="classifier-free guidance scale; <= 1 disables guidance (one transformer call per step)")
    parser.add_argument("--seed", type=int, default=0,
                        help="run seed; prompt i draws its noise from a generator seeded with (seed, i) (default 0)")
    parser.add_argument("--negative", default="", help="negative prompt for guidance (default: empty)")
    parser.add_argument("--height", type=int, default=None, help="frame height in pixels (default: the pipeline's)")
    parser.add_argument("--width", type=int, default=None, help="frame width in pixels (default: the pipeline's)")
    parser.add_argument("--frames", type=int, default=None, help="number of frames (default: the pipeline's)")
    parser.add_argument("--fps", type=float, default=None,
                        help="frame rate of the written files (default: 16 for Wan, 8 for CogVideoX)")
    parser.add_argument("--gif-max-side", type=int, default=480,
                        help="scale the GIF preview down to this many pixels on its longer side; 0 keeps the full "
                             "size (default 480)")

    parser.add_argument("--lora", default=None,
                        help="diffusers-format LoRA: .safetensors file or folder with pytorch_lora_weights.safetensors "
                             "(sampled with the pipeline's scheduler, not the sampler blade distill trains with)")
    parser.add_argument("--blade", default=None, metavar="PRESET|CONFIG",
                        help="apply ASA: preset wan, cogvideox or dense, or a YAML/JSON file of BladeConfig fields "
                             "(default: the model's own dense attention)")
    parser.add_argument("--device", default=None, help="device (default: cuda when available, else cpu)")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                        help="weight dtype (default: bfloat16 on cuda, float32 on cpu)")
    parser.add_argument("--vae-dtype", default=None, choices=["float32", "bfloat16", "float16"],
                        help="VAE dtype (default: float32 for Wan, --dtype for CogVideoX)")
    parser.add_argument("--overwrite", action="store_true",
                        help="generate every video again, even those an earlier run with the same settings wrote")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(handler=run)


def _prompts(args) -> list[str]:
    if args.prompt is not None:
        if not args.prompt.strip():
            raise ValueError("--prompt is blank; pass a non-empty prompt")
        return [args.prompt]
    from blade.prompts import read_prompt_file

    return read_prompt_file(args.prompts).prompts


def run(args: argparse.Namespace) -> int:
    """Run `blade generate` with parsed arguments; return the exit code (2 on invalid input)."""
    from blade.generate import NonFiniteError, blade_config_from_option, check_video_size, default_video_size
    from blade.generate import generate_videos, prepare_pipeline
    from safetensors import SafetensorError

    from blade.generate.run import check_arguments, default_fps
    from blade.generate.sizes import pipeline_skeleton

    try:
        # Check everything on a weightless copy of the pipeline first, so bad input fails in a second.
        skeleton = pipeline_skeleton(args.model)
        fps = default_fps(skeleton) if args.fps is None else args.fps
        gif_max_side = args.gif_max_side or None
        prompts = check_arguments(_prompts(args), steps=args.steps, guidance=args.guidance, seed=args.seed,
                                  fps=fps, gif_max_side=gif_max_side)
        if args.blade is not None:
            blade_config_from_option(args.blade)
        if args.lora is not None and not Path(args.lora).exists():
            raise FileNotFoundError(f"--lora {args.lora!r} not found; pass a LoRA .safetensors file or its folder")
        default_height, default_width, default_frames = default_video_size(skeleton)
        height = default_height if args.height is None else args.height
        width = default_width if args.width is None else args.width
        frames = default_frames if args.frames is None else args.frames
        check_video_size(skeleton, height, width, frames)

        pipe, details = prepare_pipeline(args.model, lora=args.lora, blade=args.blade, device=args.device,
                                         dtype=args.dtype, vae_dtype=args.vae_dtype)
        metadata = {"model": str(args.model), **details}
        report = generate_videos(
            pipe, prompts, args.out, steps=args.steps, guidance=args.guidance, seed=args.seed,
            height=height, width=width, frames=frames, negative_prompt=args.negative, fps=fps,
            gif_max_side=gif_max_side,
            progress=not args.no_progress, metadata=metadata, resume=not args.overwrite,
        )
    # SafetensorError: a --lora file that is not valid safetensors.
    except (FileNotFoundError, ValueError, TypeError, SafetensorError) as error:
        logger.error("blade generate failed: %s", error)
        return 2
    except NonFiniteError as error:
        logger.error("blade generate stopped: %s", error)
        return 1
    videos = report["videos"]
    logger.info("wrote %d videos to %s in %.1f s (median %.2f s per video)", len(videos), args.out,
                report["total_s"], _median([video["wall_s"] for video in videos]))
    return 0


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
