"""Distillation configs: the shipped examples parse, bad settings are named."""

from pathlib import Path

import pytest

from blade.distill import DistillConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "distill"


@pytest.mark.parametrize("name", ["wan.yaml", "cogvideox.yaml", "toy.yaml"])
def test_example_configs_parse_and_round_trip(name):
    config = DistillConfig.from_file(CONFIGS / name)
    assert DistillConfig.from_dict(config.to_dict()) == config
    assert config.num_steps == 8 and config.adam_betas == (0.0, 0.95)


def test_authors_settings_per_model():
    wan, cog = DistillConfig.from_file(CONFIGS / "wan.yaml"), DistillConfig.from_file(CONFIGS / "cogvideox.yaml")
    assert (wan.guidance_scale, wan.lambda_reg, wan.blade_config().max_ratio) == (5.0, 0.0, 0.17)
    assert (cog.guidance_scale, cog.lambda_reg, cog.blade_config().max_ratio) == (6.0, 0.5, 0.10)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"num_step": 8}, r"unknown distillation settings \['num_step'\]"),
        ({"mixed_precision": "fp16"}, "mixed_precision must be one of"),
        ({"latent_shape": [4, 3, 6]}, r"latent_shape must be four positive sizes"),
        ({"eta": 1.5}, r"eta must lie in \[0, 1\]"),
        ({"blade": "sparse"}, "blade must be a preset"),
        ({"batch_size": 0}, "batch_size must be a positive int"),
    ],
)
def test_bad_settings_are_named(settings, message):
    with pytest.raises(ValueError, match=message):
        DistillConfig.from_dict(settings)


def test_unknown_file_type(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("")
    with pytest.raises(ValueError, match=r"must end in .yaml, .yml or .json"):
        DistillConfig.from_file(path)
