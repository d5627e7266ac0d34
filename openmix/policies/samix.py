"""SAMix (Li et al., "Boosting Discriminative Visual Representation Learning with Scenario-Agnostic
Mixup", arXiv 2111.15454): AutoMix's training scheme with the SAMix Mixer and the η-balanced loss,
trained online from scratch (no pre-trained Mixer: the paper's SAMix, not SAMix^P).

What differs from AutoMix (``openmix.policies.automix``, whose step and deviations apply here too):

- Mixer (``SAMixBlock``): λ embedded by residual scaling with the rescaled λ' (``lam_mul_k``),
  attention from the concatenated pair, a small non-linear value network, bilinear upsampling;
- the Mixer's classification objective is the η-balanced mixup loss. With p the softmax of the
  momentum encoder's logits z, a = y, b = y[index] and p~ the softmax over the two logits
  (z_a, z_b) only, the mixup cross-entropy splits exactly into
      local  = -λ log p~_a - (1-λ) log p~_b        (smoothness between the two mixed classes)
      global = -log(p_a + p_b)                      (discrimination from the other classes)
  and the η-balanced loss is local + η·global (η = 1 gives the plain mixup CE; rows with a == b
  have no local term). This is our reading of the paper's "local smoothness between two mixed
  classes subject to global discrimination from other classes". The authors' released config
  passes η as ``neg_weight=0.5``, a weight on the non-target classes of a SOFTMAX cross-entropy,
  whose targets there are 0, so that weight has no effect and their Mixer trains with the plain
  mixup CE: set ``eta=1.0`` to reproduce the released code;
- mask regulariser "L1+Variance": max(|mean(own mask) - λ| - margin, 0) - 2·Var(mask), the
  variance over all pixels of the batch (it favours confident, non-uniform masks).

Example::

    openmix-train data=digits mix=samix trainer.epochs=5
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from ..checks import check_non_negative
from .automix import AutoMix
from .base import register_policy
from .learned_mixer import Draw, LearnedMixer, SAMixBlock, mask_ratio_loss

__all__ = ["SAMix", "eta_balanced_loss"]


def eta_balanced_loss(logits: torch.Tensor, a: torch.Tensor, b: torch.Tensor, lam: torch.Tensor,
                      eta: float) -> torch.Tensor:
    """mean over rows of local + eta * global (see the module docstring).

    logits: (B, K); a, b: (B,) long class indices (weights λ and 1 - λ); lam: (B,)."""
    logits = logits.float()
    lam = lam.float()
    z_a = logits.gather(1, a.view(-1, 1)).squeeze(1)
    z_b = logits.gather(1, b.view(-1, 1)).squeeze(1)
    pair_lse = torch.where(a == b, z_a, torch.logaddexp(z_a, z_b))
    local = pair_lse - lam * z_a - (1.0 - lam) * z_b
    global_ = torch.logsumexp(logits, dim=1) - pair_lse
    return (local + eta * global_).mean()


@register_policy("samix")
class SAMix(AutoMix):
    """SAMix (see the module docstring). Defaults: the authors' CIFAR-100 ResNet-18 config
    (α 2, momentum 0.999, η 0.5, lam_mul_k 0.25, bilinear upsampling, L1+Variance mask loss 0.1
    with margin 0.1, value dropout 0, lam_margin 0.08, reduction 2), with λ drawn per row
    (``mode='elem'``; the authors: per batch; see ``openmix.policies.automix``).

    Args:
        eta: weight of the global term of the Mixer's η-balanced loss (1: plain mixup CE).
        lam_mul_k: k of SAMix's λ rescaling (< 0: no rescaling, the authors' ImageNet setting).
        value_dropout: dropout after the Mixer's value network (0.1 in the authors' ImageNet configs).
        mask_loss, mask_margin, reduction, clean_weight and the rest: see ``AutoMix``/``LearnedMixer``.
    """

    def __init__(self, alpha: Any = 2.0, mode: str = "elem", p: Any = 1.0, pairing: Any = "random",
                 stop_epoch: Optional[int] = None, seed: Optional[int] = None, feature_stage: int = -2,
                 ema_decay: float = 0.999, lam_margin: float = 0.08, upsample: str = "bilinear",
                 eta: float = 0.5, lam_mul_k: float = 0.25, value_dropout: float = 0.0, mask_loss: float = 0.1,
                 mask_margin: float = 0.1, reduction: int = 2, clean_weight: float = 1.0, mixer_lr: float = 0.1,
                 mixer_momentum: float = 0.9, mixer_weight_decay: float = 1e-4, snapshot_samples: int = 8) -> None:
        LearnedMixer.__init__(self, alpha=alpha, mode=mode, p=p, pairing=pairing, stop_epoch=stop_epoch, seed=seed,
                              feature_stage=feature_stage, ema_decay=ema_decay, lam_margin=lam_margin,
                              upsample=upsample, mixer_lr=mixer_lr, mixer_momentum=mixer_momentum,
                              mixer_weight_decay=mixer_weight_decay, snapshot_samples=snapshot_samples)
        self._init_pair_mixer(mask_loss, mask_margin, reduction, clean_weight)
        self.eta = check_non_negative(eta, "eta")
        if isinstance(lam_mul_k, bool) or not isinstance(lam_mul_k, (int, float)) or lam_mul_k > 10:
            raise ValueError(f"lam_mul_k must be a number <= 10 (< 0: no λ rescaling), got {lam_mul_k!r}")
        self.lam_mul_k = float(lam_mul_k)
        value_dropout = check_non_negative(value_dropout, "value_dropout")
        if value_dropout >= 1.0:
            raise ValueError(f"value_dropout must be in [0, 1), got {value_dropout!r}")
        self.value_dropout = value_dropout

    def build_mixer(self, channels: int, generator: torch.Generator) -> torch.nn.Module:
        return SAMixBlock(channels, self.reduction, self.lam_mul_k, self.value_dropout, generator)

    def mixer_objective(self, logits: torch.Tensor, y: torch.Tensor, draw: Draw, own_mask: torch.Tensor,
                        num_classes: int) -> torch.Tensor:
        """η-balanced loss at the sampled λ + mask_loss * (mask-ratio loss - 2 Var(mask))."""
        labels = y.argmax(dim=1) if y.is_floating_point() else y.long()
        lam = draw.lams[:, 0]
        objective = eta_balanced_loss(logits, labels[draw.indices[:, 0]], labels[draw.indices[:, 1]], lam, self.eta)
        variance = (own_mask - own_mask.mean()).pow(2).mean()
        return objective + self.mask_loss * (mask_ratio_loss(own_mask, lam, self.mask_margin) - 2.0 * variance)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, eta={self.eta}, lam_mul_k={self.lam_mul_k}"
