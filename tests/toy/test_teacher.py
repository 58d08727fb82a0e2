import dataclasses

import pytest
import torch
from diffusers import WanPipeline
from torch.utils.flop_counter import FlopCounterMode

from blade.prompts.encoder import PromptEncoder
from blade.toy.teacher import (
    ToyTeacherConfig,
    TrainStage,
    attention_flop_share,
    build_pipeline,
    load_config,
    save_pipeline,
    toy_word_tokenizer,
    video_tokens,
)


def test_default_sizes_match_readme():
    config = ToyTeacherConfig()
    tokens = video_tokens(config, config.num_frames, config.height, config.width)
    assert tokens == 17 * 16 * 16
    assert 0.6 <= attention_flop_share(config, tokens) <= 0.8


def test_flop_share_against_counted_linear_flops():
    """The formula's linear-layer flops agree with torch's flop counter on the real transformer.

    The counter does not see the fused CPU attention kernel, so attention flops stay analytic
    (4 L d per token and block for self-attention, 4 text_len d for cross-attention)."""
    config = ToyTeacherConfig()
    transformer = build_pipeline(config).transformer
    latent_frames, latent_height, latent_width = 9, 16, 16
    tokens = latent_frames * latent_height * latent_width // 4
    latents = torch.randn(1, config.latent_channels, latent_frames, latent_height, latent_width)
    text = torch.randn(1, config.text_len, config.text_dim)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        transformer(latents, torch.tensor([500.0]), text)
    counts = counter.get_flop_counts()["Global"]
    linear = sum(v for op, v in counts.items() if "mm" in str(op))  # addmm, mm and bmm of linear layers
    d, layers = config.hidden_size, config.num_layers
    self_attention = 4 * tokens * d * tokens * layers
    cross_attention = 4 * config.text_len * d * tokens * layers
    counted_share = self_attention / (self_attention + cross_attention + linear)
    assert attention_flop_share(config, tokens) == pytest.approx(counted_share, rel=0.02)


@pytest.mark.parametrize("tokenizer", ["byte", "word"])
def test_pipeline_round_trip(tmp_path, tokenizer):
    config = dataclasses.replace(ToyTeacherConfig(), num_layers=1, tokenizer=tokenizer)
    pipeline = build_pipeline(config)
    save_pipeline(pipeline, config, tmp_path / "toy-wan")
    save_pipeline(pipeline, config, tmp_path / "toy-wan")  # replacing an existing folder works
    loaded = WanPipeline.from_pretrained(tmp_path / "toy-wan")
    assert load_config(tmp_path / "toy-wan") == config
    size = sum(p.stat().st_size for p in (tmp_path / "toy-wan").rglob("*") if p.is_file())
    assert size < 25 * 2**20
    kwargs = dict(prompt="a red circle moving left", num_frames=5, height=16, width=32, num_inference_steps=2,
                  max_sequence_length=config.text_len, output_type="np")
    a = pipeline(**kwargs, generator=torch.Generator().manual_seed(0)).frames
    b = loaded(**kwargs, generator=torch.Generator().manual_seed(0)).frames
    assert a.shape == (1, 5, 16, 32, 3)
    assert (a == b).all()
    assert type(loaded.tokenizer) is type(pipeline.tokenizer)


def test_word_tokenizer_ids():
    tokenizer = toy_word_tokenizer(64)
    ids = tokenizer("a red circle moving left")["input_ids"]
    assert len(ids) == 6
    assert ids[-1] == tokenizer.eos_token_id == 1
    assert len(set(ids)) == 6
    assert tokenizer.unk_token_id not in ids
    assert tokenizer("A  RED Circle moving LEFT")["input_ids"] == ids
    assert tokenizer("a red blob moving left")["input_ids"][2] == tokenizer.unk_token_id == 2
    assert tokenizer.pad_token_id == 0
    assert tokenizer.model_max_length == 64


def test_word_tokens_distinguish_every_attribute():
    from blade.toy.prompts import all_prompts

    tokenizer = toy_word_tokenizer(64)
    encoded = {tuple(tokenizer(p.text)["input_ids"]) for p in all_prompts()}
    assert len(encoded) == len(all_prompts())
    assert max(max(ids) for ids in encoded) < 384  # fits the encoder's embedding table


def test_tokenizer_choice_keeps_initial_weights():
    config = dataclasses.replace(ToyTeacherConfig(), num_layers=1)
    byte = build_pipeline(dataclasses.replace(config, tokenizer="byte"))
    word = build_pipeline(dataclasses.replace(config, tokenizer="word"))
    for name in ("transformer", "text_encoder", "vae"):
        word_state = getattr(word, name).state_dict()
        for key, value in getattr(byte, name).state_dict().items():
            assert torch.equal(value, word_state[key]), f"{name}.{key}"


def test_word_tokenizer_folder_embeds_with_zero_padding(tmp_path):
    config = dataclasses.replace(ToyTeacherConfig(), num_layers=1, tokenizer="word")
    save_pipeline(build_pipeline(config), config, tmp_path / "toy-wan")
    encoder = PromptEncoder(tmp_path / "toy-wan")
    embeddings, lengths, truncated = encoder.encode(["a red circle moving left", "a cyan cross moving up"])
    assert embeddings.shape == (2, config.text_len, config.text_dim)
    assert lengths.tolist() == [6, 6]
    assert not truncated.any()
    assert (embeddings[:, 6:] == 0).all()
    assert (embeddings[:, :6].abs().sum(dim=-1) > 0).all()
    assert not torch.equal(embeddings[0, :6], embeddings[1, :6])


def test_same_seed_same_weights():
    config = dataclasses.replace(ToyTeacherConfig(), num_layers=1)
    a, b = build_pipeline(config), build_pipeline(config)
    for key, value in a.transformer.state_dict().items():
        assert torch.equal(value, b.transformer.state_dict()[key]), key
    other = build_pipeline(dataclasses.replace(config, seed=1))
    assert not torch.equal(other.transformer.proj_out.weight, a.transformer.proj_out.weight)


def test_bad_config_raises():
    with pytest.raises(ValueError, match="num_frames must be 4 k"):
        ToyTeacherConfig(num_frames=16)
    with pytest.raises(ValueError, match="multiples of 16"):
        ToyTeacherConfig(height=40)
    with pytest.raises(ValueError, match="stage"):
        ToyTeacherConfig(stages=(TrainStage(num_frames=8, height=32, width=32, batch_size=1, steps=1),))
    with pytest.raises(ValueError, match="invalid tokenizer"):
        ToyTeacherConfig(tokenizer="bpe")
    with pytest.raises(ValueError, match="unknown ToyTeacherConfig fields"):
        ToyTeacherConfig.from_dict({"hidden": 3})
    with pytest.raises(FileNotFoundError, match="toy teacher folder"):
        load_config("/nonexistent")
