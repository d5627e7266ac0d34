"""CutMix (Yun et al., 2019): paste a box of the partner; λ corrected to the clipped box."""
from __future__ import annotations

import math

import torch

from ..ops import box_bounds, box_mask, blend_with_partner
from .base import MixPolicy, register_policy


@register_policy("cutmix")
class CutMix(MixPolicy):
    """A box with sides ``size * (1-λ)^(1/d)`` (d spatial dims; ``sqrt`` for images), centre
    uniform, clipped at the borders; then λ = 1 − clipped box volume / image volume, always.

    Inputs: (B, C, L), (B, C, H, W) or (B, C, D, H, W).
    """

    uses_mask = True
    supports_out = True
    supports_uint8 = True
    spatial_dims = (1, 3)

    def sample_params(self, shape, generator, y=None):
        params = super().sample_params(shape, generator, y)
        centre = torch.rand(shape[0], len(shape) - 2, generator=generator, device=generator.device)
        params["centre"] = self.by_row(centre, params["rows"])
        return params

    def apply(self, x, params, out=None, **context):
        spatial = tuple(x.shape[2:])
        lo, hi = box_bounds(params["lam"], params["centre"], spatial)
        lam = 1.0 - (hi - lo).prod(dim=1).to(torch.float64) / math.prod(spatial)
        mask_dtype = x.dtype if x.is_floating_point() else torch.float32
        if self.mode == "batch" and x.device.type == "cpu":
            # one box for the batch: copy x, then just the box region of the partners
            mask = box_mask(lo[:1], hi[:1], spatial, mask_dtype).expand(x.shape[0], -1, *spatial)
            region = (slice(None), slice(None)) + tuple(slice(a, b) for a, b in zip(lo[0].tolist(), hi[0].tolist()))
            pasted = x[region].index_select(0, params["index"])
            result = x if self.inplace else (x.clone() if out is None else out.copy_(x))
            result[region] = pasted
            return result, mask, lam
        mask = box_mask(lo, hi, spatial, mask_dtype)
        return blend_with_partner(x, params["index"], mask, inplace=self.inplace, out=out), mask, lam
