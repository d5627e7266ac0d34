"""mixup (Zhang et al., 2018): x̃ = λx + (1−λ)x[index], λ ~ Beta(α, α)."""
from __future__ import annotations

from ..ops import blend_with_partner
from .base import MixPolicy, register_policy


@register_policy("mixup")
class Mixup(MixPolicy):
    """Linear interpolation of whole samples. Works on any (B, C, *spatial) input."""

    spatial_dims = (0, 3)
    supports_out = True
    supports_uint8 = True

    def apply(self, x, params, out=None, **context):
        lam = params["lam"]
        weight = lam.view(-1, *([1] * (x.ndim - 1)))
        return blend_with_partner(x, params["index"], weight, inplace=self.inplace, out=out), None, lam
