"""Mean squared error against mixed regression targets (C-Mixup, mixup for regression)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..batch import MixedBatch
from . import register_loss


@register_loss("mse")
class MixedMSE:
    """``mean((pred - (λ y + (1-λ) y[index]))²)``. pred: (B,), (B, 1) or (B, D); targets float."""

    task = "regression"
    needs_soft_targets = False

    def __call__(self, pred: torch.Tensor, mb: MixedBatch) -> torch.Tensor:
        if not isinstance(mb, MixedBatch):
            raise TypeError(f"mb must be an openmix.MixedBatch, got {type(mb).__name__}")
        if not mb.y.is_floating_point():
            raise TypeError(f"mse needs float regression targets, got labels of dtype {mb.y.dtype}; "
                            f"for class labels use soft_ce, bce or decoupled")
        target = mb.mix_targets()
        if pred.shape != target.shape:
            if pred.ndim == 2 and pred.shape[1] == 1 and target.ndim == 1:
                pred = pred.squeeze(1)
            else:
                raise ValueError(f"pred must have the targets' shape {tuple(target.shape)}, got {tuple(pred.shape)}")
        return F.mse_loss(pred, target.to(pred.dtype))

    def __repr__(self) -> str:
        return "MixedMSE()"
