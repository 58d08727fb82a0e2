import imageio.v3 as iio
import numpy as np
import pytest
import torch
from diffusers.utils import export_to_video

from blade import apply_blade, record_masks, remove_blade
from blade.models import load_pipeline
from tests.patching.helpers import preset

_CALL = {
    "prompt": "a red ball rolling on grass",
    "negative_prompt": "",
    "height": 96,
    "width": 128,
    "num_frames": 9,
    "num_inference_steps": 2,
    "guidance_scale": 5.0,
    "max_sequence_length": 16,
}


def _generate(pipeline, output_type):
    return pipeline(**_CALL, output_type=output_type, generator=torch.Generator().manual_seed(0)).frames


def test_loaded_pipeline_patched_exports_video(tiny_pipeline_dirs, model_family, tmp_path):
    pipeline = load_pipeline(tiny_pipeline_dirs[model_family])
    dense_latents = _generate(pipeline, "latent")

    apply_blade(pipeline.transformer, preset(model_family), schedule=pipeline.scheduler)
    with record_masks(pipeline.transformer) as recording:
        sparse_latents = _generate(pipeline, "latent")
    frames = _generate(pipeline, "np")[0]

    assert torch.isfinite(sparse_latents).all()
    assert not torch.allclose(sparse_latents, dense_latents, atol=1e-4)
    assert {call.step for call in recording.calls} == {0, 1}
    assert all(call.sparsity.float().mean() > 0.5 for call in recording.calls)
    assert frames.shape == (9, 96, 128, 3)
    assert np.isfinite(frames).all()

    path = export_to_video(list(frames), str(tmp_path / "video.mp4"), fps=8)
    assert iio.imread(path).shape[:3] == (9, 96, 128)

    remove_blade(pipeline.transformer)
    assert torch.equal(_generate(pipeline, "latent"), dense_latents)


def test_pipeline_odd_size_fails_before_denoising(cogvideox_pipeline):
    """CogVideoX's pipeline accepts any multiple of 8 pixels, but a latent height of 9 cannot be
    patched by 2; the patched model must stop with the valid sizes instead of mis-reshaping."""
    apply_blade(cogvideox_pipeline.transformer, preset("cogvideox"), schedule=cogvideox_pipeline.scheduler)
    call = dict(_CALL, height=72)
    with pytest.raises(ValueError, match=r"latent height 9 is not divisible by the patch size 2.*\(pixel height 64 or 80"):
        cogvideox_pipeline(**call, output_type="latent")
