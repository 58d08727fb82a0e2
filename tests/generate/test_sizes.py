import json
import shutil

import pytest
import torch

from blade.generate import VideoSizeRule, check_video_size, default_video_size, video_size_rule
from blade.generate.sizes import pipeline_skeleton


def _edited_copy(source, destination, component, **changes):
    """Copy a pipeline folder and change entries of one component's config.json."""
    shutil.copytree(source, destination)
    config_path = destination / component / "config.json"
    config = json.loads(config_path.read_text())
    config.update(changes)
    config_path.write_text(json.dumps(config))
    return destination


def test_rule_of_tiny_pipelines(wan_pipeline, cogvideox_pipeline):
    # Both tiny VAEs scale 8x in space and 4x in time; both transformers use 2 x 2 spatial patches.
    assert video_size_rule(wan_pipeline) == VideoSizeRule(
        temporal_factor=4, latent_frame_multiple=1, height_multiple=16, width_multiple=16
    )
    assert video_size_rule(cogvideox_pipeline) == VideoSizeRule(
        temporal_factor=4, latent_frame_multiple=1, height_multiple=16, width_multiple=16, odd_latent_frames=True
    )


def test_frame_rule_matches_vae_decode(tiny_pipeline):
    """The rule must agree with the frame count the VAE really decodes, latent count by latent count."""
    rule = video_size_rule(tiny_pipeline)
    for latent_frames in range(1, 4):
        requested = rule.temporal_factor * (latent_frames - 1) + 1
        with torch.no_grad():
            latents = torch.randn(1, 4, latent_frames, 2, 2)  # [B, C, F, H, W]
            decoded = tiny_pipeline.vae.decode(latents).sample.shape[2]
        assert rule.is_valid_frames(requested) == (decoded == requested), (latent_frames, decoded)


def test_skeleton_rule_equals_loaded_rule(tiny_pipeline, tiny_pipeline_dirs, model_family):
    skeleton = pipeline_skeleton(tiny_pipeline_dirs[model_family])
    assert type(skeleton) is type(tiny_pipeline)
    assert video_size_rule(skeleton) == video_size_rule(tiny_pipeline)
    assert default_video_size(skeleton) == default_video_size(tiny_pipeline)


def test_default_sizes(wan_pipeline, cogvideox_pipeline):
    # Wan: the pipeline's call defaults; CogVideoX: sample size 8 x 8 latents x 8, sample_frames 9
    assert default_video_size(wan_pipeline) == (480, 832, 81)
    assert default_video_size(cogvideox_pipeline) == (64, 64, 9)


@pytest.mark.parametrize(("height", "width", "frames"), [(32, 48, 9), (16, 16, 1), (80, 16, 17)])
def test_valid_sizes_pass(tiny_pipeline, height, width, frames):
    check_video_size(tiny_pipeline, height, width, frames)


@pytest.mark.parametrize(
    ("height", "width", "frames", "match"),
    [
        (32, 48, 10, r"frames=10 is invalid: frames must be 4k \+ 1; nearest valid: 9 or 13"),
        (32, 48, 0, r"frames=0 is invalid.*nearest valid: 1$"),
        (40, 48, 9, r"height=40 is invalid: height must be a positive multiple of 16 .*nearest valid: 32 or 48"),
        (32, 8, 9, r"width=8 is invalid.*nearest valid: 16$"),
        (33, 47, 6, r"frames=6 .*nearest valid: 5 or 9; height=33 .*32 or 48; width=47 .*32 or 48"),
    ],
)
def test_invalid_sizes_name_nearest_valid(wan_pipeline, height, width, frames, match):
    with pytest.raises(ValueError, match=match):
        check_video_size(wan_pipeline, height, width, frames)


@pytest.mark.parametrize(
    ("frames", "match"),
    [
        (5, r"frames=5 is invalid: frames must be 8k \+ 1 \(an odd number of latent frames.*nearest valid: 1 or 9$"),
        (13, r"nearest valid: 9 or 17$"),
        (10, r"frames=10 .*nearest valid: 9 or 17$"),
    ],
)
def test_cogvideox_needs_odd_latent_frames(cogvideox_pipeline, frames, match):
    with pytest.raises(ValueError, match=match):
        check_video_size(cogvideox_pipeline, 32, 32, frames)


def test_non_int_size_rejected(wan_pipeline):
    with pytest.raises(TypeError, match=r"height must be an int, got 32.0"):
        check_video_size(wan_pipeline, 32.0, 32, 5)


def test_rule_reads_vae_scale_from_config(tiny_pipeline_dirs, tmp_path):
    folder = _edited_copy(tiny_pipeline_dirs["wan"], tmp_path / "wan", "vae", scale_factor_spatial=16,
                          scale_factor_temporal=8)
    skeleton = pipeline_skeleton(folder)
    assert video_size_rule(skeleton).height_multiple == 32
    with pytest.raises(ValueError, match=r"frames=5 .*8k \+ 1; nearest valid: 1 or 9; height=48 .*32 or 64"):
        check_video_size(skeleton, 48, 64, 5)


def test_cogvideox_temporal_patch_adds_no_rule(tiny_pipeline_dirs, tmp_path):
    # CogVideoX 1.5 patches 2 latent frames together, but its pipeline pads the latents to an even
    # count and drops the padding before decoding, so 9 frames (3 latent frames) stay valid.
    folder = _edited_copy(tiny_pipeline_dirs["cogvideox"], tmp_path / "cog", "transformer", patch_size_t=2)
    skeleton = pipeline_skeleton(folder)
    assert skeleton.transformer.config.patch_size_t == 2
    assert video_size_rule(skeleton) == video_size_rule(pipeline_skeleton(tiny_pipeline_dirs["cogvideox"]))
    check_video_size(skeleton, 32, 32, 9)
    with pytest.raises(ValueError, match=r"frames=13 is invalid.*nearest valid: 9 or 17"):
        check_video_size(skeleton, 32, 32, 13)


def test_wan_temporal_patch_rule(tiny_pipeline_dirs, tmp_path):
    # a Wan transformer with 2-frame patches needs an even latent frame count
    folder = _edited_copy(tiny_pipeline_dirs["wan"], tmp_path / "wan", "transformer", patch_size=[2, 2, 2])
    skeleton = pipeline_skeleton(folder)
    check_video_size(skeleton, 32, 32, 13)
    with pytest.raises(ValueError, match=r"frames=9 is invalid: .*a multiple of 2; nearest valid: 5 or 13"):
        check_video_size(skeleton, 32, 32, 9)


def test_cogvideox_learned_positions_fix_the_size(tiny_pipeline_dirs, tmp_path):
    # As in CogVideoX-5B I2V: learned position tables exist only for the trained 8 x 8 latent size.
    folder = _edited_copy(
        tiny_pipeline_dirs["cogvideox"], tmp_path / "cog", "transformer", use_learned_positional_embeddings=True
    )
    skeleton = pipeline_skeleton(folder)
    check_video_size(skeleton, 64, 64, 9)
    with pytest.raises(ValueError, match=r"height=32 is invalid: this model only takes its trained height 64; nearest valid: 64$"):
        check_video_size(skeleton, 32, 64, 9)


def test_skeleton_rejects_unsupported_folder(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(ValueError, match="does not support"):
        pipeline_skeleton(tmp_path)
