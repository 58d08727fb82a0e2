"""Evaluation of generated videos: pixel metrics against a reference video."""

from blade.evaluation.metrics import psnr, ssim

__all__ = ["psnr", "ssim"]
