"""ASA for diffusers' `CogVideoXTransformer3DModel`: the joint [text | video] self-attention.

Every block's `attn1` attends over the text tokens followed by the video tokens. ASA receives them
in that order with the text as its prefix, so the text is never split by the space-filling-curve
reordering and every query keeps access to it.
"""

from __future__ import annotations

import logging

import torch
from diffusers.models.embeddings import apply_rotary_emb

from blade.patching.common import BladeProcessorBase, BladeState, LatentGrid, install

logger = logging.getLogger(__name__)
_mask_warning_logged = False


def _warn_mask_once():
    global _mask_warning_logged
    if not _mask_warning_logged:
        logger.warning(
            "requested ASA on a CogVideoX attention call with an attention mask; ASA supports unmasked "
            "calls only, so masked calls run the original dense processor"
        )
        _mask_warning_logged = True


def cogvideox_joint_qkv(attn, hidden_states, encoder_hidden_states, image_rotary_emb):
    """Compute the post-norm, post-rotary q, k, v of a CogVideoX joint attention call.

    Follows `CogVideoXAttnProcessor2_0` (diffusers 0.42): the text tokens go first, the projections
    use the module's own linear layers (so peft LoRA layers take effect), and the rotary embedding
    touches the video tokens only.

    Args:
        attn: the `Attention` module of `transformer_blocks[i].attn1`.
        hidden_states: [B, L_video, C] video tokens in raster (t, h, w) order.
        encoder_hidden_states: [B, L_text, C] text tokens.
        image_rotary_emb: the video tokens' (cos, sin) rotary tables, or None.

    Returns:
        query, key, value, each [B, H, L_text + L_video, D], text first.
    """
    text_tokens = encoder_hidden_states.size(1)
    hidden_states = torch.cat([encoder_hidden_states, hidden_states], dim=1)  # [B, L_text + L_video, C]
    batch_size = hidden_states.shape[0]

    query = attn.to_q(hidden_states)
    key = attn.to_k(hidden_states)
    value = attn.to_v(hidden_states)
    head_dim = key.shape[-1] // attn.heads
    query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)  # [B, H, L, D]
    key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
    value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
    if attn.norm_q is not None:
        query = attn.norm_q(query)
    if attn.norm_k is not None:
        key = attn.norm_k(key)
    if image_rotary_emb is not None:
        # Rotary embedding on the video tokens only, as the original processor does.
        query[:, :, text_tokens:] = apply_rotary_emb(query[:, :, text_tokens:], image_rotary_emb)
        if not attn.is_cross_attention:
            key[:, :, text_tokens:] = apply_rotary_emb(key[:, :, text_tokens:], image_rotary_emb)
    return query, key, value


def cogvideox_latent_grid(transformer) -> LatentGrid:
    """Return the reader of a CogVideoX forward's token grid (latents [B, F, C, H, W], patch from the config)."""
    patch = transformer.config.patch_size
    # CogVideoX 1.5 also patches time (patch_size_t 2); 1.0 does not (None).
    patch_thw = (transformer.config.patch_size_t or 1, patch, patch)
    return LatentGrid(type(transformer).__name__, "BFCHW", patch_thw)


class BladeCogVideoXAttnProcessor(BladeProcessorBase):
    """Joint attention processor of one CogVideoX block that runs ASA, or the original when dense.

    Mirrors `diffusers.models.attention_processor.CogVideoXAttnProcessor2_0` (diffusers 0.42): the
    q/k/v projections go through the module's own linear layers, so peft LoRA layers take effect.
    An attention mask (never passed by the diffusers CogVideoX model) makes the call dense.
    """

    def __call__(self, attn, hidden_states, encoder_hidden_states, attention_mask=None, image_rotary_emb=None):
        if attention_mask is not None or self.state.context is None:
            if attention_mask is not None:
                _warn_mask_once()
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        if self.state.runs_dense(self.layer):
            self.record_dense(hidden_states.shape[0], attn.heads)
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)

        text_tokens = encoder_hidden_states.size(1)
        batch_size = hidden_states.shape[0]
        query, key, value = cogvideox_joint_qkv(attn, hidden_states, encoder_hidden_states, image_rotary_emb)
        head_dim = query.shape[-1]
        out = self.sparse_attention(query, key, value, text_tokens=text_tokens)  # [B, H, L, D]
        out = out.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)  # [B, L, H * D]
        out = attn.to_out[0](out)
        out = attn.to_out[1](out)
        encoder_out, video_out = out.split([text_tokens, out.size(1) - text_tokens], dim=1)
        return video_out, encoder_out


def patch_cogvideox(transformer, state: BladeState) -> None:
    """Install a `BladeCogVideoXAttnProcessor` on every `transformer_blocks[i].attn1` and the pre-hook."""
    attention_modules = [block.attn1 for block in transformer.transformer_blocks]
    install(transformer, state, attention_modules, BladeCogVideoXAttnProcessor, cogvideox_latent_grid(transformer))
