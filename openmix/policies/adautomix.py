"""AdAutoMix (Qin et al., "Adversarial AutoMixup", ICLR 2024): a generator mixes K >= 2 samples
with learned masks; it is trained against the classifier (through its EMA teacher) to produce
hard mixed samples, while the classifier learns from them.

Per batch (authors' ``AdAutoMix.forward_train`` in OpenMixup; parts in ``learned_mixer``):

1. features of the clean batch at ``feature_stage`` and the logits of the EMA teacher (the
   momentum encoder; no gradient);
2. GENERATOR step: rows mixed with themselves and K - 1 random partners, ratios λ (K = 2:
   λ ~ Beta(α, α); K > 2: K Beta(α, α) draws normalised to sum 1, the authors' draw); masks =
   softmax over k of up(m_k) (``MultiMixBlock``); the mixed sample goes through the teacher.
   Every ``adv_interval``-th step is adversarial: the generator MAXIMISES
   β·CE(teacher(x_mix), Σ λ_k y_k) + (1 - β)·Σ_k λ_k cos(teacher(x_mix), teacher(x_k)),
   i.e. it seeks samples the teacher gets wrong while keeping them similar to their sources
   (the cosine term is the paper's guard against "the collapse of the inherent meanings of
   images"); the other steps minimise the CE (cooperative, as AutoMix), as in the authors' code;
3. CLASSIFIER step: new partners and λ; the generator's masks, detached (rows whose smallest λ_k
   is <= lam_margin are mixed linearly with λ); loss = loss_fn(model(x_mix), mb)
   + clean_weight·loss_fn(model(x), y) with clean_weight = 1 - mixup_ratio for K > 2 (1 for
   K = 2), + mixup_ratio·loss_fn(model(Σ λ_k x_k), Σ λ_k y_k) for K > 2 (the authors' ``loss_re_q``).

Labels weigh sample k by the MEAN of its mask. With K = 2 the batch is an ordinary MixedBatch
(partner ``index``, λ = own mask mean, own ``mask``); with K > 2 its ``y`` holds the K-way soft
labels (B, num_classes) (index = the row, λ = 1, mask None), which soft-target losses (soft_ce,
bce) read; the decoupled loss, built on one partner per row, is refused.

Where openmix differs from the authors' code (say so when comparing):
- the sign of the cosine term: OpenMixup's ``adautomix.py`` adds +(1 - β)·cos to the loss it
  minimises, which LOWERS the similarity to the sources; we follow the stated purpose (keep it);
- the authors' K > 2 test of lam_margin (``lam_margin >= lam[0] or lam_margin < 1 - lam[0]``) is
  true for almost every draw, so their classifier sees the linear K-way mix instead of the
  generator's whenever K > 2; we apply the margin as for K = 2 (smallest λ <= lam_margin);
- λ is concatenated to each sample's features (``AdaptiveMask``'s default; the authors' CIFAR
  configs set ``lam_concat=False``, so their masks do not depend on λ at all);
- the classifier's labels use the mask means (see above), the authors' the sampled λ;
- column 0 is the row itself and the other columns random partners (the authors permute all K
  columns: the same distribution over mixed batches); momentum-encoder warm-up and a constant
  mixer learning rate as in ``learned_mixer``; one classification head.

Example::

    openmix-train data=digits mix=adautomix trainer.epochs=5
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F

from ..batch import MixedBatch
from ..checks import check_probability
from .base import lam_dtype, register_policy, sample_beta
from .learned_mixer import (Draw, LearnedMixer, MultiMixBlock, StepLosses, mix_samples_with_masks, mixed_label,
                            soft_cross_entropy, upsample)

__all__ = ["AdAutoMix"]


@register_policy("adautomix")
class AdAutoMix(LearnedMixer):
    """AdAutoMix (see the module docstring). Defaults: the authors' CIFAR-100 ResNet-18 config
    (α 1, 3 samples, momentum 0.999, lam_margin 0.03, mixup_ratio 0.5, β 0.3, adversarial every 2nd
    step, bilinear upsampling, reduction 2), with λ concatenated (``AdaptiveMask``'s default).

    Args:
        mix_samples: K, the number of samples in each mixed row (>= 2).
        beta: weight of the teacher's CE in the adversarial objective (1 - beta: the cosine term).
        adv_interval: every adv_interval-th step is adversarial, the others cooperative (1: all adversarial).
        mixup_ratio: for K > 2, weight of the classifier's loss on the linear K-way mix (the clean
            loss gets 1 - mixup_ratio).
        lam_concat, reduction: see ``MultiMixBlock``.
        mode: ``batch`` (one λ vector per batch, the authors') or ``elem`` (per row).
        feature_stage, ema_decay, lam_margin, upsample, mixer_*, snapshot_samples, p, pairing,
        stop_epoch, seed: see ``LearnedMixer``.
    """

    modes = ("batch", "elem")

    def __init__(self, alpha: Any = 1.0, mix_samples: int = 3, mode: str = "batch", p: Any = 1.0,
                 pairing: Any = "random", stop_epoch: Optional[int] = None, seed: Optional[int] = None,
                 feature_stage: int = -2, ema_decay: float = 0.999, lam_margin: float = 0.03,
                 upsample: str = "bilinear", beta: float = 0.3, adv_interval: int = 2, mixup_ratio: float = 0.5,
                 lam_concat: bool = True, reduction: int = 2, mixer_lr: float = 0.1, mixer_momentum: float = 0.9,
                 mixer_weight_decay: float = 1e-4, snapshot_samples: int = 8) -> None:
        super().__init__(alpha=alpha, mode=mode, p=p, pairing=pairing, stop_epoch=stop_epoch, seed=seed,
                         feature_stage=feature_stage, ema_decay=ema_decay, lam_margin=lam_margin, upsample=upsample,
                         mixer_lr=mixer_lr, mixer_momentum=mixer_momentum, mixer_weight_decay=mixer_weight_decay,
                         snapshot_samples=snapshot_samples)
        for name, value, low in (("mix_samples", mix_samples, 2), ("adv_interval", adv_interval, 1),
                                 ("reduction", reduction, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if not isinstance(lam_concat, bool):
            raise ValueError(f"lam_concat must be true or false, got {lam_concat!r}")
        self.num_samples = mix_samples
        self.beta = check_probability(beta, "beta")
        self.adv_interval, self.reduction, self.lam_concat = adv_interval, reduction, lam_concat
        self.mixup_ratio = check_probability(mixup_ratio, "mixup_ratio")

    @property
    def mix_samples(self) -> int:
        return self.num_samples

    def check_loss(self, loss_fn: Any) -> None:
        """Refuse losses that cannot read K-way labels (K > 2) or ignore the mixed labels."""
        if not getattr(loss_fn, "needs_soft_targets", True):
            raise ValueError(f"adautomix mixes the labels of each row, so it needs a soft-target loss "
                             f"(soft_ce or bce); got the hard-label loss {loss_fn!r}")
        from ..losses.decoupled import DecoupledMixupLoss
        if self.num_samples > 2 and isinstance(loss_fn, DecoupledMixupLoss):
            raise ValueError(f"adautomix with mix_samples={self.num_samples} gives each row "
                             f"{self.num_samples} labels; the decoupled loss handles one partner per row: use "
                             f"loss=soft_ce or loss=bce, or mix.mix_samples=2")

    def build_mixer(self, channels: int, generator: torch.Generator) -> torch.nn.Module:
        return MultiMixBlock(channels, self.reduction, self.lam_concat, generator)

    def masks(self, feats: torch.Tensor, draw: Draw, size: torch.Size) -> torch.Tensor:
        """(B, K, *size): softmax over k of the upsampled logits of ``MultiMixBlock``."""
        logits = self.mixer(feats, draw.indices, draw.lams)
        return upsample(logits, size, self.upsample).float().softmax(dim=1)

    def draw_many(self, shape: torch.Size, y: torch.Tensor) -> Draw:
        """indices (B, K) (column 0 the row), λ (B, K) (see the module docstring), rows left
        constant: unmixed (probability 1 - p; λ = (1, 0, ...)) or smallest λ <= lam_margin."""
        batch, k, g = shape[0], self.num_samples, self.generator
        partners = [self.pairing(batch, g, y=y).cpu() for _ in range(k - 1)]
        indices = torch.stack([torch.arange(batch), *partners], dim=1)
        if k == 2:
            lam = sample_beta(self.alpha, batch, g).cpu()
            lams = torch.stack([lam, 1.0 - lam], dim=1)
        else:
            raw = sample_beta(self.alpha, batch * k, g).cpu().view(batch, k)
            lams = raw / raw.sum(dim=1, keepdim=True).clamp_min(1e-12)
        mixed = torch.rand(batch, generator=g, device=g.device).cpu() < self.p
        if self.mode == "batch":
            lams, mixed = lams[:1].expand(batch, k), mixed[:1].expand(batch)
        unmixed = torch.zeros(k)
        unmixed[0] = 1.0
        lams = torch.where(mixed.view(-1, 1), lams, unmixed).float().contiguous()
        constant = ~mixed | (lams.min(dim=1).values <= self.lam_margin)
        return Draw(indices, lams, constant)

    def adversarial_step(self) -> bool:
        return self.steps % self.adv_interval == 0

    def generator_objective(self, logits: torch.Tensor, teacher_logits: torch.Tensor, y: torch.Tensor,
                            draw: Draw, num_classes: int) -> torch.Tensor:
        """The generator's loss (minimised). logits: teacher on the mixed batch (B, num_classes);
        teacher_logits: teacher on the clean batch (B, num_classes)."""
        ce = soft_cross_entropy(logits, mixed_label(y, draw.indices, draw.lams, num_classes))
        if not self.adversarial_step():
            return ce
        sources = teacher_logits[draw.indices]                          # (B, K, num_classes)
        cos = F.cosine_similarity(logits.unsqueeze(1), sources.float(), dim=2)
        similarity = (cos * draw.lams).sum(dim=1).mean()
        return -(self.beta * ce + (1.0 - self.beta) * similarity)

    def step_losses(self, x: torch.Tensor, y: torch.Tensor, ctx: Any) -> StepLosses:
        """x: (B, C, *spatial) normalised; y: (B,). See the module docstring (steps 1-3)."""
        size = x.shape[2:]
        gen_draw = self.draw_many(x.shape, y).to(x.device)
        cls_draw = self.draw_many(x.shape, y).to(x.device)
        with torch.no_grad(), ctx.autocast():
            feats, teacher_logits = self.encoder.features(x, self.stage, with_logits=True)
        feats = feats.float()
        gen_masks = self.masks(feats, gen_draw, size)
        with ctx.autocast():
            logits = self.encoder.module(mix_samples_with_masks(x, gen_draw.indices, gen_masks)).float()
        gen_loss = self.generator_objective(logits, teacher_logits.float(), y, gen_draw, ctx.num_classes)
        with torch.no_grad():
            cls_masks = self.constant_rows(self.masks(feats, cls_draw, size), cls_draw)
        mb = self.classifier_batch(x, y, cls_draw, cls_masks, ctx.num_classes)
        many = self.num_samples > 2
        loss = self.classifier_loss(mb, x, y, ctx, 1.0 - self.mixup_ratio if many else 1.0)
        if many and self.mixup_ratio > 0:
            linear = self.constant_rows(cls_masks, Draw(cls_draw.indices, cls_draw.lams,
                                                        torch.ones_like(cls_draw.constant)))
            lin_mb = self.classifier_batch(x, y, cls_draw, linear, ctx.num_classes)
            with ctx.autocast():
                loss = loss + self.mixup_ratio * ctx.loss_fn(ctx.forward(lin_mb.x).float(), lin_mb)
        return StepLosses(mb, loss, gen_loss, gen_masks, cls_masks)

    def classifier_batch(self, x: torch.Tensor, y: torch.Tensor, draw: Draw, masks: torch.Tensor,
                         num_classes: int) -> MixedBatch:
        """K = 2: the usual MixedBatch; K > 2: y = K-way soft labels weighted by the mask means."""
        if self.num_samples == 2:
            return self.pair_batch(x, y, draw, masks)
        weights = masks.flatten(2).mean(dim=2)
        soft = mixed_label(y, draw.indices, weights, num_classes)
        rows = torch.arange(x.shape[0], device=x.device)
        return MixedBatch(x=mix_samples_with_masks(x, draw.indices, masks).to(x.dtype), y=soft, index=rows,
                          lam=torch.ones(x.shape[0], device=x.device, dtype=lam_dtype(x)), mask=None)

    def cost_model_forwards(self) -> Optional[int]:
        # the classifier's forwards (generator's mix, clean, linear K-way mix for K > 2)
        return 2 + int(self.num_samples > 2 and self.mixup_ratio > 0)

    def extra_repr(self) -> str:
        return (f"mix_samples={self.num_samples}, beta={self.beta}, adv_interval={self.adv_interval}, "
                f"{super().extra_repr()}")
