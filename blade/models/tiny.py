"""Tiny seeded Wan and CogVideoX pipelines built from configs, for tests, notebooks and the toy world.

Every part is a real diffusers or transformers class with a small config and randomly initialised
weights, so nothing is downloaded: `ByT5Tokenizer` needs no vocabulary file, and the text encoders
use its 384-entry byte vocabulary. Both pipelines decode 8x spatially and 4x temporally, like the
released models, and use a 2-layer, 2-head transformer.
"""

from __future__ import annotations

import torch

# ByT5's 256 byte values, 3 special tokens and 125 extra ids.
_BYT5_VOCAB_SIZE = 384
_TEXT_DIM = 32
# One-layer encoder settings shared by the UMT5 (Wan) and T5 (CogVideoX) configs.
_TEXT_ENCODER_CONFIG = {
    "vocab_size": _BYT5_VOCAB_SIZE,
    "d_model": _TEXT_DIM,
    "d_ff": 64,
    "num_layers": 1,
    "num_heads": 2,
    "d_kv": 16,
    "relative_attention_num_buckets": 8,
}


def _tiny_tokenizer():
    from transformers import ByT5Tokenizer

    return ByT5Tokenizer()


def tiny_wan_pipeline(seed: int = 0, *, num_layers: int = 2, num_heads: int = 2, head_dim: int = 32):
    """Build a `WanPipeline` with a tiny transformer, VAE and UMT5 text encoder.

    Args:
        seed: seed of the weight initialisation. The global torch RNG state is restored afterwards.
        num_layers: transformer blocks.
        num_heads: attention heads per block.
        head_dim: channels per head. Wan's rotary embedding gives h and w 2 * (head_dim // 6)
            channels each and t the rest, so 32 splits as 12, 10, 10.

    Returns:
        A float32 `diffusers.WanPipeline` on the CPU with a 4-channel latent space, patch (1, 2, 2)
        and `FlowMatchEulerDiscreteScheduler(shift=3)`.
    """
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    latent_channels = 4
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = UMT5EncoderModel(UMT5Config(**_TEXT_ENCODER_CONFIG))
        vae = AutoencoderKLWan(
            base_dim=8,
            z_dim=latent_channels,
            dim_mult=[1, 1, 1, 1],
            num_res_blocks=1,
            latents_mean=[0.0] * latent_channels,
            latents_std=[1.0] * latent_channels,
        )
        transformer = WanTransformer3DModel(
            patch_size=(1, 2, 2),
            num_attention_heads=num_heads,
            attention_head_dim=head_dim,
            in_channels=latent_channels,
            out_channels=latent_channels,
            text_dim=_TEXT_DIM,
            freq_dim=32,
            ffn_dim=64,
            num_layers=num_layers,
            rope_max_seq_len=256,
        )
    return WanPipeline(
        tokenizer=_tiny_tokenizer(),
        text_encoder=text_encoder.eval(),
        vae=vae.eval(),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        transformer=transformer.eval(),
    )


def tiny_cogvideox_pipeline(seed: int = 0, *, num_layers: int = 2, num_heads: int = 2, head_dim: int = 32):
    """Build a `CogVideoXPipeline` with a tiny transformer (3D rotary embeddings), VAE and T5 encoder.

    Args:
        seed: seed of the weight initialisation. The global torch RNG state is restored afterwards.
        num_layers: transformer blocks.
        num_heads: attention heads per block.
        head_dim: channels per head (the 3D rotary embedding splits it over t, h, w).

    Returns:
        A float32 `diffusers.CogVideoXPipeline` on the CPU with a 4-channel latent space, patch 2 and
        `CogVideoXDDIMScheduler` (v-prediction). Call it with a small `max_sequence_length` (the
        default pads every prompt to 226 tokens).
    """
    from diffusers import (
        AutoencoderKLCogVideoX,
        CogVideoXDDIMScheduler,
        CogVideoXPipeline,
        CogVideoXTransformer3DModel,
    )
    from transformers import T5Config, T5EncoderModel

    latent_channels = 4
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = T5EncoderModel(T5Config(**_TEXT_ENCODER_CONFIG))
        vae = AutoencoderKLCogVideoX(
            block_out_channels=(8, 8, 8, 8),
            latent_channels=latent_channels,
            layers_per_block=1,
            norm_num_groups=4,
            sample_height=64,
            sample_width=64,
        )
        transformer = CogVideoXTransformer3DModel(
            num_attention_heads=num_heads,
            attention_head_dim=head_dim,
            in_channels=latent_channels,
            out_channels=latent_channels,
            time_embed_dim=32,
            text_embed_dim=_TEXT_DIM,
            num_layers=num_layers,
            sample_width=8,
            sample_height=8,
            sample_frames=9,
            patch_size=2,
            max_text_seq_length=16,
            use_rotary_positional_embeddings=True,
        )
    return CogVideoXPipeline(
        tokenizer=_tiny_tokenizer(),
        text_encoder=text_encoder.eval(),
        vae=vae.eval(),
        transformer=transformer.eval(),
        scheduler=CogVideoXDDIMScheduler(),
    )


def tiny_transformer_inputs(
    pipeline,
    *,
    batch_size: int = 1,
    latent_frames: int = 5,
    latent_height: int = 14,
    latent_width: int = 18,
    text_tokens: int = 16,
    timestep: float = 500.0,
    seed: int = 0,
) -> dict:
    """Build seeded keyword arguments for one call of a tiny pipeline's transformer.

    Args:
        pipeline: a WanPipeline or CogVideoXPipeline (e.g. from `tiny_wan_pipeline`).
        batch_size: B.
        latent_frames, latent_height, latent_width: latent video size (before patching).
        text_tokens: length of the random text embedding.
        timestep: the timestep of every batch element.
        seed: seed of the random latents and text embedding (a local generator).

    Returns:
        Keyword arguments for `pipeline.transformer(**inputs)`, with `return_dict=False`. Wan latents
        are [B, C, F, H, W]; CogVideoX latents are [B, F, C, H, W] and come with the 3D rotary
        embedding the CogVideoX pipeline would compute for that size.
    """
    transformer = pipeline.transformer
    generator = torch.Generator().manual_seed(seed)
    channels = transformer.config.in_channels
    text_dim = transformer.config.text_dim if hasattr(transformer.config, "text_dim") else transformer.config.text_embed_dim
    is_cogvideox = type(transformer).__name__ == "CogVideoXTransformer3DModel"
    if is_cogvideox:
        latent_shape = (batch_size, latent_frames, channels, latent_height, latent_width)
    else:
        latent_shape = (batch_size, channels, latent_frames, latent_height, latent_width)
    inputs = {
        "hidden_states": torch.randn(latent_shape, generator=generator),
        "encoder_hidden_states": torch.randn((batch_size, text_tokens, text_dim), generator=generator),
        "timestep": torch.full((batch_size,), float(timestep)),
        "return_dict": False,
    }
    if is_cogvideox and transformer.config.use_rotary_positional_embeddings:
        spatial = pipeline.vae_scale_factor_spatial
        inputs["image_rotary_emb"] = pipeline._prepare_rotary_positional_embeddings(
            latent_height * spatial, latent_width * spatial, latent_frames, torch.device("cpu")
        )
    return inputs
