"""Put ASA into diffusers' Wan and CogVideoX transformers, take it out, and record its masks.

Typical use with a loaded pipeline::

    pipe = blade.models.load_pipeline("checkpoints/Wan2.1-T2V-1.3B-Diffusers")
    blade.apply_blade(pipe.transformer, blade.BladeConfig.wan(dense_steps=2), schedule=pipe.scheduler)
    with blade.record_masks(pipe.transformer, layers=[0, 15], steps=[10]) as recording:
        video = pipe("a corgi surfing", num_inference_steps=50).frames[0]
    recording.to_disk("results/masks/corgi")
    blade.remove_blade(pipe.transformer)

Wan routes every `blocks[i].attn1` (self-attention) through ASA and keeps cross-attention dense;
CogVideoX routes every `transformer_blocks[i].attn1` (joint [text | video] attention). The step
index that `dense_steps` and `record_masks(steps=...)` use is the position of each forward's
timestep on the registered schedule (nearest entry), so it is right however many times a pipeline
calls the transformer per step.
"""

from blade.patching.apply import apply_blade, dense_attention, remove_blade, set_schedule
from blade.patching.capture import AttentionCapture, CapturedCall, capture_attention_inputs
from blade.patching.cogvideox import BladeCogVideoXAttnProcessor
from blade.patching.recording import MaskRecording, RecordedCall, load_recording, record_masks
from blade.patching.wan import BladeWanAttnProcessor

__all__ = [
    "AttentionCapture",
    "BladeCogVideoXAttnProcessor",
    "BladeWanAttnProcessor",
    "CapturedCall",
    "MaskRecording",
    "RecordedCall",
    "apply_blade",
    "capture_attention_inputs",
    "dense_attention",
    "load_recording",
    "record_masks",
    "remove_blade",
    "set_schedule",
]
