"""Soft-target cross-entropy and binary cross-entropy on mixed soft targets."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..batch import MixedBatch
from ..checks import check_probability
from . import register_loss
from .common import check_logits


class ClassificationLoss:
    """Shared by the classification losses: label smoothing (applied once, to both labels,
    before mixing) and the soft targets of a MixedBatch."""

    task = "classification"
    needs_soft_targets = True

    def __init__(self, smoothing: float = 0.0) -> None:
        self.smoothing = check_probability(smoothing, "smoothing")

    def targets(self, logits: torch.Tensor, mb: MixedBatch) -> torch.Tensor:
        """(B, K) mixed soft targets in logits' dtype, after checking logits: (B, K)."""
        check_logits(logits, mb)
        return mb.soft_targets(logits.shape[1], self.smoothing).to(logits.dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(smoothing={self.smoothing})"


@register_loss("soft_ce")
class SoftTargetCrossEntropy(ClassificationLoss):
    """mean over rows of ``-sum_k t_k log softmax(z)_k`` with t the mixed soft targets."""

    def __call__(self, logits: torch.Tensor, mb: MixedBatch) -> torch.Tensor:
        return torch.sum(-self.targets(logits, mb) * F.log_softmax(logits, dim=1), dim=1).mean()


@register_loss("bce")
class SoftTargetBCE(ClassificationLoss):
    """Binary cross-entropy with logits against the mixed soft targets, averaged over rows and
    classes (timm's ``BinaryCrossEntropy``)."""

    def __call__(self, logits: torch.Tensor, mb: MixedBatch) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, self.targets(logits, mb))


@register_loss("ce")
class HardCrossEntropy(ClassificationLoss):
    """Plain cross-entropy on the row's own label, ignoring the mix (for ``vanilla`` runs only:
    with a mixing policy the partner's share of the label would be lost)."""

    needs_soft_targets = False

    def __call__(self, logits: torch.Tensor, mb: MixedBatch) -> torch.Tensor:
        check_logits(logits, mb)
        y = mb.y.argmax(dim=1) if mb.y.is_floating_point() else mb.y
        return F.cross_entropy(logits, y, label_smoothing=self.smoothing)
