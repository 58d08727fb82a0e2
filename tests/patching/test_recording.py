import json

import pytest
import torch

from blade import apply_blade, load_recording, record_masks
from blade.models import tiny_transformer_inputs
from tests.patching.helpers import preset, run


def test_recording_round_trips_through_disk(wan_pipeline, tmp_path):
    transformer = wan_pipeline.transformer
    apply_blade(transformer, preset("wan", dense_layers=(1,)), schedule=[999.0, 500.0])
    with record_masks(transformer) as recording:
        run(transformer, tiny_transformer_inputs(wan_pipeline, timestep=500.0))
    folder = recording.to_disk(tmp_path / "masks")

    assert sorted(path.name for path in folder.iterdir()) == ["masks.safetensors", "recording.json"]
    loaded = load_recording(folder)
    assert len(loaded.calls) == len(recording.calls) == 2
    for original, restored in zip(recording.calls, loaded.calls):
        assert (restored.layer, restored.step, restored.forward_index, restored.dense) == (
            original.layer,
            original.step,
            original.forward_index,
            original.dense,
        )
        assert torch.equal(restored.sparsity, original.sparsity)
        assert torch.equal(restored.kept_fraction, original.kept_fraction)
        if original.block_mask is None:
            assert restored.block_mask is None
        else:
            assert restored.block_mask.dtype == torch.bool
            assert torch.equal(restored.block_mask, original.block_mask)
            assert torch.equal(restored.block_scores, original.block_scores)
    assert loaded.metadata["family"] == "wan"
    assert loaded.metadata["config"]["dense_layers"] == [1]
    assert loaded.sparsity_by_layer() == recording.sparsity_by_layer()
    assert recording.sparsity_by_layer()[1] == 0.0
    assert json.loads((folder / "recording.json").read_text())["format_version"] == 1


def test_recording_selects_layers_heads_steps(wan_pipeline):
    transformer = wan_pipeline.transformer
    apply_blade(transformer, preset("wan"), schedule=[999.0, 500.0])
    with record_masks(transformer, layers=[1], heads=[1], steps=[1]) as recording:
        run(transformer, tiny_transformer_inputs(wan_pipeline, timestep=999.0))
        run(transformer, tiny_transformer_inputs(wan_pipeline, batch_size=2, timestep=500.0))
    assert [(call.layer, call.step) for call in recording.calls] == [(1, 1)]
    assert recording.calls[0].block_mask.shape[:2] == (2, 1)
    assert recording.calls[0].block_scores.dtype == torch.float32


def test_selected_head_matches_full_recording(wan_pipeline):
    transformer = wan_pipeline.transformer
    inputs = tiny_transformer_inputs(wan_pipeline)
    apply_blade(transformer, preset("wan"))
    with record_masks(transformer) as full:
        run(transformer, inputs)
    with record_masks(transformer, heads=[1]) as selected:
        run(transformer, inputs)
    for full_call, selected_call in zip(full.calls, selected.calls):
        assert torch.equal(selected_call.block_mask, full_call.block_mask[:, 1:2])
        assert torch.equal(selected_call.block_scores, full_call.block_scores[:, 1:2])


def test_recording_respects_byte_budget(wan_pipeline, caplog):
    transformer = wan_pipeline.transformer
    apply_blade(transformer, preset("wan"))
    inputs = tiny_transformer_inputs(wan_pipeline)
    with record_masks(transformer) as unbounded:
        run(transformer, inputs)
    one_call = unbounded.calls[0].block_mask.numel() * 5  # bool mask + float32 scores
    with record_masks(transformer, max_bytes=one_call) as bounded:
        run(transformer, inputs)
    assert bounded.calls[0].block_mask is not None
    assert bounded.calls[1].block_mask is None
    assert torch.equal(bounded.calls[1].sparsity, unbounded.calls[1].sparsity)
    assert "max_bytes" in caplog.text


def test_recording_stops_after_block(wan_pipeline):
    transformer = wan_pipeline.transformer
    apply_blade(transformer, preset("wan"))
    with record_masks(transformer) as recording:
        run(transformer, tiny_transformer_inputs(wan_pipeline))
    run(transformer, tiny_transformer_inputs(wan_pipeline))
    assert len(recording.calls) == 2


def test_record_masks_input_errors(wan_pipeline, tmp_path):
    transformer = wan_pipeline.transformer
    with pytest.raises(ValueError, match="needs a transformer patched with blade.apply_blade"):
        with record_masks(transformer):
            pass
    apply_blade(transformer, preset("wan"))
    with pytest.raises(ValueError, match="steps=... needs the step index"):
        with record_masks(transformer, steps=[0]):
            pass
    with pytest.raises(ValueError, match=r"heads must be integers in \[0, 2\), got invalid entries \[2\]"):
        with record_masks(transformer, heads=[2]):
            pass
    with pytest.raises(ValueError, match="already active"):
        with record_masks(transformer):
            with record_masks(transformer):
                pass
    with pytest.raises(FileNotFoundError, match="is not a mask recording"):
        load_recording(tmp_path)
