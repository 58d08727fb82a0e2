import imageio_ffmpeg
import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from blade.export import export_video, to_uint8_frames, write_gif, write_mp4

# Saturated and mixed colours, one per frame; each frame also holds a 16 x 16 patch of the next colour
# so colours sit next to each other inside a frame, as in a real video.
PALETTE = np.array(
    [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0], [255, 255, 0], [40, 120, 200]],
    dtype=np.uint8,
)
HEIGHT, WIDTH = 48, 64
PATCH = (slice(16, 32), slice(32, 48))


def _known_colour_video() -> np.ndarray:
    frames = np.empty((len(PALETTE), HEIGHT, WIDTH, 3), dtype=np.uint8)  # [T, H, W, C]
    for index, colour in enumerate(PALETTE):
        frames[index] = colour
        frames[index][PATCH] = PALETTE[(index + 1) % len(PALETTE)]
    return frames


def _read_gif(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.stack([np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(image)])


def _read_mp4(path) -> tuple[np.ndarray, dict]:
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    width, height = meta["size"]
    frames = [np.frombuffer(frame, dtype=np.uint8).reshape(height, width, 3) for frame in reader]
    return np.stack(frames), meta


# The same video as uint8, as float in [0, 1] and [-1, 1], and as a torch tensor.
VARIANTS = {
    "uint8": (lambda video: video, (0.0, 1.0)),
    "float01": (lambda video: video.astype(np.float32) / 255.0, (0.0, 1.0)),
    "float_minus1_1": (lambda video: video.astype(np.float64) / 127.5 - 1.0, (-1.0, 1.0)),
    "torch_bfloat16": (lambda video: torch.from_numpy(video).to(torch.bfloat16) / 255.0, (0.0, 1.0)),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_gif_keeps_palette_colours_exactly(tmp_path, variant):
    video = _known_colour_video()
    convert, value_range = VARIANTS[variant]
    if variant == "torch_bfloat16":
        # bfloat16 keeps 8 significant bits, so 0..255 / 255 round to other values; use the colours
        # bfloat16 can hold as the expectation.
        video = (torch.from_numpy(video).to(torch.bfloat16) / 255.0).float().mul(255).round().to(torch.uint8).numpy()
    path = write_gif(convert(video), tmp_path / "video.gif", fps=8, value_range=value_range)

    read = _read_gif(path)
    assert read.shape == video.shape
    np.testing.assert_array_equal(read, video)


@pytest.mark.parametrize("variant", ["uint8", "float01", "float_minus1_1"])
def test_mp4_keeps_colours_within_codec_error(tmp_path, variant):
    video = _known_colour_video()
    convert, value_range = VARIANTS[variant]
    path = write_mp4(convert(video), tmp_path / "video.mp4", fps=8, value_range=value_range)

    read, meta = _read_mp4(path)
    assert read.shape == video.shape
    assert meta["fps"] == 8
    # yuv420p halves chroma resolution, so compare away from colour edges: the frame corner and the
    # middle of the patch. 8 levels of 255 is the error of one rounding in YCbCr and back.
    error = np.abs(read.astype(int) - video.astype(int))
    assert error[:, :8, :8].max() <= 8
    assert error[:, 20:28, 36:44].max() <= 8
    # a swapped channel order or a wrong range would be off by ~100 or more everywhere
    assert error.mean() < 3


def test_uint8_and_float_give_identical_bytes():
    video = _known_colour_video()
    from_float = to_uint8_frames(video.astype(np.float32) / 255.0)
    from_signed = to_uint8_frames(video.astype(np.float32) / 127.5 - 1.0, value_range=(-1, 1))
    np.testing.assert_array_equal(from_float, video)
    np.testing.assert_array_equal(from_signed, video)


def test_grey_frames_export_as_rgb(tmp_path):
    grey = np.linspace(0, 1, 5 * 16 * 16, dtype=np.float32).reshape(5, 16, 16, 1)
    path = write_gif(grey, tmp_path / "grey.gif")
    read = _read_gif(path)
    expected = np.repeat(np.rint(grey * 255).astype(np.uint8), 3, axis=-1)
    np.testing.assert_array_equal(read, expected)


def test_gif_preview_scaled_down(tmp_path):
    video = _known_colour_video()  # [7, 48, 64, 3]
    path = write_gif(video, tmp_path / "small.gif", max_side=32)
    read = _read_gif(path)
    assert read.shape == (7, 24, 32, 3)
    # further than the Lanczos support (6 source pixels) from a colour edge, colours stay exact
    np.testing.assert_array_equal(read[:, :4, :4], video[:, :4, :4])
    patch_colour = video[:, 24:25, 40:41]  # [7, 1, 1, 3]
    np.testing.assert_array_equal(read[:, 11:13, 19:21], np.broadcast_to(patch_colour, (7, 2, 2, 3)))
    # frames already small enough are kept as they are
    np.testing.assert_array_equal(_read_gif(write_gif(video, tmp_path / "same.gif", max_side=64)), video)
    with pytest.raises(ValueError, match="max_side must be None or an int >= 1, got 0"):
        write_gif(video, tmp_path / "bad.gif", max_side=0)


def test_odd_size_mp4_is_padded_not_resized(tmp_path):
    video = np.zeros((3, 17, 23, 3), dtype=np.uint8)
    video[:, :, :12] = [200, 30, 30]
    path = write_mp4(video, tmp_path / "odd.mp4")
    read, _ = _read_mp4(path)
    assert read.shape == (3, 18, 24, 3)
    assert np.abs(read[:, 2:15, 2:9].astype(int) - [200, 30, 30]).max() <= 8
    assert read[:, 2:15, 15:22].max() <= 8


def test_export_video_writes_both_files(tmp_path):
    video = _known_colour_video()
    paths = export_video(video, tmp_path / "sub" / "clip", fps=4)
    assert paths["mp4"] == tmp_path / "sub" / "clip.mp4"
    assert paths["gif"] == tmp_path / "sub" / "clip.gif"
    assert paths["mp4"].stat().st_size > 0
    with Image.open(paths["gif"]) as image:
        assert image.info["duration"] == 250
    assert sorted(path.name for path in (tmp_path / "sub").iterdir()) == ["clip.gif", "clip.mp4"]


@pytest.mark.parametrize(
    ("frames", "kwargs", "error", "match"),
    [
        (np.zeros((2, 8, 8), np.uint8), {}, ValueError, r"\[T, H, W, C\].*got shape \(2, 8, 8\)"),
        (np.zeros((2, 3, 8, 8), np.uint8), {}, ValueError, "channels first"),
        (np.zeros((0, 8, 8, 3), np.uint8), {}, ValueError, "at least one frame"),
        (np.zeros((2, 8, 8, 3), np.int16), {}, TypeError, "dtype int16"),
        (np.full((2, 8, 8, 3), 2.0), {}, ValueError, r"outside value_range \(0.0, 1.0\)"),
        (np.full((2, 8, 8, 3), -0.5), {}, ValueError, r"pass the range they use"),
        (np.full((2, 8, 8, 3), np.nan), {}, ValueError, "NaN or Inf"),
        (np.zeros((2, 8, 8, 3)), {"value_range": (0, 255)}, ValueError, "value_range must be one of"),
    ],
)
def test_bad_frames_are_rejected(frames, kwargs, error, match):
    with pytest.raises(error, match=match):
        to_uint8_frames(frames, **kwargs)


def test_small_overshoot_is_clipped():
    frames = np.array([-0.004, 0.5, 1.004], dtype=np.float32).reshape(1, 1, 3, 1)
    np.testing.assert_array_equal(to_uint8_frames(frames)[0, 0, :, 0], [0, 128, 255])
