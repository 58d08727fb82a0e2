"""blade: adaptive block-sparse attention (ASA) and sparsity-aware step distillation (TDM) for
video diffusion transformers, after Video-BLADE (Gu et al., arXiv 2508.10774).

Public names are imported lazily, so `import blade` stays cheap and does not import diffusers until
a model-facing name is used.
"""

from importlib import import_module

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY_EXPORTS = {
    "block_sparse_attention": "blade.kernels",
    "available_backends": "blade.kernels",
    "BladeConfig": "blade.config",
    "asa_attention": "blade.sparsity",
    "embed_prompts": "blade.prompts",
    "load_embeddings": "blade.prompts",
    "apply_blade": "blade.patching",
    "remove_blade": "blade.patching",
    "dense_attention": "blade.patching",
    "set_schedule": "blade.patching",
    "record_masks": "blade.patching",
    "load_recording": "blade.patching",
    "capture_attention_inputs": "blade.patching",
    "generate_videos": "blade.generate",
    "export_video": "blade.export",
    "psnr": "blade.evaluation",
    "ssim": "blade.evaluation",
    "EvalConfig": "blade.evaluation",
    "evaluate": "blade.evaluation",
    "DistillConfig": "blade.distill",
    "load_lora": "blade.distill",
    "ToyTeacherConfig": "blade.toy",
    "make_videos": "blade.toy",
    "score_videos": "blade.toy",
    "evaluate_teacher": "blade.toy",
}

__all__ = ["__version__", *_LAZY_EXPORTS]


def __getattr__(name):
    module_name = _LAZY_EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'blade' has no attribute {name!r}")
    value = getattr(import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
