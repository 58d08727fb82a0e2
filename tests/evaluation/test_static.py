"""Static block masks patched into a transformer: exact at sparsity 0, the requested budget otherwise."""

import math

import pytest
import torch

from blade import BladeConfig, record_masks, remove_blade
from blade.evaluation import apply_static_mask


def _inputs(transformer, generator):
    # latents [B, C, F, H, W] = [2, 4, 3, 6, 10]: a 3 x 3 x 5 token grid, 45 tokens, blocks of 8 (last ragged)
    hidden = torch.randn(2, 4, 3, 6, 10, generator=generator)
    text = torch.randn(2, 16, transformer.config.text_dim, generator=generator)
    return dict(hidden_states=hidden, timestep=torch.tensor([500.0, 500.0]), encoder_hidden_states=text,
                return_dict=False)


@pytest.mark.parametrize("strategy", ["sliding_tile", "radial"])
def test_sparsity_zero_reproduces_the_unpatched_model(wan_pipeline, strategy):
    transformer = wan_pipeline.transformer
    inputs = _inputs(transformer, torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = transformer(**inputs)[0]
        apply_static_mask(transformer, strategy, 0.0, BladeConfig(block_size=8, samples_per_block=4, backend="torch"))
        patched = transformer(**inputs)[0]
        remove_blade(transformer)
        restored = transformer(**inputs)[0]
    torch.testing.assert_close(patched, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(restored, expected, rtol=0, atol=0)


def test_recorded_sparsity_is_the_kept_block_budget(wan_pipeline):
    transformer = wan_pipeline.transformer
    inputs = _inputs(transformer, torch.Generator().manual_seed(1))
    apply_static_mask(transformer, "radial", 0.6, BladeConfig(block_size=8, samples_per_block=4, backend="torch"))
    with torch.no_grad(), record_masks(transformer, heads=[]) as recording:
        transformer(**inputs)
    num_blocks = math.ceil(45 / 8)
    kept = max(1, math.floor(num_blocks * (1 - 0.6)))
    assert len(recording.calls) == transformer.config.num_layers
    for call in recording.calls:
        torch.testing.assert_close(call.sparsity, torch.full((2, 2), 1 - kept / num_blocks))


def test_bad_strategy_and_sparsity(wan_pipeline):
    with pytest.raises(ValueError, match="strategy must be one of .*got 'sta'"):
        apply_static_mask(wan_pipeline.transformer, "sta", 0.5)
    with pytest.raises(ValueError, match=r"sparsity must be a float in \[0, 1\), got 1.0"):
        apply_static_mask(wan_pipeline.transformer, "radial", 1.0)
