"""RegMixup (Pinto et al., NeurIPS 2022): mixup as a regulariser of the clean cross-entropy."""
from __future__ import annotations

from typing import Any, Optional

import torch

from ..checks import check_non_negative
from .base import register_policy
from .input_mixing import build_input_policy, logits_of, unmixed
from .step import StepPolicy

__all__ = ["RegMixup"]


@register_policy("regmixup")
class RegMixup(StepPolicy):
    """L = loss(f(x), y) + η · loss(f(x̃), λ y + (1 − λ) y[index]), x̃ = λ x + (1 − λ) x[index].

    λ ~ Beta(α, α) with a LARGE α, so λ stays near 0.5: the mixed samples regularise, the clean
    ones carry the fit. The clean and the mixed batch go through the model as ONE batch of 2B rows
    (the authors' code concatenates them, so normalisation layers see both), then the two losses
    are computed on their halves with the configured loss (soft CE by default).

    Args:
        alpha: Beta(α, α) (paper and released commands: 20 for CIFAR-10, 10 for CIFAR-100).
        eta: weight of the mixed loss (paper: 1). The authors' code takes the mean over the 2B rows,
            which is this loss divided by 2 (η = 1); the paper's equation is written here.
        mode, p, pairing, stop_epoch, seed: as for every policy (authors: one λ per batch).
    Works for classification and regression (the configured loss mixes the targets).
    """

    needs = "step"
    spatial_dims = (1, 3)

    def __init__(self, alpha: Any = 20.0, eta: float = 1.0, mode: str = "batch", p: Any = 1.0,
                 pairing: Any = "random", stop_epoch: Optional[int] = None, seed: Optional[int] = None) -> None:
        super().__init__(alpha=alpha, mode=mode, p=p, pairing=pairing, stop_epoch=stop_epoch, seed=seed)
        self.eta = check_non_negative(eta, "eta")
        self.inner = build_input_policy("mixup", "regmixup", arg="the mixup", alpha=alpha, mode=mode, p=p,
                                        pairing=pairing, stop_epoch=stop_epoch)

    def training_step(self, x, y, ctx):
        mb = self.inner(x, y, generator=self.generator)
        if mb.x is x:                       # mixing off (p, stop_epoch, alpha 0): plain training
            return mb, ctx.loss_fn(logits_of(ctx, x), mb)
        b = x.shape[0]
        logits = logits_of(ctx, torch.cat([x, mb.x]))
        clean = ctx.loss_fn(logits[:b], unmixed(x, y))
        return mb, clean + self.eta * ctx.loss_fn(logits[b:], mb)

    def preview(self, x, y, generator=None):
        """For openmix-show: the mixed half of the 2B-row batch. -> (MixedBatch, note)."""
        mb = self.inner(x, y, generator=self.generator if generator is None else generator)
        return mb, f"mixed rows (α={self.alpha}); trained together with the clean rows"

    def cost_model_forwards(self) -> int:
        return 2

    def extra_repr(self) -> str:
        return f"eta={self.eta}"
