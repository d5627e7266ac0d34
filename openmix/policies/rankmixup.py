"""RankMixup (Noh et al., ICCV 2023): mixup for calibration through a ranking of confidences.

The classifier is fitted by the loss on the CLEAN batch; mixed samples enter only through a ranking
term, weighted by ``weight``: M-RL keeps a mixed sample's score below its clean sample's by a
margin, M-NDCG orders the clean sample and several mixed ones by their label weight max(λ, 1 − λ).
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F

from ..checks import check_choice, check_non_negative, check_positive_int
from .base import register_policy
from .input_mixing import build_input_policy, logits_of, require_classification, unmixed
from .step import StepPolicy

__all__ = ["RankMixup", "margin_ranking_loss", "mixup_ndcg_loss"]

RANKINGS = ("mrl", "mndcg")
SCORES = ("logit", "prob")


def margin_ranking_loss(clean: torch.Tensor, mixed: torch.Tensor, label_weight: torch.Tensor,
                        margin: float) -> torch.Tensor:
    """M-RL. clean: (B,) score of each clean sample; mixed: (M, B) scores of M mixed copies;
    label_weight: (M, B) largest entry of each copy's mixed label. Copies whose label is one class
    (weight 1: λ = 1 or both classes equal) are skipped but still counted in the mean, as in the
    authors' code: mean over (M, B) of [w < 1] · max(0, mixed − clean + margin)."""
    keep = (label_weight < 1.0).to(mixed.dtype)
    return (keep * F.relu(mixed - clean.unsqueeze(0) + margin)).mean()


def mixup_ndcg_loss(clean_conf: torch.Tensor, mixed_conf: torch.Tensor, label_weight: torch.Tensor) -> torch.Tensor:
    """M-NDCG. clean_conf: (B,) max softmax probability of the clean samples (relevance 1, ranked
    first); mixed_conf: (M, B) of M mixed copies, relevance label_weight (M, B) = max(λ, 1 − λ) (1
    for one-class labels). Per row, the M + 1 items are put in order of relevance (highest first);
    DCG = Σ_k conf_k / log2(k + 1), IDCG = Σ_k relevance_k / log2(k + 1), k = 1..M+1 in that order;
    NDCG = min(DCG/IDCG, IDCG/DCG) (the authors' symmetric ratio). Returns mean(1 − NDCG)."""
    order = torch.argsort(label_weight.t(), dim=1, descending=True, stable=True)       # (B, M)
    conf = torch.cat([clean_conf.unsqueeze(1), mixed_conf.t().gather(1, order)], dim=1)
    rel = torch.cat([torch.ones_like(clean_conf).unsqueeze(1), label_weight.t().gather(1, order)], dim=1)
    discount = torch.log2(torch.arange(2, conf.shape[1] + 2, device=conf.device, dtype=conf.dtype))
    dcg, idcg = (conf / discount).sum(dim=1), (rel / discount).sum(dim=1)
    ndcg = torch.where(idcg > dcg, dcg / idcg, idcg / dcg)
    return (1.0 - ndcg).mean()


@register_policy("rankmixup")
class RankMixup(StepPolicy):
    """L = loss(f(x), y) + weight · ranking(f(x), f(x̃₁..x̃_M)), x̃_m mixup copies (λ_m ~ Beta(α, α)).

    Two forward passes per step: the clean batch, then the M mixed copies as one batch of M·B rows.

    Args:
        alpha: Beta(α, α) of the mixup copies (authors' configs: 2.0 on CIFAR, 1.0 on Tiny-ImageNet).
        ranking: ``"mrl"`` (M-RL, ``margin_ranking_loss``) or ``"mndcg"`` (``mixup_ndcg_loss``).
        margin: M-RL margin (authors: 2.0 on CIFAR, 1.0 on Tiny-ImageNet, on logits).
        weight: weight of the ranking term (authors: 0.1 for both).
        num_mixup: mixed copies M; None takes the authors' 1 for M-RL and 3 for M-NDCG.
        score: what M-RL compares: ``"logit"``, the largest logit (the authors' released code) or
            ``"prob"``, the largest softmax probability (the confidence of the paper's text, a
            commented-out option of that code). M-NDCG always uses probabilities.
        mode, p, pairing, stop_epoch, seed: of the mixup copies (authors: one λ per copy).
    """

    needs = "step"
    spatial_dims = (1, 3)

    def __init__(self, alpha: Any = 2.0, ranking: str = "mrl", margin: float = 2.0, weight: float = 0.1,
                 num_mixup: Optional[int] = None, score: str = "logit", mode: str = "batch", p: Any = 1.0,
                 pairing: Any = "random", stop_epoch: Optional[int] = None, seed: Optional[int] = None) -> None:
        super().__init__(alpha=alpha, mode=mode, p=p, pairing=pairing, stop_epoch=stop_epoch, seed=seed)
        self.ranking = check_choice(ranking, "ranking", RANKINGS)
        self.margin = check_non_negative(margin, "margin")
        self.weight = check_non_negative(weight, "weight")
        self.num_mixup = (1 if ranking == "mrl" else 3) if num_mixup is None else check_positive_int(num_mixup,
                                                                                                      "num_mixup")
        self.score = check_choice(score, "score", SCORES)
        self.inner = build_input_policy("mixup", "rankmixup", arg="the mixup", alpha=alpha, mode=mode, p=p,
                                        pairing=pairing, stop_epoch=stop_epoch)

    def setup(self, ctx) -> None:
        require_classification(ctx, "rankmixup")

    def training_step(self, x, y, ctx):
        clean_logits = logits_of(ctx, x)
        clean_batch = unmixed(x, y)
        loss = ctx.loss_fn(clean_logits, clean_batch)
        if not self.active:
            return clean_batch, loss
        copies = [self.inner(x, y, generator=self.generator) for _ in range(self.num_mixup)]
        mixed_logits = logits_of(ctx, torch.cat([c.x for c in copies])).view(self.num_mixup, x.shape[0], -1)
        k = clean_logits.shape[1]
        label_weight = torch.stack([c.soft_targets(k).amax(dim=1) for c in copies]).to(mixed_logits.dtype)
        if self.ranking == "mrl":
            if self.score == "logit":
                clean_score, mixed_score = clean_logits.amax(dim=1), mixed_logits.amax(dim=2)
            else:
                clean_score = clean_logits.softmax(dim=1).amax(dim=1)
                mixed_score = mixed_logits.softmax(dim=2).amax(dim=2)
            rank = margin_ranking_loss(clean_score, mixed_score, label_weight, self.margin)
        else:
            rank = mixup_ndcg_loss(clean_logits.softmax(dim=1).amax(dim=1), mixed_logits.softmax(dim=2).amax(dim=2),
                                   label_weight)
        return clean_batch, loss + self.weight * rank

    def preview(self, x, y, generator=None):
        """For openmix-show: one mixup copy. -> (MixedBatch, note)."""
        mb = self.inner(x, y, generator=self.generator if generator is None else generator)
        return mb, f"a mixed copy; only its confidence is ranked ({self.ranking}), the fit is on the clean rows"

    def cost_model_forwards(self) -> int:
        return 1 + self.num_mixup

    def extra_repr(self) -> str:
        return (f"ranking={self.ranking!r}, margin={self.margin}, weight={self.weight}, num_mixup={self.num_mixup}, "
                f"score={self.score!r}")
