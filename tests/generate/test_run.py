import copy
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from blade.generate import NonFiniteError, generate_videos, prompt_seed
from blade.generate.run import REPORT_NAME

SIZE = {"height": 16, "width": 32, "frames": 5}
PROMPTS = ["a red ball", "a blue cube"]


def _generate(pipe, prompts, out, **overrides):
    arguments = {"steps": 2, "guidance": 1.0, "seed": 0, "progress": False, **SIZE, **overrides}
    return generate_videos(pipe, prompts, out, **arguments)


def _gif_frames(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.stack([np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(image)])


class CallCounter:
    """Counts transformer forwards; optionally replaces the output of one call with NaN."""

    def __init__(self, transformer, nan_on_call=None):
        self.calls = 0
        self.nan_on_call = nan_on_call
        self.handle = transformer.register_forward_hook(self)

    def __call__(self, module, args, output):
        self.calls += 1
        if self.calls == self.nan_on_call:
            return (torch.full_like(output[0], float("nan")), *output[1:])
        return output


@pytest.fixture(scope="module")
def first_run(_loaded_pipelines, tmp_path_factory):
    """Two prompts generated once with the tiny Wan pipeline: (pipeline, folder, report)."""
    pipe = copy.deepcopy(_loaded_pipelines["wan"])
    folder = tmp_path_factory.mktemp("first_run")
    report = _generate(pipe, PROMPTS, folder, metadata={"model": "tiny"})
    return pipe, folder, report


def test_report_and_files(first_run):
    _, folder, report = first_run
    assert sorted(path.name for path in folder.iterdir()) == [
        "0000_a-red-ball.gif", "0000_a-red-ball.mp4", "0001_a-blue-cube.gif", "0001_a-blue-cube.mp4", REPORT_NAME,
    ]
    on_disk = json.loads((folder / REPORT_NAME).read_text())
    assert on_disk == json.loads(json.dumps(report))
    assert on_disk["settings"]["model"] == "tiny"
    assert on_disk["settings"]["frames"] == 5
    assert on_disk["settings"]["fps"] == 16.0  # Wan's frame rate
    for index, video in enumerate(on_disk["videos"]):
        assert video["index"] == index
        assert video["prompt"] == PROMPTS[index]
        assert video["seed"] == prompt_seed(0, index)
        assert video["frames"] == 5
        assert len(video["step_s"]) == 2
        assert all(seconds > 0 for seconds in video["step_s"])
        assert video["denoise_s"] == pytest.approx(sum(video["step_s"]))
        # wall time also covers prompt encoding and the VAE decode
        assert video["wall_s"] > video["denoise_s"]
        assert _gif_frames(folder / video["gif"]).shape == (5, 16, 32, 3)


def test_video_depends_only_on_seed_and_index(first_run, tmp_path):
    pipe, folder, _ = first_run
    _generate(pipe, ["a green cone", "a blue cube"], tmp_path / "second")
    _generate(pipe, ["a blue cube"], tmp_path / "alone")

    cube = _gif_frames(folder / "0001_a-blue-cube.gif")
    np.testing.assert_array_equal(_gif_frames(tmp_path / "second" / "0001_a-blue-cube.gif"), cube)
    # at index 0 the same prompt gets other noise
    assert not np.array_equal(_gif_frames(tmp_path / "alone" / "0000_a-blue-cube.gif"), cube)


def test_prompt_seed_mixes_seed_and_index():
    seeds = {prompt_seed(seed, index) for seed in range(3) for index in range(3)}
    assert len(seeds) == 9
    assert prompt_seed(5, 7) == prompt_seed(5, 7)
    assert all(0 <= value < 2**63 for value in seeds)
    with pytest.raises(ValueError, match="index must be an int >= 0, got -1"):
        prompt_seed(0, -1)


def test_nan_latents_name_the_step(tiny_pipeline, tmp_path):
    counter = CallCounter(tiny_pipeline.transformer, nan_on_call=2)
    with pytest.raises(NonFiniteError, match=r"prompt 0 .*after denoising step 2 of 3 \(timestep"):
        _generate(tiny_pipeline, ["a red ball"], tmp_path, steps=3, frames=1)
    assert counter.calls == 2
    assert not list(tmp_path.glob("*.mp4"))


def test_nan_frames_are_an_error(wan_pipeline, tmp_path):
    def decode_to_nan(latents, return_dict=False):
        batch, _, latent_frames, height, width = latents.shape
        frames = (latent_frames - 1) * 4 + 1
        return (torch.full((batch, 3, frames, height * 8, width * 8), float("nan")),)

    wan_pipeline.vae.decode = decode_to_nan
    with pytest.raises(NonFiniteError, match="decoded frames contain .* NaN .*latents were finite"):
        _generate(wan_pipeline, ["a red ball"], tmp_path)
    assert not list(tmp_path.glob("*.gif"))


def test_invalid_size_rejected_before_any_work(wan_pipeline, tmp_path):
    counter = CallCounter(wan_pipeline.transformer)
    with pytest.raises(ValueError, match=r"frames=6 is invalid.*nearest valid: 5 or 9"):
        _generate(wan_pipeline, ["a red ball"], tmp_path / "out", frames=6)
    assert counter.calls == 0
    assert not (tmp_path / "out").exists()


def test_rerun_reuses_finished_videos(first_run, tmp_path):
    pipe, folder, first = first_run
    shutil.copytree(folder, tmp_path, dirs_exist_ok=True)
    counter = CallCounter(pipe.transformer)
    try:
        second = _generate(pipe, PROMPTS, tmp_path, metadata={"model": "tiny"}, resume=True)
        assert counter.calls == 0
        assert second["videos"] == first["videos"]

        (tmp_path / first["videos"][1]["mp4"]).unlink()
        _generate(pipe, PROMPTS, tmp_path, metadata={"model": "tiny"}, resume=True)
        assert counter.calls == 2  # only the video whose file was missing: 2 steps without guidance

        _generate(pipe, PROMPTS[:1], tmp_path, metadata={"model": "tiny"}, seed=1, resume=True)
        assert counter.calls == 4  # other settings: the video is generated again

        _generate(pipe, PROMPTS[:1], tmp_path, metadata={"model": "tiny"}, seed=1)
        assert counter.calls == 6  # without resume every video is generated
    finally:
        counter.handle.remove()


def test_guidance_calls_transformer_twice_per_step(wan_pipeline, tmp_path):
    counter = CallCounter(wan_pipeline.transformer)
    wan_pipeline.set_progress_bar_config(desc="mine")
    report = _generate(wan_pipeline, ["a red ball"], tmp_path, guidance=4.0, negative_prompt="blurry", frames=1)
    assert counter.calls == 4
    assert report["settings"]["negative_prompt"] == "blurry"
    assert report["settings"]["guidance"] == 4.0
    # the pipeline's own bar is hidden during the run and its setting restored afterwards
    assert wan_pipeline._progress_bar_config == {"desc": "mine"}


@pytest.mark.parametrize(
    ("prompts", "overrides", "match"),
    [
        ([], {}, "prompts must be a non-empty list"),
        (["ok", "  "], {}, "non-blank strings"),
        (["ok"], {"steps": 0}, "steps must be an int >= 1, got 0"),
        (["ok"], {"guidance": -1.0}, "guidance must be a number >= 0"),
        (["ok"], {"fps": 0}, "fps must be > 0"),
        (["ok"], {"seed": -3}, "seed must be an int >= 0, got -3"),
        (["ok"], {"gif_max_side": 0}, r"gif_max_side must be None \(full size\) or an int >= 1, got 0"),
    ],
)
def test_bad_arguments_rejected(wan_pipeline, tmp_path, prompts, overrides, match):
    with pytest.raises(ValueError, match=match):
        _generate(wan_pipeline, prompts, tmp_path, **overrides)


@pytest.mark.gpu
def test_cuda_video_matches_cpu(first_run, tmp_path):
    """The noise comes from a CPU generator, so the same seed gives the same video on CUDA (float32)."""
    from blade.evaluation import psnr

    pipe, folder, _ = first_run
    cuda_pipe = copy.deepcopy(pipe).to("cuda")
    _generate(cuda_pipe, PROMPTS[:1], tmp_path)
    cpu_video = _gif_frames(folder / "0000_a-red-ball.gif")
    cuda_video = _gif_frames(tmp_path / "0000_a-red-ball.gif")
    assert cuda_video.shape == cpu_video.shape
    assert psnr(cpu_video, cuda_video) > 30
