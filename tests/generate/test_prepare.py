import json
import os

import pytest
import torch
import yaml

from blade.config import BladeConfig
from blade.generate import blade_config_from_option, prepare_pipeline
from blade.generate.prepare import stat_fingerprint
from blade.patching import BladeCogVideoXAttnProcessor, BladeWanAttnProcessor

PROCESSORS = {"wan": BladeWanAttnProcessor, "cogvideox": BladeCogVideoXAttnProcessor}


@pytest.mark.parametrize("name", ["wan", "cogvideox", "dense"])
def test_presets(name):
    assert blade_config_from_option(name) == getattr(BladeConfig, name)()


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_config_files(tmp_path, suffix):
    fields = {"block_size": 16, "samples_per_block": 4, "max_ratio": 0.3, "dense_layers": [1]}
    path = tmp_path / f"asa{suffix}"
    path.write_text(json.dumps(fields) if suffix == ".json" else yaml.safe_dump(fields))
    assert blade_config_from_option(str(path)) == BladeConfig(**fields)


def test_config_instance_passes_through():
    config = BladeConfig.wan(block_size=64)
    assert blade_config_from_option(config) is config


@pytest.mark.parametrize(
    ("name", "text", "error", "match"),
    [
        ("asa.yaml", "block_size: 16\nwindow: 3\n", ValueError, r"unknown BladeConfig fields \['window'\]"),
        ("asa.yaml", "- 1\n- 2\n", ValueError, "must contain a mapping of BladeConfig fields, got list"),
        ("asa.json", '{"threshold": 2.0}', ValueError, r"threshold must be in \(0, 1\]"),
        ("asa.toml", "block_size = 16", ValueError, r"must end in .yaml, .yml or .json, got '.toml'"),
    ],
)
def test_bad_config_files(tmp_path, name, text, error, match):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(error, match=match):
        blade_config_from_option(str(path))


def test_unknown_preset_names_the_choices():
    with pytest.raises(FileNotFoundError, match=r"'wan21' is neither a preset \(wan, cogvideox, dense\)"):
        blade_config_from_option("wan21")


def test_prepare_pipeline_applies_blade(tiny_pipeline_dirs, model_family):
    pipe, details = prepare_pipeline(tiny_pipeline_dirs[model_family], blade="dense", device="cpu")
    blocks = pipe.transformer.blocks if model_family == "wan" else pipe.transformer.transformer_blocks
    assert all(isinstance(block.attn1.processor, PROCESSORS[model_family]) for block in blocks)
    assert details == {
        "device": "cpu",
        "dtype": "float32",
        "vae_dtype": "float32",
        "family": model_family,
        "model_fingerprint": stat_fingerprint(tiny_pipeline_dirs[model_family]),
        "lora": None,
        "blade": BladeConfig.dense().to_dict(),
    }


def test_prepare_pipeline_checks_config_before_loading(tmp_path, monkeypatch):
    import blade.models

    def fail(*args, **kwargs):
        raise AssertionError("the pipeline must not be loaded")

    monkeypatch.setattr(blade.models, "load_pipeline", fail)
    with pytest.raises(FileNotFoundError, match="neither a preset"):
        prepare_pipeline(tmp_path, blade="no-such-preset")


def test_stat_fingerprint_tracks_file_changes(tmp_path):
    (tmp_path / "sub").mkdir()
    weights = tmp_path / "sub" / "weights.safetensors"
    weights.write_bytes(b"1234")
    first = stat_fingerprint(tmp_path)
    assert stat_fingerprint(tmp_path) == first

    status = weights.stat()
    os.utime(weights, ns=(status.st_atime_ns, status.st_mtime_ns + 1_000_000))
    touched = stat_fingerprint(tmp_path)
    assert touched != first

    (tmp_path / "extra.json").write_text("{}")
    assert stat_fingerprint(tmp_path) != touched
    assert stat_fingerprint(weights) != stat_fingerprint(tmp_path)


def test_vae_dtype_defaults(tiny_pipeline_dirs):
    # Wan keeps its VAE in float32 below a bfloat16 transformer; CogVideoX follows --dtype
    wan, wan_details = prepare_pipeline(tiny_pipeline_dirs["wan"], device="cpu", dtype="bfloat16")
    assert wan.transformer.dtype == torch.bfloat16
    assert wan.vae.dtype == torch.float32
    assert wan_details["vae_dtype"] == "float32"
    cog, cog_details = prepare_pipeline(tiny_pipeline_dirs["cogvideox"], device="cpu", dtype="bfloat16")
    assert cog.vae.dtype == torch.bfloat16
    assert cog_details["vae_dtype"] == "bfloat16"
    half, _ = prepare_pipeline(tiny_pipeline_dirs["wan"], device="cpu", dtype="bfloat16", vae_dtype="bfloat16")
    assert half.vae.dtype == torch.bfloat16
