"""AutoMix (Liu et al., "AutoMix: Unveiling the Power of Mixup for Stronger Classifiers", ECCV 2022):
a Mix Block learns the mask of each pair from their features, trained with the classifier.

Per batch (authors' ``AutoMixup.forward_train``; ``openmix.policies.learned_mixer`` has the parts):

1. features ``h`` (B, C, *s) of the clean batch at ``feature_stage`` from the MOMENTUM encoder (an
   EMA copy of the classifier; no gradient);
2. MIXER step: partners ``index_m``, λ_m ~ Beta(α, α); the Mix Block gives the partner's mask
   ``m = sigmoid(up(P v))`` (P: cross-attention of the row's features (+λ) to the partner's
   (+1-λ)); ``x_m = (1-m) x + m x[index_m]`` goes through the momentum encoder; the mixer's loss is
   soft-CE(logits, λ_m y + (1-λ_m) y[index_m]) + mask_loss * max(|mean(1-m) - λ_m| - margin, 0).
   Its gradient reaches the Mix Block only (the encoder's parameters are frozen, the features
   carry no gradient);
3. CLASSIFIER step: new partners ``index_c`` and λ_c; the Mix Block's mask, DETACHED (rows with
   min(λ_c, 1-λ_c) <= lam_margin use the constant mask λ_c: plain mixup); the classifier's loss is
   loss_fn(model(x_c), mb) + clean_weight * loss_fn(model(x), y) (the authors' ``head_mix_q`` and
   ``head_one_q``, weights 1 and 1).

Where openmix differs from the authors' code (say so when comparing):
- the label of the classifier's mixed batch weighs the row by the MEAN OF ITS MASK (openmix's
  ``MixedBatch`` contract, lam == mask.mean); the authors use the sampled λ_c, which the mask loss
  keeps within ``mask_margin`` of the mask mean for the mixer's own draws;
- one classification head for the clean and the mixed loss (the authors train two linear heads,
  ``head_one`` and ``head_mix``, on one backbone);
- the mask loss compares each row's mask mean with its λ (the authors: the batch mean; the same
  thing in ``mode='batch'`` up to taking the mean before the absolute value);
- the momentum encoder's decay warms up (see ``MomentumEncoder``) and stays at ``ema_decay``
  (the authors raise it from 0.999 to 0.999999 with a cosine over training); the mixer's SGD
  learning rate is constant (the authors anneal it with the classifier's, 0.1 -> 0.05 on CIFAR);
- one λ PER ROW by default (``mode='elem'``; the authors draw one λ per batch, ``mode='batch'``).
  Measured on digits (small CNN, 20 epochs, seeds 0-2): with one λ per batch the Mix Block chases
  each batch's λ, overshoots (SGD momentum 0.9) and saturates its sigmoid: the masks end all-own or
  all-partner whatever λ (3 of 3 seeds; SAMix: 2 of 3 collapsed or inverted), a dead mixer. With a
  λ per row the block learns the λ dependence within each batch (mask mean 0.25 / 0.48 / 0.71 for
  λ = 0.1 / 0.5 / 0.9, seed 0);
- λ is concatenated to the features by default (the paper's λ embedding and OpenMixup's
  ImageNet configs; its CIFAR configs set ``lam_concat=False``);
- any channels-first stage of any CNN: the 1x1 convolutions are linear maps over channels, the
  mask is upsampled to the input size. On 8x8 digits with the small CNN the default stage (-2)
  gives a 4x4 feature map upsampled x2 (the authors: 8x8 maps of 32x32 CIFAR images, x4).

DDP: the mixer's gradients are averaged across ranks (all-reduce) and its initial state is rank
0's, so every rank holds the same mixer.

Example::

    openmix-train data=digits mix=automix trainer.epochs=5
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from ..checks import check_non_negative, check_probability
from .base import register_policy
from .learned_mixer import (Draw, LearnedMixer, PairMixBlock, StepLosses, mask_ratio_loss, mix_samples_with_masks,
                            mixed_label, soft_cross_entropy, upsample)

__all__ = ["AutoMix"]


@register_policy("automix")
class AutoMix(LearnedMixer):
    """AutoMix (see the module docstring). Defaults: the authors' CIFAR-100 ResNet-18 config
    (α 2, momentum 0.999, mask loss 0.1 with margin 0.1, lam_margin 0.08, nearest upsampling,
    reduction 2), with λ concatenated as in the paper and drawn per row (see the module docstring).

    Args:
        alpha: Beta(α, α) for both draws (mixer and classifier).
        mask_loss: weight of the mixer's mask-ratio loss; mask_margin: its margin ε.
        lam_concat: append λ (row) and 1 - λ (partner) as a channel to the Mix Block's inputs.
        reduction: the attention's inner width is C // reduction.
        clean_weight: weight of the classifier's loss on the clean batch (0: mixed loss only).
        feature_stage, ema_decay, lam_margin, upsample, mixer_lr, mixer_momentum,
        mixer_weight_decay, snapshot_samples, mode, p, pairing, stop_epoch, seed: see ``LearnedMixer``.
    """

    def __init__(self, alpha: Any = 2.0, mode: str = "elem", p: Any = 1.0, pairing: Any = "random",
                 stop_epoch: Optional[int] = None, seed: Optional[int] = None, feature_stage: int = -2,
                 ema_decay: float = 0.999, lam_margin: float = 0.08, upsample: str = "nearest",
                 mask_loss: float = 0.1, mask_margin: float = 0.1, lam_concat: bool = True, reduction: int = 2,
                 clean_weight: float = 1.0, mixer_lr: float = 0.1, mixer_momentum: float = 0.9,
                 mixer_weight_decay: float = 1e-4, snapshot_samples: int = 8) -> None:
        super().__init__(alpha=alpha, mode=mode, p=p, pairing=pairing, stop_epoch=stop_epoch, seed=seed,
                         feature_stage=feature_stage, ema_decay=ema_decay, lam_margin=lam_margin, upsample=upsample,
                         mixer_lr=mixer_lr, mixer_momentum=mixer_momentum, mixer_weight_decay=mixer_weight_decay,
                         snapshot_samples=snapshot_samples)
        self._init_pair_mixer(mask_loss, mask_margin, reduction, clean_weight)
        if not isinstance(lam_concat, bool):
            raise ValueError(f"lam_concat must be true or false, got {lam_concat!r}")
        self.lam_concat = lam_concat

    def _init_pair_mixer(self, mask_loss: float, mask_margin: float, reduction: int, clean_weight: float) -> None:
        self.mask_loss = check_non_negative(mask_loss, "mask_loss")
        self.mask_margin = check_probability(mask_margin, "mask_margin")
        if isinstance(reduction, bool) or not isinstance(reduction, int) or reduction < 1:
            raise ValueError(f"reduction must be an int >= 1, got {reduction!r}")
        self.reduction = reduction
        self.clean_weight = check_non_negative(clean_weight, "clean_weight")

    def build_mixer(self, channels: int, generator: torch.Generator) -> torch.nn.Module:
        return PairMixBlock(channels, self.reduction, self.lam_concat, generator)

    def masks(self, feats: torch.Tensor, draw: Draw, size: torch.Size) -> torch.Tensor:
        """(B, 2, *size): [own mask, partner mask] = [1 - m, m], m = sigmoid(up(partner logits))."""
        logits = self.mixer(feats, draw.indices[:, 1], draw.lams[:, 0])
        partner = torch.sigmoid(upsample(logits, size, self.upsample).float())
        return torch.cat([1.0 - partner, partner], dim=1)

    def mixer_objective(self, logits: torch.Tensor, y: torch.Tensor, draw: Draw, own_mask: torch.Tensor,
                        num_classes: int) -> torch.Tensor:
        """soft-CE at the sampled λ + mask_loss * mask-ratio loss. logits: (B, num_classes);
        own_mask: (B, 1, *s)."""
        targets = mixed_label(y, draw.indices, draw.lams, num_classes)
        return soft_cross_entropy(logits, targets) + self.mask_loss * mask_ratio_loss(
            own_mask, draw.lams[:, 0], self.mask_margin)

    def step_losses(self, x: torch.Tensor, y: torch.Tensor, ctx: Any) -> StepLosses:
        """x: (B, C, *spatial) normalised; y: (B,). See the module docstring (steps 1-3)."""
        size = x.shape[2:]
        mixer_draw = self.draw_pair(x.shape, y).to(x.device)
        classifier_draw = self.draw_pair(x.shape, y).to(x.device)
        with torch.no_grad(), ctx.autocast():
            feats = self.encoder.features(x, self.stage)
        feats = feats.float()
        mixer_masks = self.masks(feats, mixer_draw, size)
        with ctx.autocast():
            logits = self.encoder.module(mix_samples_with_masks(x, mixer_draw.indices, mixer_masks)).float()
        mixer_loss = self.mixer_objective(logits, y, mixer_draw, mixer_masks[:, :1], ctx.num_classes)
        with torch.no_grad():
            classifier_masks = self.constant_rows(self.masks(feats, classifier_draw, size), classifier_draw)
        mb = self.pair_batch(x, y, classifier_draw, classifier_masks)
        loss = self.classifier_loss(mb, x, y, ctx, self.clean_weight)
        return StepLosses(mb, loss, mixer_loss, mixer_masks, classifier_masks)

    def cost_model_forwards(self) -> Optional[int]:
        # the classifier's forwards (mixed, clean); the momentum encoder adds a partial and a full one
        return 1 + int(self.clean_weight > 0)
