"""Decoupled mixup loss (DM; Liu et al., "Harnessing Hard Mixed Samples with Decoupled Regularizer")."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..batch import MixedBatch
from ..checks import check_choice, check_non_negative
from . import register_loss
from .classification import ClassificationLoss


def log_softmax_excluding(logits: torch.Tensor, target: torch.Tensor, excluded: torch.Tensor) -> torch.Tensor:
    """(B,) ``log softmax`` over all classes but ``excluded``, read at ``target``.

    logits: (B, K); target, excluded: (B,) long with target != excluded where used.
    """
    masked = logits.scatter(1, excluded.unsqueeze(1), float("-inf"))
    return logits.gather(1, target.unsqueeze(1)).squeeze(1) - torch.logsumexp(masked, dim=1)


@register_loss("decoupled")
class DecoupledMixupLoss(ClassificationLoss):
    """soft-CE(z, mixed label) + w_a·(−log softmax_{k≠b}(z)_a) + w_b·(−log softmax_{k≠a}(z)_b).

    a = y (weight λ in the label), b = y[index] (weight 1−λ). Weights: ``both`` → (η·λ^t, η·(1−λ)^t);
    ``more`` → only the component with the larger label weight; ``less`` → only the smaller
    (ties go to a). The weights are indexed per row by (y, y[index]), never by class order.
    Rows that are not mixed (λ = 0 or 1) and rows whose two labels agree (a == b) are plain
    soft CE: the regulariser is about the two classes of a mixed sample.
    Labels must be class indices (B,); one-hot or soft labels are reduced with argmax.
    """

    def __init__(self, eta: float = 0.1, mode: str = "both", t: float = 1.0, smoothing: float = 0.0) -> None:
        super().__init__(smoothing)
        self.eta = check_non_negative(eta, "eta")
        self.mode = check_choice(mode, "mode", ("both", "more", "less"))
        self.t = check_non_negative(t, "t")

    def weights(self, lam: torch.Tensor) -> tuple:
        """(w_a, w_b), each (B,), for label weights λ and 1 − λ."""
        lam = lam.to(torch.float64)
        g_a, g_b = lam.pow(self.t), (1 - lam).pow(self.t)
        if self.mode == "more":
            a_larger = lam >= 0.5
            g_a, g_b = torch.where(a_larger, g_a, 0.0), torch.where(a_larger, 0.0, g_b)
        elif self.mode == "less":
            a_smaller = lam < 0.5
            g_a, g_b = torch.where(a_smaller, g_a, 0.0), torch.where(a_smaller, 0.0, g_b)
        return self.eta * g_a, self.eta * g_b

    def __call__(self, logits: torch.Tensor, mb: MixedBatch) -> torch.Tensor:
        targets = self.targets(logits, mb)
        soft_ce = torch.sum(-targets * F.log_softmax(logits, dim=1), dim=1)
        y = mb.y.argmax(dim=1) if mb.y.is_floating_point() else mb.y
        a, b = y, y[mb.index]
        w_a, w_b = self.weights(mb.lam.to(logits.device))
        differ = ((a != b) & (mb.lam > 0) & (mb.lam < 1)).to(torch.float64)
        term_a = -log_softmax_excluding(logits, a, b)
        term_b = -log_softmax_excluding(logits, b, a)
        # rows with a == b: the "excluding" softmax is undefined (-inf), and weighted by zero
        term_a = torch.where(a != b, term_a, torch.zeros_like(term_a))
        term_b = torch.where(a != b, term_b, torch.zeros_like(term_b))
        reg = (w_a * differ).to(logits.dtype) * term_a + (w_b * differ).to(logits.dtype) * term_b
        return (soft_ce + reg).mean()

    def __repr__(self) -> str:
        return f"DecoupledMixupLoss(eta={self.eta}, mode={self.mode!r}, t={self.t}, smoothing={self.smoothing})"
