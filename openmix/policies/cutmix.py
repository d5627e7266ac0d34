"""CutMix (Yun et al., 2019): paste a box of the partner; λ corrected to the clipped box."""
from __future__ import annotations

import torch

from ..ops.boxes import box_bounds, mix_boxes
from .base import MixPolicy, register_policy


@register_policy("cutmix")
class CutMix(MixPolicy):
    """A box with sides ``size * (1-λ)^(1/d)`` (d spatial dims; ``sqrt`` for images), centre
    uniform, clipped at the borders; then λ = 1 − clipped box volume / image volume, always.

    Inputs: (B, C, L), (B, C, H, W) or (B, C, D, H, W).
    """

    uses_mask = True
    defers_mask = True
    supports_out = True
    supports_uint8 = True
    overwrites = True
    spatial_dims = (1, 3)

    def sample_params(self, shape, generator, y=None):
        params = super().sample_params(shape, generator, y)
        centre = torch.rand(shape[0], len(shape) - 2, generator=generator, device=generator.device)
        params["centre"] = self.by_row(centre, params["rows"])
        return params

    def apply(self, x, params, out=None, defer_mask=False, overwrite=False, **context):
        rows = slice(0, 1) if self.mode == "batch" else slice(None)     # batch mode: row 0's box for all
        lo, hi = box_bounds(params["lam"][rows], params["centre"][rows], tuple(x.shape[2:]))
        return mix_boxes(x, params["index"], lo, hi, inplace=self.inplace, out=out, defer_mask=defer_mask,
                         overwrite=overwrite)
