"""Evaluation: pixel metrics against a reference video, and `blade evaluate`, which compares the teacher,
the few-step teacher, distilled students and training-free sparse variants in one run."""

from blade.evaluation.config import EvalConfig, VariantSpec, default_variants
from blade.evaluation.metrics import psnr, ssim
from blade.evaluation.report import compute_metrics, demo_summary, metrics_table, write_demo_summary
from blade.evaluation.run import evaluate, load_videos
from blade.evaluation.static import apply_static_mask

__all__ = [
    "EvalConfig",
    "VariantSpec",
    "apply_static_mask",
    "compute_metrics",
    "default_variants",
    "demo_summary",
    "evaluate",
    "load_videos",
    "metrics_table",
    "psnr",
    "ssim",
    "write_demo_summary",
]
