"""ManifoldMix (Verma et al. 2019): mixup of the hidden state at a randomly chosen stage.

Feature-level (``needs = "features"``): the engine splits the model into ``stages`` and a
``head`` (``logits = head(stages[-1](...stages[0](x)))``) and asks the policy for a plan::

    plan = policy.plan(x, y, num_stages=len(stages), generator=g)
    if plan.stage == 0: x = plan.mix_input(x)                 # mix the input itself
    else: h = policy.mix_features(h, plan, layout=layouts[plan.stage - 1])   # output of stages[plan.stage - 1]
    mb = plan.batch(x, y)                                      # MixedBatch for the loss (mask None)

``layout`` (a ``FeatureLayout``) says how the hidden state is laid out: channels-first
``(B, C, *spatial)`` (CNNs; the default when omitted) or tokens ``(B, N, C)`` whose first
``num_prefix_tokens`` tokens are class/register tokens (vision transformers).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Sequence

import torch

from ..batch import MixedBatch
from ..features import CHANNELS_FIRST, FeatureLayout, resolve_layout
from ..ops import blend_with_partner
from .base import MixPolicy, lam_dtype, register_policy

__all__ = ["FeatureLayout", "CHANNELS_FIRST", "FeatureMixPlan", "FeatureMixPolicy", "ManifoldMix"]


@dataclass
class FeatureMixPlan:
    """What one feature-level mixing step does.

    stage: 0 mixes the input, k >= 1 the output of ``stages[k-1]`` (a Python int).
    index: (B,) long partners; lam: (B,) weight of each row's own sample and label.
    mixed: (B,) bool, rows that mix (the others keep their own sample, lam 1).
    extra: policy-specific parameters (e.g. AlignMix's alignment direction per row).
    """

    stage: int
    index: torch.Tensor
    lam: torch.Tensor
    mixed: torch.Tensor
    kind: str = "linear"
    extra: Dict[str, torch.Tensor] = field(default_factory=dict)

    def mix_input(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, *spatial) -> lam * x + (1 - lam) * x[index] (stage 0 plans; identity otherwise)."""
        if self.stage != 0:
            return x
        lam = self.lam.to(x.device)
        return blend_with_partner(x, self.index.to(x.device), lam.view(-1, *([1] * (x.ndim - 1))))

    def batch(self, x: torch.Tensor, y: torch.Tensor) -> MixedBatch:
        """The MixedBatch the loss sees: x as used (B, C, *spatial), y as given, no mask."""
        return MixedBatch(x=x, y=y, index=self.index.to(x.device), lam=self.lam.to(x.device, lam_dtype(x)),
                          mask=None)


class FeatureMixPolicy(MixPolicy):
    """Base of the feature-level policies: ``plan`` draws everything, ``mix_features`` applies it."""

    needs = "features"
    spatial_dims = (0, 3)

    def __call__(self, x, y, generator=None, **context):
        raise TypeError(f"{type(self).__name__} mixes hidden features (needs='features'): use "
                        f"plan = policy.plan(x, y, num_stages, generator), plan.mix_input(x) or "
                        f"policy.mix_features(h, plan) inside the model, and plan.batch(x, y) for the loss "
                        f"(the openmix training engine does this); it cannot run in MixCollate or DeviceMixer")

    def choose_stage(self, num_stages: int, generator: torch.Generator) -> int:
        raise NotImplementedError

    def plan(self, x: torch.Tensor, y: torch.Tensor, num_stages: int,
             generator: Optional[torch.Generator] = None) -> FeatureMixPlan:
        """Draw the stage, partners and λ for one batch. x: (B, C, *spatial); y: (B,) or (B, K)."""
        if not isinstance(x, torch.Tensor) or x.ndim < 2:
            raise ValueError(f"x must be a tensor of shape (B, C, *spatial), got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        if isinstance(num_stages, bool) or not isinstance(num_stages, int) or num_stages < 0:
            raise ValueError(f"num_stages must be an int >= 0 (len(stages) of the model split), got {num_stages!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        generator = self.generator if generator is None else generator
        b = x.shape[0]
        if not self.active or self.alpha == 0.0 or self.p == 0.0:
            rows = torch.arange(b, device=x.device)
            return FeatureMixPlan(0, rows, torch.ones(b, device=x.device), torch.zeros(b, dtype=torch.bool,
                                                                                         device=x.device))
        stage = self.choose_stage(num_stages, generator)
        params = self.sample_params(x.shape, generator, y)
        params = {k: v.to(x.device, non_blocking=True) for k, v in params.items()}
        return self.make_plan(stage, params, num_stages)

    def make_plan(self, stage: int, params: Dict[str, torch.Tensor], num_stages: int) -> FeatureMixPlan:
        return FeatureMixPlan(stage, params["index"], params["lam"], params["mixed"])

    def mix_features(self, h: torch.Tensor, plan: FeatureMixPlan,
                     layout: Optional[FeatureLayout] = None) -> torch.Tensor:
        """h: output of ``stages[plan.stage - 1]``, laid out as ``layout`` (None: channels-first
        (B, C, *spatial); ``FeatureLayout.tokens(p)``: (B, N, C)) -> mixed, same shape and dtype."""
        raise NotImplementedError


@register_policy("manifoldmix")
class ManifoldMix(FeatureMixPolicy):
    """Mixup of the hidden state at a stage drawn uniformly from ``layers`` per batch.

    Args:
        alpha: Beta(α, α) for λ (CIFAR: 2.0; ImageNet: 0.2).
        layers: candidate stages: 0 = the input, k = the output of ``stages[k-1]``. The default
            (0, 1, 2) is the authors' choice for ResNets (input, after layer 1, after layer 2);
            stages beyond the model's ``num_stages`` are dropped.
        mode, p, pairing, stop_epoch, seed: see ``MixPolicy``.
    """

    def __init__(self, alpha: Any = 2.0, layers: Sequence[int] = (0, 1, 2), mode: str = "batch", p: Any = 1.0,
                 pairing: Any = "random", stop_epoch: Optional[int] = None, seed: Optional[int] = None) -> None:
        super().__init__(alpha=alpha, mode=mode, p=p, pairing=pairing, stop_epoch=stop_epoch, seed=seed)
        if (isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence) or not layers
                or any(isinstance(k, bool) or not isinstance(k, int) or k < 0 for k in layers)):
            raise ValueError(f"layers must be a non-empty list of stage numbers >= 0 (0 = the input), got {layers!r}")
        self.layers = tuple(sorted(set(int(k) for k in layers)))

    def choose_stage(self, num_stages: int, generator: torch.Generator) -> int:
        allowed = [k for k in self.layers if k <= num_stages]
        if not allowed:
            raise ValueError(f"manifoldmix layers={list(self.layers)} has no stage in 0..{num_stages} for a model "
                             f"split into {num_stages} stages")
        draw = torch.randint(len(allowed), (1,), generator=generator, device=generator.device)
        return allowed[int(draw)] if len(allowed) > 1 else allowed[0]

    def mix_features(self, h: torch.Tensor, plan: FeatureMixPlan,
                     layout: Optional[FeatureLayout] = None) -> torch.Tensor:
        """λ h + (1 − λ) h[index] elementwise, so the same for every layout (channels-first maps and
        tokens (B, N, C), prefix tokens included); ``layout`` is only checked against h."""
        resolve_layout(layout).check(h)
        lam = plan.lam.to(h.device, torch.float32)
        return blend_with_partner(h, plan.index.to(h.device), lam.view(-1, *([1] * (h.ndim - 1))))

    def extra_repr(self) -> str:
        return f"layers={list(self.layers)}"
