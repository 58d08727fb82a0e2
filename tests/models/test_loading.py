import json

import diffusers
import pytest
import torch

from blade.models import load_pipeline, pipeline_family, tiny_wan_pipeline


def test_load_pipeline_detects_family(tiny_pipeline_dirs):
    wan = load_pipeline(tiny_pipeline_dirs["wan"])
    cogvideox = load_pipeline(tiny_pipeline_dirs["cogvideox"])
    assert isinstance(wan, diffusers.WanPipeline)
    assert isinstance(cogvideox, diffusers.CogVideoXPipeline)
    assert pipeline_family(tiny_pipeline_dirs["wan"]) == "wan"
    assert pipeline_family(tiny_pipeline_dirs["cogvideox"]) == "cogvideox"


def test_load_pipeline_weights_match_builder(tiny_pipeline_dirs):
    """The saved-and-loaded transformer is the seeded one the builder makes, weight for weight."""
    loaded = load_pipeline(tiny_pipeline_dirs["wan"]).transformer.state_dict()
    built = tiny_wan_pipeline(seed=0).transformer.state_dict()
    assert loaded.keys() == built.keys()
    for name, value in built.items():
        assert torch.equal(loaded[name], value), name


def test_tiny_builder_seed_changes_weights():
    first = tiny_wan_pipeline(seed=0).transformer.proj_out.weight
    second = tiny_wan_pipeline(seed=1).transformer.proj_out.weight
    assert not torch.equal(first, second)


def test_load_pipeline_dtype(tiny_pipeline_dirs):
    pipe = load_pipeline(tiny_pipeline_dirs["cogvideox"], dtype="bfloat16", device="cpu")
    assert pipe.transformer.dtype == torch.bfloat16
    assert pipe.transformer.device.type == "cpu"


def test_load_pipeline_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pipeline(tmp_path / "absent")


def test_load_pipeline_folder_without_index(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model_index.json"):
        load_pipeline(tmp_path)


def test_load_pipeline_unsupported_class(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(ValueError, match="'StableDiffusionPipeline'.*supported classes are"):
        load_pipeline(tmp_path)


def test_load_pipeline_invalid_json(tmp_path):
    (tmp_path / "model_index.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_pipeline(tmp_path)


def test_load_pipeline_bad_dtype(tiny_pipeline_dirs):
    with pytest.raises(TypeError, match="dtype must be None, a torch.dtype"):
        load_pipeline(tiny_pipeline_dirs["wan"], dtype="half-ish")
