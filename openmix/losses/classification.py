"""Soft-target cross-entropy and binary cross-entropy on mixed soft targets."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..batch import MixedBatch
from ..checks import check_probability
from . import register_loss
from .common import check_logits


@register_loss("soft_ce")
class SoftTargetCrossEntropy:
    """mean over rows of ``-sum_k t_k log softmax(z)_k`` with t the mixed soft targets
    (label smoothing applied once, before mixing)."""

    task = "classification"
    needs_soft_targets = True

    def __init__(self, smoothing: float = 0.0) -> None:
        self.smoothing = check_probability(smoothing, "smoothing")

    def __call__(self, logits: torch.Tensor, mb: MixedBatch) -> torch.Tensor:
        check_logits(logits, mb)
        targets = mb.soft_targets(logits.shape[1], self.smoothing).to(logits.dtype)
        return torch.sum(-targets * F.log_softmax(logits, dim=1), dim=1).mean()

    def __repr__(self) -> str:
        return f"SoftTargetCrossEntropy(smoothing={self.smoothing})"


@register_loss("bce")
class SoftTargetBCE:
    """Binary cross-entropy with logits against the mixed soft targets, averaged over rows and
    classes (timm's ``BinaryCrossEntropy``)."""

    task = "classification"
    needs_soft_targets = True

    def __init__(self, smoothing: float = 0.0) -> None:
        self.smoothing = check_probability(smoothing, "smoothing")

    def __call__(self, logits: torch.Tensor, mb: MixedBatch) -> torch.Tensor:
        check_logits(logits, mb)
        targets = mb.soft_targets(logits.shape[1], self.smoothing).to(logits.dtype)
        return F.binary_cross_entropy_with_logits(logits, targets)

    def __repr__(self) -> str:
        return f"SoftTargetBCE(smoothing={self.smoothing})"


@register_loss("ce")
class HardCrossEntropy:
    """Plain cross-entropy on the row's own label, ignoring the mix (for ``vanilla`` runs only:
    with a mixing policy the partner's share of the label would be lost)."""

    task = "classification"
    needs_soft_targets = False

    def __init__(self, smoothing: float = 0.0) -> None:
        self.smoothing = check_probability(smoothing, "smoothing")

    def __call__(self, logits: torch.Tensor, mb: MixedBatch) -> torch.Tensor:
        check_logits(logits, mb)
        y = mb.y.argmax(dim=1) if mb.y.is_floating_point() else mb.y
        return F.cross_entropy(logits, y, label_smoothing=self.smoothing)

    def __repr__(self) -> str:
        return f"HardCrossEntropy(smoothing={self.smoothing})"
