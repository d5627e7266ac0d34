"""CutMix (Yun et al., 2019): paste a box of the partner; λ corrected to the clipped box."""
from __future__ import annotations

import torch

from ..ops import box_bounds, box_inside, blend_with_partner
from .base import MixPolicy, register_policy


@register_policy("cutmix")
class CutMix(MixPolicy):
    """A box with sides ``size * (1-λ)^(1/d)`` (d spatial dims; ``sqrt`` for images), centre
    uniform, clipped at the borders; then λ = 1 − clipped box volume / image volume, always.

    Inputs: (B, C, L), (B, C, H, W) or (B, C, D, H, W).
    """

    uses_mask = True
    spatial_dims = (1, 3)

    def sample_params(self, shape, generator, y=None):
        params = super().sample_params(shape, generator, y)
        centre = torch.rand(shape[0], len(shape) - 2, generator=generator, device=generator.device)
        params["centre"] = centre[params["rows"]]
        return params

    def apply(self, x, params, **context):
        spatial = tuple(x.shape[2:])
        lo, hi = box_bounds(params["lam"], params["centre"], spatial)
        inside = box_inside(lo, hi, spatial)                                 # (B, 1, *spatial)
        lam = 1.0 - (hi - lo).prod(dim=1).to(torch.float64) / float(torch.tensor(spatial).prod())
        mask = (~inside).to(x.dtype)
        if self.mode == "batch" and x.device.type == "cpu":
            # one box for the batch: copy just the box region of the partners
            out = x if self.inplace else x.clone()
            region = (slice(None), slice(None)) + tuple(slice(a, b) for a, b in zip(lo[0].tolist(), hi[0].tolist()))
            out[region] = x[region].index_select(0, params["index"])
            return out, mask, lam
        return blend_with_partner(x, params["index"], mask, inplace=self.inplace), mask, lam
