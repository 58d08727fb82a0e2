"""BladeConfig presets and validation."""

import pytest

from blade import BladeConfig


def test_presets_carry_the_authors_settings():
    wan, cogvideox, dense = BladeConfig.wan(), BladeConfig.cogvideox(), BladeConfig.dense()
    assert (wan.min_ratio, wan.max_ratio, wan.pool_group) == (0.05, 0.17, 30)
    assert (cogvideox.min_ratio, cogvideox.max_ratio, cogvideox.pool_group) == (0.05, 0.10, 15)
    assert (dense.min_ratio, dense.max_ratio, dense.pool_group) == (1.0, 1.0, 0)
    assert BladeConfig.wan(seed=7).seed == 7


def test_dict_round_trip():
    config = BladeConfig.wan(dense_layers=(0, 3), dense_steps=2)
    assert BladeConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("backend", "torhc", "backend must be one of .*got 'torhc'"),
        ("block_size", 0, "block_size must be a positive int, got 0"),
        ("samples_per_block", 200, r"samples_per_block must be in \[1, block_size=128\], got 200"),
        ("pooling", "mean", "pooling must be one of .*got 'mean'"),
        ("selection", "random", "selection must be one of .*got 'random'"),
        ("threshold", 1.5, r"threshold must be in \(0, 1\], got 1.5"),
        ("max_ratio", 0.01, "min_ratio <= max_ratio"),
        ("pool_group", -1, "pool_group must be an int >= 0"),
        ("pool_group", True, "pool_group must be an int >= 0"),
        ("merge_grad", "no", "merge_grad must be True or False, got 'no'"),
        ("dense_steps", -1, "dense_steps must be an int >= 0, got -1"),
        ("dense_layers", (-1,), r"dense_layers must be block indices >= 0, got \[-1\]"),
        ("seed", "a", "seed must be an int, got 'a'"),
    ],
)
def test_invalid_field_is_named(field, value, message):
    with pytest.raises(ValueError, match=message):
        BladeConfig(**{field: value})


def test_unknown_field_in_dict_is_named():
    with pytest.raises(ValueError, match=r"unknown BladeConfig fields \['blocksize'\]"):
        BladeConfig.from_dict({"blocksize": 64})
