"""ASA for diffusers' `WanTransformer3DModel`: self-attention (`blocks[i].attn1`) only.

Cross-attention (`attn2`) attends from video to the text tokens and stays dense. The block calls
self-attention as `attn1(x, None, None, rotary_emb)`, so the grid and step come from the state that
the transformer's forward pre-hook fills in.
"""

from __future__ import annotations

from blade.patching.common import BladeProcessorBase, BladeState, LatentGrid, install


def _apply_rotary(hidden_states, freqs_cos, freqs_sin):
    """Rotate interleaved channel pairs (x[2i], x[2i+1]) by Wan's rotary angles.

    Args:
        hidden_states: [B, L, H, D].
        freqs_cos, freqs_sin: [1, L, 1, D] from `WanRotaryPosEmbed`, each angle repeated for its pair.
    """
    x_even, x_odd = hidden_states.unflatten(-1, (-1, 2)).unbind(-1)  # [B, L, H, D/2] each
    cos = freqs_cos[..., 0::2]
    sin = freqs_sin[..., 1::2]
    rotated = hidden_states.new_empty(hidden_states.shape)
    rotated[..., 0::2] = x_even * cos - x_odd * sin
    rotated[..., 1::2] = x_even * sin + x_odd * cos
    return rotated.type_as(hidden_states)


def wan_self_attention_qkv(attn, hidden_states, rotary_emb):
    """Compute the post-norm, post-rotary q, k, v of a Wan self-attention call.

    Follows `WanAttnProcessor` (diffusers 0.42): q/k/v projections (fused or not, so peft LoRA
    layers on to_q/to_k/to_v take effect), RMS norm across heads, rotary embedding.

    Args:
        attn: a `WanAttention` module (`blocks[i].attn1`).
        hidden_states: [B, L, C] normalised block input.
        rotary_emb: (freqs_cos, freqs_sin), each [1, L, 1, D], or None.

    Returns:
        query, key, value, each [B, H, L, D] in the token order of `hidden_states`.
    """
    if getattr(attn, "fused_projections", False):
        query, key, value = attn.to_qkv(hidden_states).chunk(3, dim=-1)
    else:
        query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
    query = attn.norm_q(query)
    key = attn.norm_k(key)

    query = query.unflatten(2, (attn.heads, -1))  # [B, L, H, D]
    key = key.unflatten(2, (attn.heads, -1))
    value = value.unflatten(2, (attn.heads, -1))
    if rotary_emb is not None:
        query = _apply_rotary(query, *rotary_emb)
        key = _apply_rotary(key, *rotary_emb)
    return query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)  # [B, H, L, D] each


def wan_latent_grid(transformer) -> LatentGrid:
    """Return the reader of a Wan forward's token grid (latents [B, C, F, H, W], patch from the config)."""
    return LatentGrid(type(transformer).__name__, "BCFHW", tuple(transformer.config.patch_size))


class BladeWanAttnProcessor(BladeProcessorBase):
    """Self-attention processor of one Wan block that runs ASA, or the original processor when dense.

    Mirrors `diffusers.models.transformers.transformer_wan.WanAttnProcessor` (diffusers 0.42) for
    self-attention: q/k/v projections (fused or not, so peft LoRA layers on to_q/to_k/to_v/to_out.0
    take effect), RMS norm across heads, rotary embedding, attention, output projection.
    """

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        if encoder_hidden_states is not None or attention_mask is not None or self.state.context is None:
            # Not the self-attention call this processor was installed for: leave it to diffusers.
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        if self.state.runs_dense(self.layer):
            self.record_dense(hidden_states.shape[0], attn.heads)
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)

        query, key, value = wan_self_attention_qkv(attn, hidden_states, rotary_emb)
        out = self.sparse_attention(query, key, value)  # [B, H, L, D]
        out = out.transpose(1, 2).flatten(2, 3).type_as(query)  # [B, L, H * D]
        out = attn.to_out[0](out)
        return attn.to_out[1](out)


def patch_wan(transformer, state: BladeState) -> None:
    """Install a `BladeWanAttnProcessor` on every `blocks[i].attn1` and the forward pre-hook."""
    attention_modules = [block.attn1 for block in transformer.blocks]
    install(transformer, state, attention_modules, BladeWanAttnProcessor, wan_latent_grid(transformer))
