import json
import shutil

import pytest

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


def test_rule_of_tiny_pipelines(tiny_pipeline):
    # Both tiny VAEs scale 8x in space and 4x in time; both transformers use 2 x 2 spatial patches.
    assert video_size_rule(tiny_pipeline) == VideoSizeRule(
        temporal_factor=4, latent_frame_multiple=1, height_multiple=16, width_multiple=16
    )


def test_skeleton_rule_equals_loaded_rule(tiny_pipeline, tiny_pipeline_dirs, model_family):
    skeleton = pipeline_skeleton(tiny_pipeline_dirs[model_family])
    assert type(skeleton) is type(tiny_pipeline)
    assert video_size_rule(skeleton) == video_size_rule(tiny_pipeline)
    assert default_video_size(skeleton) == default_video_size(tiny_pipeline)


def test_default_sizes(wan_pipeline, cogvideox_pipeline):
    # Wan: the pipeline's call defaults; CogVideoX: sample size 8 x 8 latents x 8, sample_frames 9
    assert default_video_size(wan_pipeline) == (480, 832, 81)
    assert default_video_size(cogvideox_pipeline) == (64, 64, 9)


@pytest.mark.parametrize(("height", "width", "frames"), [(32, 48, 5), (16, 16, 1), (80, 16, 13)])
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
def test_invalid_sizes_name_nearest_valid(tiny_pipeline, height, width, frames, match):
    with pytest.raises(ValueError, match=match):
        check_video_size(tiny_pipeline, height, width, frames)


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


def test_cogvideox_temporal_patch(tiny_pipeline_dirs, tmp_path):
    # CogVideoX 1.5 patches 2 latent frames together: latent frames (F - 1) / 4 + 1 must be even.
    folder = _edited_copy(tiny_pipeline_dirs["cogvideox"], tmp_path / "cog", "transformer", patch_size_t=2)
    skeleton = pipeline_skeleton(folder)
    assert video_size_rule(skeleton).latent_frame_multiple == 2
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
