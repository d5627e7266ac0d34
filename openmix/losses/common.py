"""Argument checks shared by the losses."""
from __future__ import annotations

import torch

from ..batch import MixedBatch


def check_logits(logits: torch.Tensor, mb: MixedBatch, name: str = "logits") -> torch.Tensor:
    """logits: (B, K) float with B equal to the mixed batch's size."""
    if not isinstance(mb, MixedBatch):
        raise TypeError(f"mb must be an openmix.MixedBatch, got {type(mb).__name__}")
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor of shape (B, K), got "
                        f"{type(logits).__name__ if not isinstance(logits, torch.Tensor) else logits.dtype}")
    if logits.ndim != 2 or logits.shape[0] != mb.index.shape[0]:
        raise ValueError(f"{name} must have shape (B, K) with B={mb.index.shape[0]}, got shape {tuple(logits.shape)}")
    return logits
