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
    """Plain cross-entropy on the row's own class index, for unmixed batches (``vanilla``).

    A mixed batch (any λ < 1) is refused, since ``ce`` would drop the partner's share of the
    label; use ``soft_ce`` (or ``loss=auto`` in the trainer). The λ check reads λ on the host:
    on the CPU every call, elsewhere only on the first ``checked_calls`` calls (one host sync
    each), which catches a mixing policy in the first steps without a sync per step after.
    """

    needs_soft_targets = False
    checked_calls = 8

    def __init__(self, smoothing: float = 0.0) -> None:
        super().__init__(smoothing)
        self.calls = 0

    def __call__(self, logits: torch.Tensor, mb: MixedBatch) -> torch.Tensor:
        check_logits(logits, mb)
        if mb.y.is_floating_point() or mb.y.ndim != 1:
            raise TypeError(f"ce takes class indices y: (B,) integer, got y of dtype {mb.y.dtype} and shape "
                            f"{tuple(mb.y.shape)}; for soft or one-hot labels use soft_ce (the same value on "
                            f"unmixed batches), for regression targets use mse")
        if mb.lam.device.type == "cpu" or self.calls < self.checked_calls:
            self.calls += 1
            mixed = int((mb.lam < 1).sum())
            if mixed:
                raise ValueError(f"ce ignores the partner's label, but this batch is mixed ({mixed} of "
                                 f"{mb.lam.numel()} rows have λ < 1): use soft_ce (or decoupled, bce; "
                                 f"loss=auto in openmix-train), or keep ce for the vanilla policy")
        return F.cross_entropy(logits, mb.y, label_smoothing=self.smoothing)
