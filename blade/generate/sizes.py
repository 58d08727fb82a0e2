"""Which video sizes a loaded text-to-video pipeline can generate, read from its configs.

The VAE compresses frames by `vae_scale_factor_temporal` (t) and each side by
`vae_scale_factor_spatial` (s); the transformer then cuts the latent video into patches of
p_t x p_h x p_w latent pixels. A pipeline returns exactly the F frames of H x W pixels requested when:

- F - 1 is a multiple of t, so L = (F - 1) / t + 1 latent frames decode back to F frames (the VAE
  keeps the first frame alone and groups the rest by t);
- Wan: L is a multiple of p_t. CogVideoX: L is odd, because AutoencoderKLCogVideoX decodes an even
  L to t * L frames (its temporal upsampling keeps the first frame alone only in an odd-length
  chunk; measured with diffusers 0.42: L = 2 decodes to 8 frames, L = 3 to 9). CogVideoX 1.5's
  patch_size_t adds no rule, because its pipeline pads L to a multiple of p_t and drops the padding
  before decoding;
- H is a multiple of s * p_h and W a multiple of s * p_w;
- for a CogVideoX transformer with learned positional embeddings (CogVideoX-5B I2V), H and W equal
  the trained size (config `sample_height` / `sample_width` latent pixels times s).

Otherwise diffusers' pipelines round silently (Wan rounds F, H and W down) or return another frame
count, so the output would not match the request.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VideoSizeRule:
    """The frame counts and sizes a pipeline accepts.

    Attributes:
        temporal_factor: t, frames per latent frame after the first.
        latent_frame_multiple: the latent frame count L must be a multiple of it (Wan's p_t).
        odd_latent_frames: L must be odd (CogVideoX's VAE).
        height_multiple: s * p_h, in pixels.
        width_multiple: s * p_w, in pixels.
        fixed_size: (H, W) when the model only takes its trained size, else None.
    """

    temporal_factor: int
    latent_frame_multiple: int
    height_multiple: int
    width_multiple: int
    odd_latent_frames: bool = False
    fixed_size: tuple[int, int] | None = None

    def _is_valid_latent_count(self, latent_frames: int) -> bool:
        if latent_frames < 1 or latent_frames % self.latent_frame_multiple:
            return False
        return latent_frames % 2 == 1 or not self.odd_latent_frames

    def is_valid_frames(self, frames: int) -> bool:
        if frames < 1 or (frames - 1) % self.temporal_factor:
            return False
        return self._is_valid_latent_count((frames - 1) // self.temporal_factor + 1)

    def nearest_frames(self, frames: int) -> list[int]:
        """Return the valid frame counts nearest `frames` (the one below, if any, and the one above)."""
        # Valid counts repeat with a period of at most 2 * latent_frame_multiple latent frames.
        latent_guess = max(1, (frames - 1) // self.temporal_factor + 1)
        period = 2 * self.latent_frame_multiple
        candidates = [
            self.temporal_factor * (latent - 1) + 1
            for latent in range(1, latent_guess + period + 1)
            if self._is_valid_latent_count(latent)
        ]
        below = [value for value in candidates if value <= frames]
        above = [value for value in candidates if value >= frames]
        if below and below[-1] == frames:
            return [frames]
        return [*below[-1:], *above[:1]]

    def describe_frames(self) -> str:
        """Return the frame rule in words, e.g. "frames must be 4k + 1"."""
        if self.odd_latent_frames and self.latent_frame_multiple == 1:
            return (f"frames must be {2 * self.temporal_factor}k + 1 (an odd number of latent frames, "
                    f"(frames - 1) / {self.temporal_factor} + 1)")
        rule = f"frames must be {self.temporal_factor}k + 1"
        if self.latent_frame_multiple > 1:
            rule += f" with (frames - 1) / {self.temporal_factor} + 1 a multiple of {self.latent_frame_multiple}"
        if self.odd_latent_frames:
            rule += " and odd"
        return rule

    def nearest_height(self, height: int) -> list[int]:
        """Return the valid heights nearest `height`."""
        if self.fixed_size is not None:
            return [self.fixed_size[0]]
        return _neighbours(height, self.height_multiple, self.height_multiple)

    def nearest_width(self, width: int) -> list[int]:
        """Return the valid widths nearest `width`."""
        if self.fixed_size is not None:
            return [self.fixed_size[1]]
        return _neighbours(width, self.width_multiple, self.width_multiple)

    def is_valid_side(self, value: int, multiple: int, fixed: int | None) -> bool:
        if fixed is not None:
            return value == fixed
        return value >= multiple and value % multiple == 0


def _neighbours(value: int, smallest: int, step: int) -> list[int]:
    # Valid values are smallest + k * step, k >= 0; return those just below and just above `value`.
    if value <= smallest:
        return [smallest]
    below = smallest + (value - smallest) // step * step
    return [below] if below == value else [below, below + step]


def _patch_size(transformer) -> tuple[int, int, int]:
    config = transformer.config
    patch = getattr(config, "patch_size", None)
    if patch is None:
        raise TypeError(f"{type(transformer).__name__}.config has no patch_size; blade reads it to validate sizes")
    if isinstance(patch, int):
        # CogVideoX: square spatial patches, plus patch_size_t latent frames in CogVideoX 1.5.
        temporal = getattr(config, "patch_size_t", None) or 1
        return int(temporal), patch, patch
    if len(patch) != 3:
        raise TypeError(f"expected a 3-entry (t, h, w) patch_size, got {tuple(patch)!r} from {type(transformer).__name__}")
    return tuple(int(entry) for entry in patch)


def video_size_rule(pipe) -> VideoSizeRule:
    """Read the video size rule of a loaded pipeline from its VAE and transformer configs.

    Args:
        pipe: a diffusers video pipeline with `vae_scale_factor_spatial`,
            `vae_scale_factor_temporal` and a `transformer` (WanPipeline, CogVideoXPipeline).

    Returns:
        The pipeline's `VideoSizeRule`.

    Raises:
        TypeError: the pipeline lacks one of these attributes.
    """
    missing = [name for name in ("vae_scale_factor_spatial", "vae_scale_factor_temporal", "transformer")
               if getattr(pipe, name, None) is None]
    if missing:
        raise TypeError(
            f"{type(pipe).__name__} has no {', '.join(missing)}; blade reads the VAE scale factors and the "
            "transformer's patch size from a diffusers video pipeline such as WanPipeline or CogVideoXPipeline"
        )
    spatial = int(pipe.vae_scale_factor_spatial)
    temporal = int(pipe.vae_scale_factor_temporal)
    patch_t, patch_h, patch_w = _patch_size(pipe.transformer)

    config = pipe.transformer.config
    odd_latent_frames = False
    if type(pipe.transformer).__name__ == "CogVideoXTransformer3DModel":
        # The CogVideoX pipeline pads the latent frames to patch_size_t itself (and drops the padding
        # before decoding), so p_t constrains nothing; its VAE needs an odd latent frame count.
        patch_t = 1
        odd_latent_frames = type(pipe.vae).__name__ == "AutoencoderKLCogVideoX"
    fixed_size = None
    if getattr(config, "use_learned_positional_embeddings", False):
        # Learned position tables exist only for the trained latent size (diffusers raises otherwise).
        fixed_size = (int(config.sample_height) * spatial, int(config.sample_width) * spatial)
    return VideoSizeRule(
        temporal_factor=temporal,
        latent_frame_multiple=patch_t,
        odd_latent_frames=odd_latent_frames,
        height_multiple=spatial * patch_h,
        width_multiple=spatial * patch_w,
        fixed_size=fixed_size,
    )


def check_video_size(pipe, height: int, width: int, frames: int) -> VideoSizeRule:
    """Raise unless `pipe` generates exactly `frames` frames of `height` x `width` pixels.

    Call it before any model work: the pipelines round invalid sizes silently.

    Args:
        pipe: a loaded diffusers video pipeline (see `video_size_rule`).
        height, width: frame size in pixels.
        frames: number of frames.

    Returns:
        The pipeline's `VideoSizeRule`.

    Raises:
        TypeError: a size is not an int.
        ValueError: one or more sizes are invalid; the message lists each with its nearest valid
            values and the rule.
    """
    for name, value in (("height", height), ("width", width), ("frames", frames)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    rule = video_size_rule(pipe)
    fixed_height, fixed_width = rule.fixed_size or (None, None)
    problems = []
    if not rule.is_valid_frames(frames):
        problems.append(
            f"frames={frames} is invalid: {rule.describe_frames()}; "
            f"nearest valid: {_or_list(rule.nearest_frames(frames))}"
        )
    for name, value, multiple, fixed, nearest in (
        ("height", height, rule.height_multiple, fixed_height, rule.nearest_height),
        ("width", width, rule.width_multiple, fixed_width, rule.nearest_width),
    ):
        if rule.is_valid_side(value, multiple, fixed):
            continue
        requirement = (f"this model only takes its trained {name} {fixed}" if fixed is not None
                       else f"{name} must be a positive multiple of {multiple} (VAE scale x patch size)")
        problems.append(f"{name}={value} is invalid: {requirement}; nearest valid: {_or_list(nearest(value))}")
    if problems:
        raise ValueError(f"{type(pipe).__name__} cannot generate this video size: " + "; ".join(problems))
    return rule


def _or_list(values: list[int]) -> str:
    return " or ".join(str(value) for value in values)


def pipeline_skeleton(path):
    """Build a pipeline folder's pipeline with a weightless VAE and transformer, to read size rules fast.

    The VAE and transformer are created from their config.json on the meta device (no memory, no
    weight files read) and every other component is None, so `check_video_size` and
    `default_video_size` can run before a multi-gigabyte model is loaded. The pipeline class's own
    `__init__` computes the VAE scale factors, exactly as for the loaded pipeline.

    Args:
        path: a Wan or CogVideoX diffusers pipeline folder.

    Returns:
        A pipeline object usable only for reading configs and scale factors.
    """
    import json
    from pathlib import Path

    import diffusers
    from accelerate import init_empty_weights

    from blade.models import pipeline_family

    pipeline_family(path)  # rejects missing folders and unsupported pipeline classes
    folder = Path(path)
    index = json.loads((folder / "model_index.json").read_text())
    components = {}
    for name in ("vae", "transformer"):
        _, class_name = index[name]
        model_class = getattr(diffusers, class_name)
        with init_empty_weights():
            components[name] = model_class.from_config(model_class.load_config(folder, subfolder=name))
    others = {name: None for name in index if not name.startswith("_") and name not in components}
    return getattr(diffusers, index["_class_name"])(**components, **others)
