"""AlignMix (Venkataramanan et al. 2022): mix feature maps after aligning them by optimal transport.

Per batch: with probability ``p_align`` the last feature map is mixed after alignment, otherwise
the input is mixed (plain mixup). λ ~ Beta(2, 2). Alignment: the feature maps of a row and its
partner as point sets A, A' (B, r, C) with r = H·W; cost ‖A_i − A'_j‖²; a log-domain Sinkhorn plan
P with uniform marginals (ε 0.1, ≤ 100 iterations, tolerance 0.1, batched, no host sync per
iteration), R = r·P (no gradient). Direction drawn at random: ``Ã = R A'`` (the partner arranged
like the row) mixed as λA + (1−λ)Ã, or ``Ã' = Rᵀ A`` mixed as λÃ' + (1−λ)A'. Labels mixed with λ.

Vision-transformer tokens (layout ``FeatureLayout.tokens(p)``, h: (B, N, C)): the point sets are the
N − p patch tokens (positions = tokens, features = C), aligned and mixed exactly as above; the p
prefix tokens (class / register tokens, which have no position to align) are mixed linearly,
λ h + (1 − λ) h[index], like ManifoldMix.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from ..ops.sinkhorn import sinkhorn_plan
from .base import register_policy
from ..ops import blend_with_partner
from .manifoldmix import FeatureLayout, FeatureMixPlan, FeatureMixPolicy, resolve_layout


@register_policy("alignmix")
class AlignMix(FeatureMixPolicy):
    """AlignMix on the last feature map of the model split: channels-first (B, C, *spatial), or
    tokens (B, N, C) whose patch tokens are aligned and whose prefix tokens are mixed linearly.

    Args:
        alpha: Beta(α, α) for λ (authors: 2).
        p_align: probability (per batch) of alignment mixing; otherwise input mixup (authors: 0.5).
        eps, max_iter, tol: Sinkhorn entropy weight, iteration cap and tolerance on the L1 change
            of the dual potential (authors: 0.1, 100, 0.1).
        cost_scale: ``"none"`` (authors: the raw squared distances) or ``"mean"`` (divide each
            sample's cost by its mean, which makes ε relative and the plan converge in a few
            iterations but softer).
        check_every: Sinkhorn iterations between convergence checks (the only host syncs).
        mode, p, pairing, stop_epoch, seed: see ``MixPolicy``; the direction is drawn per row
            source too (one per batch in ``mode="batch"``, like the authors).
    """

    def __init__(self, alpha: Any = 2.0, p_align: float = 0.5, eps: float = 0.1, max_iter: int = 100,
                 tol: float = 0.1, cost_scale: str = "none", check_every: int = 10, mode: str = "batch",
                 p: Any = 1.0, pairing: Any = "random", stop_epoch: Optional[int] = None,
                 seed: Optional[int] = None) -> None:
        super().__init__(alpha=alpha, mode=mode, p=p, pairing=pairing, stop_epoch=stop_epoch, seed=seed)
        if isinstance(p_align, bool) or not isinstance(p_align, (int, float)) or not 0.0 <= p_align <= 1.0:
            raise ValueError(f"p_align must be a probability in [0, 1], got {p_align!r}")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or eps <= 0:
            raise ValueError(f"eps must be a number > 0, got {eps!r}")
        if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
            raise ValueError(f"max_iter must be an int >= 1, got {max_iter!r}")
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or tol < 0:
            raise ValueError(f"tol must be a number >= 0, got {tol!r}")
        if cost_scale not in ("none", "mean"):
            raise ValueError(f"cost_scale must be 'none' or 'mean', got {cost_scale!r}")
        if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
            raise ValueError(f"check_every must be an int >= 1, got {check_every!r}")
        self.p_align, self.eps, self.max_iter, self.tol = float(p_align), float(eps), max_iter, float(tol)
        self.cost_scale, self.check_every = cost_scale, check_every

    def choose_stage(self, num_stages: int, generator: torch.Generator) -> int:
        if num_stages < 1:
            return 0
        u = torch.rand(1, generator=generator, device=generator.device)
        return num_stages if float(u) < self.p_align else 0

    def sample_params(self, shape, generator, y=None):
        params = super().sample_params(shape, generator, y)
        direction = torch.rand(shape[0], generator=generator, device=generator.device) < 0.5
        params["direction"] = direction[params["rows"]]
        return params

    def make_plan(self, stage, params, num_stages):
        kind = "align" if stage != 0 else "linear"
        return FeatureMixPlan(stage, params["index"], params["lam"], params["mixed"], kind=kind,
                              extra={"direction": params["direction"]})

    def mix_features(self, h: torch.Tensor, plan: FeatureMixPlan,
                     layout: Optional[FeatureLayout] = None) -> torch.Tensor:
        """Aligned mix, same shape and dtype as h.

        layout None / channels-first: h (B, C, *spatial) with at least one spatial dim; the
        positions are the spatial positions. ``FeatureLayout.tokens(p)``: h (B, N, C); the N − p
        patch tokens are the positions (aligned as above), the first p prefix tokens are mixed
        linearly with λ (rows that do not mix keep their own tokens).
        """
        layout = resolve_layout(layout)
        layout.check(h)
        if layout.is_tokens:
            p = layout.num_prefix_tokens
            patches = self._align_mix(h[:, p:], plan)                              # (B, N - p, C)
            if p == 0:
                return patches
            index = plan.index.to(h.device)
            lam = plan.lam.to(h.device, torch.float32).view(-1, 1, 1)
            prefix = blend_with_partner(h[:, :p], index, lam)
            prefix = torch.where(plan.mixed.to(h.device).view(-1, 1, 1), prefix, h[:, :p])
            return torch.cat([prefix, patches], dim=1)
        if h.ndim < 3:
            raise ValueError(f"alignmix needs feature maps (B, C, *spatial) with spatial positions to align, "
                             f"got shape {tuple(h.shape)}")
        a = h.flatten(2).transpose(1, 2)                                         # (B, r, C)
        return self._align_mix(a, plan).transpose(1, 2).reshape(h.shape)

    def _align_mix(self, a: torch.Tensor, plan: FeatureMixPlan) -> torch.Tensor:
        """a: (B, r, C) point sets (r positions, C features) -> aligned mix (B, r, C)."""
        b = a.shape[0]
        index = plan.index.to(a.device)
        a_partner = a.index_select(0, index)
        r = a.shape[1]
        with torch.no_grad():
            feats = a.detach().float()
            plan_r = sinkhorn_plan(feats, feats.index_select(0, index), eps=self.eps, max_iter=self.max_iter,
                                   tol=self.tol, check_every=self.check_every,
                                   cost_scale=self.cost_scale) * r                # R = r P, (B, r, r)
        plan_r = plan_r.to(a.dtype)
        lam = plan.lam.to(a.device, a.dtype).view(b, 1, 1)
        aligned_partner = plan_r @ a_partner                                      # R A': partner at own positions
        aligned_own = plan_r.transpose(1, 2) @ a                                  # R^T A: own at partner's positions
        towards_own = torch.lerp(aligned_partner, a, lam)
        towards_partner = torch.lerp(a_partner, aligned_own, lam)
        direction = plan.extra["direction"].to(a.device).view(b, 1, 1)
        mixed = torch.where(direction, towards_partner, towards_own)
        return torch.where(plan.mixed.to(a.device).view(b, 1, 1), mixed, a)

    def extra_repr(self) -> str:
        return (f"p_align={self.p_align}, eps={self.eps}, max_iter={self.max_iter}, tol={self.tol}, "
                f"cost_scale={self.cost_scale!r}")
