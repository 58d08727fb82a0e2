import json
import logging

import imageio_ffmpeg
import numpy as np
import pytest
import torch
import yaml
from diffusers import WanPipeline
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from PIL import Image, ImageSequence
from safetensors import safe_open
from safetensors.torch import save_file

import blade.models
from blade.cli import main
from blade.models import tiny_wan_pipeline


def _mp4_shape(path) -> tuple[int, int, int]:
    reader = imageio_ffmpeg.read_frames(str(path))
    width, height = next(reader)["size"]
    return sum(1 for _ in reader), height, width


def _gif_shape(path) -> tuple[int, ...]:
    with Image.open(path) as image:
        return np.stack([np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(image)]).shape


@pytest.fixture
def wan_lora_file(tmp_path):
    transformer = tiny_wan_pipeline(seed=0).transformer
    torch.manual_seed(1)
    transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_v"], init_lora_weights=False))
    WanPipeline.save_lora_weights(tmp_path / "lora", transformer_lora_layers=get_peft_model_state_dict(transformer))
    return tmp_path / "lora" / "pytorch_lora_weights.safetensors"


def test_generate_wan_with_lora_and_blade(tiny_pipeline_dirs, wan_lora_file, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red ball rolls\na blue cube\na red ball rolls\n")
    asa = tmp_path / "asa.yaml"
    # small blocks, so the tiny model's 4 x 2 x 8 = 64 tokens span several blocks
    asa.write_text(yaml.safe_dump({"block_size": 16, "samples_per_block": 4, "max_ratio": 0.5}))
    out = tmp_path / "out"

    code = main([
        "generate", "--model", str(tiny_pipeline_dirs["wan"]), "--prompts", str(prompts), "--out", str(out),
        "--steps", "2", "--guidance", "1", "--seed", "3", "--height", "16", "--width", "32", "--frames", "13",
        "--lora", str(wan_lora_file), "--blade", str(asa), "--no-progress",
    ])

    assert code == 0
    assert sorted(path.name for path in out.iterdir()) == [
        "0000_a-red-ball-rolls.gif", "0000_a-red-ball-rolls.mp4", "0001_a-blue-cube.gif", "0001_a-blue-cube.mp4",
        "generation.json",
    ]
    assert _mp4_shape(out / "0001_a-blue-cube.mp4") == (13, 16, 32)
    assert _gif_shape(out / "0001_a-blue-cube.gif") == (13, 16, 32, 3)
    report = json.loads((out / "generation.json").read_text())
    settings = report["settings"]
    assert settings["model"] == str(tiny_pipeline_dirs["wan"])
    assert settings["family"] == "wan"
    assert settings["seed"] == 3
    assert settings["blade"]["block_size"] == 16
    assert settings["blade"]["max_ratio"] == 0.5
    # to_q and to_v of self- and cross-attention in 2 blocks
    assert settings["lora"]["adapted_modules"] == 8
    assert settings["lora"]["path"] == str(wan_lora_file)
    assert [video["prompt"] for video in report["videos"]] == ["a red ball rolls", "a blue cube"]
    assert all(len(video["step_s"]) == 2 for video in report["videos"])


def test_generate_cogvideox_with_guidance_and_rerun(tiny_pipeline_dirs, tmp_path):
    out = tmp_path / "out"
    arguments = [
        "generate", "--model", str(tiny_pipeline_dirs["cogvideox"]), "--prompt", "a green cone", "--out", str(out),
        "--steps", "2", "--guidance", "3", "--negative", "blurry", "--height", "32", "--width", "16",
        "--frames", "9", "--no-progress",
    ]
    assert main(arguments) == 0
    assert _mp4_shape(out / "0000_a-green-cone.mp4") == (9, 32, 16)
    first = json.loads((out / "generation.json").read_text())
    assert first["settings"]["pipeline"] == "CogVideoXPipeline"
    assert first["settings"]["guidance"] == 3.0
    assert first["settings"]["fps"] == 8.0  # CogVideoX's frame rate

    # a rerun with the same settings keeps the video (same timings), --overwrite makes it again
    assert main(arguments) == 0
    assert json.loads((out / "generation.json").read_text())["videos"] == first["videos"]
    assert main([*arguments, "--overwrite"]) == 0
    assert json.loads((out / "generation.json").read_text())["videos"][0]["wall_s"] != first["videos"][0]["wall_s"]


def test_invalid_size_fails_before_loading(tiny_pipeline_dirs, tmp_path, monkeypatch, caplog):
    def fail(*args, **kwargs):
        raise AssertionError("the pipeline must not be loaded for an invalid size")

    monkeypatch.setattr(blade.models, "load_pipeline", fail)
    out = tmp_path / "out"
    with caplog.at_level(logging.ERROR):
        code = main([
            "generate", "--model", str(tiny_pipeline_dirs["wan"]), "--prompt", "a red ball", "--out", str(out),
            "--steps", "2", "--guidance", "1", "--height", "40", "--width", "32", "--frames", "8",
        ])
    assert code == 2
    assert "frames=8 is invalid: frames must be 4k + 1; nearest valid: 5 or 9" in caplog.text
    assert "height=40 is invalid" in caplog.text
    assert "nearest valid: 32 or 48" in caplog.text
    assert not out.exists()


def test_nan_weights_stop_at_first_step(tmp_path, caplog):
    pipe = tiny_wan_pipeline(seed=0)
    with torch.no_grad():
        pipe.transformer.proj_out.weight.fill_(float("inf"))
    pipe.save_pretrained(tmp_path / "broken")
    out = tmp_path / "out"
    with caplog.at_level(logging.ERROR):
        code = main([
            "generate", "--model", str(tmp_path / "broken"), "--prompt", "a red ball", "--out", str(out),
            "--steps", "2", "--guidance", "1", "--height", "16", "--width", "16", "--frames", "1", "--no-progress",
        ])
    assert code == 1
    assert "after denoising step 1 of 2" in caplog.text
    assert not list(out.glob("*.mp4"))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--blade", "wan21"], "is neither a preset (wan, cogvideox, dense)"),
        (["--lora", "missing.safetensors"], "not found"),
        (["--steps", "0"], "steps must be an int >= 1, got 0"),
        (["--seed", "-1"], "seed must be an int >= 0, got -1"),
        (["--fps", "0"], "fps must be > 0, got 0.0"),
    ],
)
def test_bad_options_exit_2(tiny_pipeline_dirs, tmp_path, caplog, monkeypatch, extra, message):
    def fail(*args, **kwargs):
        raise AssertionError("bad options must be rejected before the pipeline is loaded")

    monkeypatch.setattr(blade.models, "load_pipeline", fail)
    arguments = ["generate", "--model", str(tiny_pipeline_dirs["wan"]), "--prompt", "a red ball",
                 "--out", str(tmp_path / "out"), "--steps", "1", "--guidance", "1", "--height", "16", "--width", "16",
                 "--frames", "1", "--no-progress", *extra]
    with caplog.at_level(logging.ERROR):
        assert main(arguments) == 2
    assert message in caplog.text


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        ("base_model.model.", "matches none of the WanTransformer3DModel modules"),
        # module names without "transformer." match the model, but diffusers loads none of them
        ("", "added no adapter 'lora' to the transformer"),
    ],
    ids=["peft_save_pretrained", "no_prefix"],
)
def test_lora_matching_no_module_exits_2(tiny_pipeline_dirs, wan_lora_file, tmp_path, caplog, prefix, message):
    """diffusers only warns about such a file and then generates with the plain model."""
    with safe_open(str(wan_lora_file), framework="pt") as handle:
        state = {prefix + key.removeprefix("transformer."): handle.get_tensor(key) for key in handle.keys()}
    mismatched = tmp_path / "mismatched.safetensors"
    save_file(state, mismatched)
    out = tmp_path / "out"
    with caplog.at_level(logging.ERROR):
        code = main([
            "generate", "--model", str(tiny_pipeline_dirs["wan"]), "--prompt", "a red ball", "--out", str(out),
            "--steps", "1", "--guidance", "1", "--height", "16", "--width", "16", "--frames", "1",
            "--lora", str(mismatched), "--no-progress",
        ])
    assert code == 2
    assert message in caplog.text
    assert not out.exists()


def test_corrupt_lora_exits_2(tiny_pipeline_dirs, tmp_path, caplog):
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00" * 16)
    with caplog.at_level(logging.ERROR):
        code = main([
            "generate", "--model", str(tiny_pipeline_dirs["wan"]), "--prompt", "a red ball", "--out",
            str(tmp_path / "out"), "--steps", "1", "--guidance", "1", "--height", "16", "--width", "16",
            "--frames", "1", "--lora", str(corrupt), "--no-progress",
        ])
    assert code == 2
    assert "blade generate failed" in caplog.text


def test_prompt_source_required(tiny_pipeline_dirs, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--model", str(tiny_pipeline_dirs["wan"]), "--out", str(tmp_path), "--steps", "1",
              "--guidance", "1"])
    assert exit_info.value.code == 2
