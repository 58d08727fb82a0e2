"""Put ASA into diffusers' Wan and CogVideoX transformers, take it out, and record its masks."""

from blade.patching.apply import apply_blade, remove_blade, set_schedule
from blade.patching.cogvideox import BladeCogVideoXAttnProcessor
from blade.patching.recording import MaskRecording, RecordedCall, load_recording, record_masks
from blade.patching.wan import BladeWanAttnProcessor

__all__ = [
    "BladeCogVideoXAttnProcessor",
    "BladeWanAttnProcessor",
    "MaskRecording",
    "RecordedCall",
    "apply_blade",
    "load_recording",
    "record_masks",
    "remove_blade",
    "set_schedule",
]
