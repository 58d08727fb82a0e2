import torch
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict

from blade import apply_blade
from blade.models import load_pipeline, tiny_transformer_inputs
from tests.patching.helpers import PROCESSOR_CLASSES, attention_modules, dense_config, preset, run


def _add_random_lora(transformer, seed=0):
    # init_lora_weights=False draws lora_B at random too, so the adapter changes the output at once.
    config = LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer.add_adapter(config)


def _processors_are_ours(transformer, family):
    return all(isinstance(attn.processor, PROCESSOR_CLASSES[family]) for attn in attention_modules(transformer))


def test_lora_added_after_patching_takes_effect(tiny_pipeline, model_family):
    transformer = tiny_pipeline.transformer
    inputs = tiny_transformer_inputs(tiny_pipeline)
    apply_blade(transformer, preset(model_family))
    without_lora = run(transformer, inputs)

    _add_random_lora(transformer)
    with_lora = run(transformer, inputs)

    assert _processors_are_ours(transformer, model_family)
    assert not torch.allclose(with_lora, without_lora, atol=1e-4)
    transformer.disable_adapters()
    assert torch.equal(run(transformer, inputs), without_lora)


def test_lora_added_before_patching_matches_unpatched(tiny_pipeline, model_family):
    """With a dense-equivalent config, a LoRA model patched afterwards equals the unpatched LoRA model,
    so the patched processor runs the LoRA-wrapped projections."""
    transformer = tiny_pipeline.transformer
    inputs = tiny_transformer_inputs(tiny_pipeline)
    _add_random_lora(transformer)
    expected = run(transformer, inputs)

    apply_blade(transformer, dense_config())
    assert _processors_are_ours(transformer, model_family)
    torch.testing.assert_close(run(transformer, inputs), expected, rtol=0, atol=1e-5)


def test_lora_round_trip_through_load_lora_weights(tiny_pipeline, model_family, tiny_pipeline_dirs, tmp_path):
    # train side: a patched transformer with an adapter, saved in the diffusers LoRA format
    source = tiny_pipeline.transformer
    apply_blade(source, preset(model_family))
    _add_random_lora(source)
    inputs = tiny_transformer_inputs(tiny_pipeline)
    source_output = run(source, inputs)
    lora_state = get_peft_model_state_dict(source)
    type(tiny_pipeline).save_lora_weights(tmp_path, transformer_lora_layers=lora_state)

    # use side: a freshly loaded and patched pipeline
    pipeline = load_pipeline(tiny_pipeline_dirs[model_family])
    apply_blade(pipeline.transformer, preset(model_family))
    before = run(pipeline.transformer, inputs)
    pipeline.load_lora_weights(tmp_path)
    after = run(pipeline.transformer, inputs)

    (adapter_name,) = pipeline.transformer.peft_config
    loaded_state = get_peft_model_state_dict(pipeline.transformer, adapter_name=adapter_name)
    matched = [key for key in lora_state if key in loaded_state and torch.equal(loaded_state[key], lora_state[key])]
    assert len(lora_state) > 0
    assert len(matched) == len(lora_state)
    assert _processors_are_ours(pipeline.transformer, model_family)
    assert not torch.allclose(after, before, atol=1e-4)
    torch.testing.assert_close(after, source_output, rtol=0, atol=1e-5)

    pipeline.unload_lora_weights()
    assert _processors_are_ours(pipeline.transformer, model_family)
    torch.testing.assert_close(run(pipeline.transformer, inputs), before, rtol=0, atol=1e-6)
