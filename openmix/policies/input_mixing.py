"""Pieces shared by the step policies that mix the INPUT and then change the loss (TransMix, SUMix,
RegMixup, RankMixup, SMMix, AttentiveMix): the input-level policy they wrap, the training forward,
an unmixed batch, and the classification-only check."""
from __future__ import annotations

from typing import Any, Optional

import torch

from ..batch import MixedBatch
from .base import MixPolicy, build_policy, lam_dtype

__all__ = ["build_input_policy", "logits_of", "unmixed", "require_classification"]


def build_input_policy(name: str, owner: str, arg: str = "mask_policy", needs_mask: bool = False,
                       **kwargs: Any) -> MixPolicy:
    """The registered input-level policy ``name`` built with ``kwargs`` (alpha, mode, p, pairing, seed);
    a ValueError naming ``owner``'s argument ``arg`` when it is unknown, not input-level, or has no
    mask though one is needed."""
    from .step import StepPolicy
    try:
        policy = build_policy(name, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{owner} {arg}={name!r} could not be built: {exc}") from exc
    if isinstance(policy, StepPolicy) or getattr(policy, "needs", "input") != "input":
        raise ValueError(f"{owner} {arg} must be an input-level policy (needs='input'), got {name!r} "
                         f"(needs={getattr(policy, 'needs', None)!r})")
    if needs_mask and not getattr(policy, "uses_mask", False):
        raise ValueError(f"{owner} {arg} must return a mask (cutmix, fmix, gridmix, resizemix, saliencymix, "
                         f"smoothmix), got {name!r}")
    return policy


def logits_of(ctx: Any, x: torch.Tensor, **forward_kwargs: Any) -> torch.Tensor:
    """The training forward under the run's autocast: x (B, C, *spatial) -> float32 (B, K);
    a regression head's (B, 1) becomes (B,) as in the engine."""
    with ctx.autocast():
        out = ctx.forward(x, **forward_kwargs) if forward_kwargs else ctx.forward(x)
    out = out.float()
    if getattr(ctx, "task", "classification") == "regression" and out.ndim == 2 and out.shape[1] == 1:
        out = out.squeeze(1)
    return out


def unmixed(x: torch.Tensor, y: torch.Tensor, lam: Optional[torch.Tensor] = None) -> MixedBatch:
    """x as its own partner: index = arange(B), λ = 1 (the clean batch for a loss)."""
    b = x.shape[0]
    ones = torch.ones(b, device=x.device, dtype=lam_dtype(x)) if lam is None else lam
    return MixedBatch(x=x, y=y, index=torch.arange(b, device=x.device), lam=ones)


def require_classification(ctx: Any, name: str) -> None:
    if getattr(ctx, "task", "classification") != "classification":
        raise ValueError(f"mix.name={name!r} is a classification method, got a {ctx.task} dataset; use mixup, "
                         f"regmixup or cmixup for regression")


# ---- previews (openmix-show): what a step policy does to the input, with stand-ins for the model ----------------
def preview_grid(height: int, width: int, max_side: int = 8) -> tuple[int, int]:
    """A patch grid for previews: the largest g <= max_side dividing both sides, as (g, g)."""
    g = max(d for d in range(1, max_side + 1) if height % d == 0 and width % d == 0)
    return g, g


def brightness_per_patch(x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """x: (B, C, H, W) -> (B, h·w) mean brightness of each patch, normalised to sum 1 per row: the
    stand-in for a ViT's attention in previews (strokes and objects are where a trained model looks)."""
    act = torch.nn.functional.adaptive_avg_pool2d(x.float().mean(1, keepdim=True), grid).flatten(1)
    act = act - act.amin(dim=1, keepdim=True)
    return act / act.sum(dim=1, keepdim=True).clamp_min(1e-12)
