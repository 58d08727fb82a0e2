"""Generate toy videos with a text-to-video pipeline and score them with ToyBench."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from blade.io import atomic_write_json
from blade.toy.bench import frechet_video_distance, score_videos
from blade.toy.data import make_videos, to_uint8, to_vae_layout
from blade.toy.prompts import COLOURS, DIRECTIONS, SHAPES, ToyPrompt, heldout_prompts, parse_prompt
from blade.toy.teacher import ToyTeacherConfig

logger = logging.getLogger(__name__)


def default_eval_prompts() -> dict[str, list[ToyPrompt]]:
    """Evaluation splits: 24 training prompts and all 12 held-out prompts.

    The held-in split has one prompt per colour-shape pair: colour i and shape j take direction
    (i + 2 j + 1) mod 4. ``heldout_prompts`` holds out (i + 2 j) mod 4, so these are all training
    prompts, and over the 24 pairs every direction appears 6 times.
    """
    directions = list(DIRECTIONS)
    heldin = [
        ToyPrompt(colour, shape, directions[(i + 2 * j + 1) % 4])
        for i, colour in enumerate(COLOURS)
        for j, shape in enumerate(SHAPES)
    ]
    return {"heldin": heldin, "heldout": heldout_prompts()}


@torch.no_grad()
def generate_videos(
    pipeline,
    prompts: list[ToyPrompt | str],
    config: ToyTeacherConfig,
    num_inference_steps: int = 50,
    guidance_scale: float = 5.0,
    seed: int = 0,
    num_frames: int | None = None,
    height: int | None = None,
    width: int | None = None,
) -> torch.Tensor:
    """Generate one video per prompt, one pipeline call per prompt.

    Args:
        pipeline: a ``WanPipeline`` (the toy teacher or any pipeline with the same call signature).
        prompts: toy prompts or their texts.
        config: supplies the default video size and ``text_len`` (``max_sequence_length``).
        num_inference_steps, guidance_scale: sampler settings; guidance 1.0 disables CFG.
        seed: video i uses a CPU generator seeded with ``seed + i``, so results do not depend on
            which other prompts are generated.
        num_frames, height, width: override the config's generation size.

    Returns:
        float32 ``[B, T, H, W, 3]`` in [-1, 1], the layout and range of ``blade.toy.data``.
    """
    texts = [parse_prompt(p).text if isinstance(p, str) else p.text for p in prompts]
    videos = []
    for index, text in enumerate(tqdm(texts, desc="generate", unit="video")):
        frames = pipeline(
            prompt=text,
            num_frames=num_frames or config.num_frames,
            height=height or config.height,
            width=width or config.width,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            max_sequence_length=config.text_len,
            generator=torch.Generator().manual_seed(seed + index),
            output_type="np",
        ).frames  # [1, T, H, W, 3] in [0, 1]
        videos.append(torch.from_numpy(frames[0]).to(torch.float32) * 2.0 - 1.0)
    return torch.stack(videos)


def save_preview(videos: torch.Tensor, path: str | os.PathLike, num_columns: int = 6) -> Path:
    """Write a PNG grid, one row per video and ``num_columns`` evenly spaced frames, atomically.

    Args:
        videos: float ``[B, T, H, W, 3]`` in [-1, 1].
        path: output ``.png`` path.
        num_columns: frames shown per video (at most T).
    """
    import imageio.v3 as iio

    num_frames = videos.shape[1]
    columns = torch.linspace(0, num_frames - 1, min(num_columns, num_frames)).round().long()
    rows = [torch.cat(list(video[columns]), dim=1) for video in videos]  # each [H, n*W, 3]
    grid = to_uint8(torch.cat(rows, dim=0)).numpy()  # [B*H, n*W, 3]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp")
    iio.imwrite(staging, grid, extension=".png")
    os.replace(staging, path)
    return path


def evaluate_pipeline(
    pipeline,
    config: ToyTeacherConfig,
    splits: dict[str, list[ToyPrompt | str]] | None = None,
    num_inference_steps: int = 50,
    guidance_scale: float = 5.0,
    seed: int = 0,
    out_file: str | os.PathLike | None = None,
    num_frames: int | None = None,
    height: int | None = None,
    width: int | None = None,
) -> dict:
    """Generate and score every split; add the Fréchet distance to real procedural videos.

    Args:
        pipeline, config, num_inference_steps, guidance_scale, seed, num_frames, height, width:
            see ``generate_videos``.
        splits: split name -> prompts; ``default_eval_prompts()`` when None.
        out_file: JSON written atomically when given, with a preview grid ``<stem>-<split>.png``
            of the generated videos beside it.

    Returns:
        ``{"settings": {...}, "<split>": {"aggregate": {..., "frechet_distance": float or None},
        "per_video": [...]}}``. The reference videos for the Fréchet distance are procedural
        renders of the same prompts drawn with ``seed``.
    """
    splits = default_eval_prompts() if splits is None else splits
    size = (num_frames or config.num_frames, height or config.height, width or config.width)
    result: dict = {
        "settings": {
            "num_inference_steps": num_inference_steps,
            "guidance_scale": guidance_scale,
            "seed": seed,
            "num_frames": size[0],
            "height": size[1],
            "width": size[2],
        }
    }
    for name, prompts in splits.items():
        start = time.perf_counter()
        videos = generate_videos(
            pipeline, prompts, config, num_inference_steps, guidance_scale, seed, *size
        )
        scores = score_videos(videos, prompts)
        # A covariance needs two videos; a single-prompt split has no Fréchet distance.
        distance = None
        if len(prompts) >= 2:
            distance = frechet_video_distance(videos, make_videos(prompts, *size, seed=seed))
        scores["aggregate"]["frechet_distance"] = distance
        scores["aggregate"]["seconds_per_video"] = (time.perf_counter() - start) / len(prompts)
        result[name] = scores
        if out_file is not None:
            save_preview(videos, Path(out_file).with_name(f"{Path(out_file).stem}-{name}.png"))
        logger.info("%s: %s", name, {k: v if v is None else round(v, 4) for k, v in scores["aggregate"].items()})
    if out_file is not None:
        atomic_write_json(out_file, result)
    return result


@torch.no_grad()
def score_vae_reconstruction(vae, prompts: list[ToyPrompt | str], num_frames: int, height: int, width: int, seed: int = 0) -> dict:
    """ToyBench scores of procedural videos after a VAE encode-decode round trip.

    This is the ceiling any generated video can reach through this VAE: a perfect VAE scores 1.0.

    Args:
        vae: an ``AutoencoderKLWan``.
        prompts: toy prompts or their texts.
        num_frames, height, width: video size.
        seed: seed of the procedural videos.

    Returns:
        ``score_videos`` output plus ``aggregate["mean_abs_error"]`` of the reconstruction.
    """
    videos = make_videos(prompts, num_frames, height, width, seed=seed)
    reconstructions = []
    for video in videos:
        latents = vae.encode(to_vae_layout(video.unsqueeze(0))).latent_dist.mode()
        decoded = vae.decode(latents).sample  # [1, C, T, H, W]
        reconstructions.append(decoded[0].permute(1, 2, 3, 0))  # [T, H, W, C]
    reconstructions = torch.stack(reconstructions).clamp(-1.0, 1.0)
    scores = score_videos(reconstructions, prompts)
    scores["aggregate"]["mean_abs_error"] = (reconstructions - videos).abs().mean().item()
    return scores


def evaluate_teacher(
    model: str | os.PathLike,
    out_file: str | os.PathLike | None = None,
    **kwargs,
) -> dict:
    """Evaluate a saved toy pipeline folder or a training run folder (its latest checkpoint).

    Args:
        model: a folder from ``save_pipeline`` (``model_index.json`` present) or a run folder
            from ``train_teacher`` (``latest.json`` present).
        out_file: JSON output path; None skips writing.
        **kwargs: passed to ``evaluate_pipeline`` (splits, num_inference_steps, guidance_scale,
            seed, num_frames, height, width).
    """
    from diffusers import WanPipeline

    from blade.toy.teacher import load_config
    from blade.toy.train import load_run_pipeline

    model = Path(model)
    config = load_config(model)
    if (model / "model_index.json").is_file():
        pipeline = WanPipeline.from_pretrained(model)
        source = {"model": str(model)}
    elif (model / "latest.json").is_file():
        pipeline, state = load_run_pipeline(model)
        source = {"run_dir": str(model), "step": state["step"], "phase": state["phase"]}
    else:
        raise FileNotFoundError(
            f"{model} is neither a pipeline folder (model_index.json) nor a training run (latest.json)"
        )
    pipeline.set_progress_bar_config(disable=True)
    result = evaluate_pipeline(pipeline, config, out_file=out_file, **kwargs)
    result["settings"].update(source)  # rewrite the JSON below with where the weights came from
    if out_file is not None:
        atomic_write_json(out_file, result)
    return result
