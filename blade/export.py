"""Write videos as MP4 (H.264 through the ffmpeg binary bundled with imageio-ffmpeg) and animated GIF.

Frames are `[T, H, W, C]` (time, height, width, channels), with C = 3 for RGB or 1 for grey. They
are uint8 in [0, 255] or floating point in a declared `value_range`: (0, 1) is what diffusers
pipelines return with `output_type="np"`, and (-1, 1) is the range of VAE outputs before
post-processing.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import numpy as np

from blade.io import atomic_write, atomic_write_bytes

logger = logging.getLogger(__name__)

VALUE_RANGES = ((0.0, 1.0), (-1.0, 1.0))

# Float frames may overshoot their range by this much (rounding in a VAE decode); the rest is clipped.
_RANGE_TOLERANCE = 1e-2


def to_uint8_frames(frames, *, value_range: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """Convert video frames to uint8 RGB.

    Args:
        frames: `[T, H, W, C]` numpy array or torch tensor (any device), C = 3 (RGB) or 1 (grey,
            repeated to RGB). uint8 frames are returned unchanged; floating-point frames are mapped
            from `value_range` to [0, 255] and rounded to the nearest integer.
        value_range: the range of floating-point frames, (0, 1) or (-1, 1). Ignored for uint8.

    Returns:
        A C-contiguous uint8 array `[T, H, W, 3]`.

    Raises:
        TypeError: frames of another dtype (bool, integers other than uint8).
        ValueError: a wrong rank or channel count, an unsupported `value_range`, non-finite values,
            or values outside `value_range` (beyond a 0.01 tolerance, which is clipped).
    """
    array = _to_numpy(frames)
    if array.ndim != 4:
        raise ValueError(f"frames must be [T, H, W, C] with C = 1 or 3, got shape {tuple(array.shape)}")
    if array.shape[-1] not in (1, 3):
        hint = " (channels first? permute to [T, H, W, C])" if array.shape[1] in (1, 3) else ""
        raise ValueError(f"frames must be [T, H, W, C] with C = 1 or 3, got shape {tuple(array.shape)}{hint}")
    if array.shape[0] == 0:
        raise ValueError("frames must contain at least one frame, got T = 0")

    if array.dtype == np.uint8:
        result = array
    elif np.issubdtype(array.dtype, np.floating):
        result = _float_to_uint8(array, value_range)
    else:
        raise TypeError(
            f"frames must be uint8 in [0, 255] or floating point in value_range, got dtype {array.dtype}; "
            "convert with frames.astype(np.uint8) or frames / 255.0"
        )
    if result.shape[-1] == 1:
        result = np.repeat(result, 3, axis=-1)
    return np.ascontiguousarray(result)


def _to_numpy(frames) -> np.ndarray:
    if isinstance(frames, np.ndarray):
        return frames
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency, this only guards odd installs
        torch = None
    if torch is not None and isinstance(frames, torch.Tensor):
        tensor = frames.detach().cpu()
        if tensor.dtype in (torch.float16, torch.bfloat16):
            tensor = tensor.float()
        return tensor.numpy()
    raise TypeError(f"frames must be a numpy array or torch tensor [T, H, W, C], got {type(frames).__name__}")


def _float_to_uint8(array: np.ndarray, value_range) -> np.ndarray:
    value_range = tuple(float(bound) for bound in value_range)
    if value_range not in VALUE_RANGES:
        raise ValueError(f"value_range must be one of {VALUE_RANGES}, got {value_range!r}")
    if not np.isfinite(array).all():
        raise ValueError(
            f"frames contain {int((~np.isfinite(array)).sum())} NaN or Inf values; a video with them would "
            "export as black or noise, so find where they come from (e.g. run in float32)"
        )
    low, high = value_range
    smallest, largest = float(array.min()), float(array.max())
    if smallest < low - _RANGE_TOLERANCE or largest > high + _RANGE_TOLERANCE:
        raise ValueError(
            f"float frames contain values in [{smallest:.4g}, {largest:.4g}], outside value_range {value_range}; "
            f"pass the range they use (one of {VALUE_RANGES}) or uint8 frames"
        )
    unit = (array.astype(np.float32) - low) / (high - low)
    return np.clip(np.rint(unit * 255.0), 0, 255).astype(np.uint8)


def _even_sized(frames: np.ndarray) -> np.ndarray:
    # H.264 in yuv420p subsamples chroma 2x2, so both sides must be even. Repeating the last row or
    # column keeps every original pixel; the alternative, imageio's macro-block resize, resamples them.
    _, height, width, _ = frames.shape
    pad_height, pad_width = height % 2, width % 2
    if pad_height or pad_width:
        logger.warning(
            "MP4 (H.264, yuv420p) needs even sizes, got %dx%d (H x W); writing %dx%d with the last row/column repeated",
            height, width, height + pad_height, width + pad_width,
        )
        frames = np.pad(frames, ((0, 0), (0, pad_height), (0, pad_width), (0, 0)), mode="edge")
    return frames


def write_mp4(frames, path: str | os.PathLike, *, fps: float = 16.0, quality: float = 8.0,
              value_range: tuple[float, float] = (0.0, 1.0)) -> Path:
    """Write frames as an H.264 MP4 (yuv420p) atomically.

    Args:
        frames: `[T, H, W, C]` frames, as in `to_uint8_frames`. Odd H or W gets the last row or
            column repeated (logged as a warning), because yuv420p needs even sizes.
        path: the output file; parent folders are created.
        fps: frames per second.
        quality: imageio-ffmpeg's quality in [1, 10]; 8 maps to x264 CRF 10 (visually lossless).
        value_range: range of float frames, (0, 1) or (-1, 1).

    Returns:
        The path written.
    """
    import imageio_ffmpeg

    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps!r}")
    if not 1 <= quality <= 10:
        raise ValueError(f"quality must be in [1, 10] (imageio-ffmpeg's scale), got {quality!r}")
    array = _even_sized(to_uint8_frames(frames, value_range=value_range))
    _, height, width, _ = array.shape
    path = Path(path)

    def write_frames(temporary):
        writer = imageio_ffmpeg.write_frames(
            str(temporary), (width, height), fps=fps, codec="libx264", quality=quality,
            macro_block_size=1, ffmpeg_log_level="error",
        )
        writer.send(None)  # start the ffmpeg process
        for frame in array:
            writer.send(frame.tobytes())
        writer.close()

    # ffmpeg picks the container from the extension, so the temporary file keeps ".mp4".
    atomic_write(path, write_frames, suffix=".mp4")
    return path


def write_gif(frames, path: str | os.PathLike, *, fps: float = 16.0, max_side: int | None = None,
              value_range: tuple[float, float] = (0.0, 1.0)) -> Path:
    """Write frames as a looping animated GIF atomically.

    Each frame gets its own adaptive palette of at most 256 colours, so a frame with 256 colours or
    fewer is stored exactly. GIF stores frame delays in hundredths of a second, so the delay is
    1/fps rounded to 10 ms. Pillow merges consecutive identical frames into one longer frame, so the
    file may contain fewer frames than T while keeping the same duration.

    Args:
        frames: `[T, H, W, C]` frames, as in `to_uint8_frames`.
        path: the output file; parent folders are created.
        fps: frames per second.
        max_side: if set, frames whose longer side exceeds it are scaled down (Lanczos, aspect ratio
            kept, each side at least 1 pixel) so the longer side equals it; for small previews.
        value_range: range of float frames, (0, 1) or (-1, 1).

    Returns:
        The path written.
    """
    from PIL import Image

    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps!r}")
    if max_side is not None and (isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 1):
        raise ValueError(f"max_side must be None or an int >= 1, got {max_side!r}")
    array = to_uint8_frames(frames, value_range=value_range)
    images = [Image.fromarray(frame, mode="RGB") for frame in array]
    _, height, width, _ = array.shape
    if max_side is not None and max(height, width) > max_side:
        scale = max_side / max(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))  # PIL sizes are (W, H)
        images = [image.resize(size, Image.Resampling.LANCZOS) for image in images]
    buffer = io.BytesIO()
    images[0].save(
        buffer, format="GIF", save_all=True, append_images=images[1:],
        duration=max(10, round(100.0 / fps) * 10), loop=0, optimize=False,
    )
    return atomic_write_bytes(path, buffer.getvalue())


def export_video(frames, path_without_suffix: str | os.PathLike, *, fps: float = 16.0,
                 gif_max_side: int | None = None, value_range: tuple[float, float] = (0.0, 1.0)) -> dict[str, Path]:
    """Write a video as `<path>.mp4` and an animated GIF preview `<path>.gif`.

    Args:
        frames: `[T, H, W, C]` frames, as in `to_uint8_frames`.
        path_without_suffix: output path; ".mp4" and ".gif" are appended.
        fps: frames per second of both files.
        gif_max_side: longer side of the GIF preview at most, in pixels (see `write_gif`); None
            keeps the full size. The MP4 always keeps the full size.
        value_range: range of float frames, (0, 1) or (-1, 1).

    Returns:
        {"mp4": path, "gif": path}.
    """
    array = to_uint8_frames(frames, value_range=value_range)
    base = Path(path_without_suffix)
    return {
        "mp4": write_mp4(array, base.with_name(base.name + ".mp4"), fps=fps),
        "gif": write_gif(array, base.with_name(base.name + ".gif"), fps=fps, max_side=gif_max_side),
    }
