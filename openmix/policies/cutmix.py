"""CutMix (Yun et al., 2019): paste a box of the partner; λ corrected to the clipped box."""
from __future__ import annotations

import math

import torch

from ..ops import box_bounds, box_mask, blend_with_partner
from ..ops.memory import new_like
from .base import MixPolicy, register_policy

# on the CPU, rows of at least this many elements get their boxes by slice copies, one row at a
# time; smaller rows are blended with the mask in one batched call (fewer, larger operations)
BOX_COPY_MIN_ROW = 3 * 96 * 96


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
        shared = self.mode == "batch"
        mask = box_mask(lo[:1] if shared else lo, hi[:1] if shared else hi, spatial, mask_dtype)
        mask = mask.expand(x.shape[0], -1, *spatial) if shared else mask
        if x.device.type == "cpu" and (shared or x[0].numel() >= BOX_COPY_MIN_ROW):
            return self.copy_boxes(x, params["index"], lo, hi, out), mask, lam
        return blend_with_partner(x, params["index"], mask, inplace=self.inplace, out=out), mask, lam

    def copy_boxes(self, x, index, lo, hi, out=None):
        """x with each row's box taken from its partner, by slice copies. Into a new tensor (or
        ``out``) with rows of at least BOX_COPY_MIN_ROW elements: row by row, the row then its
        box, while the row is in cache; otherwise the whole batch, then one region (``batch``
        mode) or each row's box. lo, hi: (B, d) long."""
        boxes = [(slice(None),) + tuple(slice(a, b) for a, b in zip(l, h)) for l, h in zip(lo.tolist(), hi.tolist())]
        partners = index.tolist()
        if self.mode == "batch":
            boxes = boxes[:1] * len(partners)
        if not self.inplace and x[0].numel() >= BOX_COPY_MIN_ROW:
            result = new_like(x) if out is None else out
            for i, (j, box) in enumerate(zip(partners, boxes)):
                result[i].copy_(x[i])
                result[i][box] = x[j][box]
            return result
        if self.mode == "batch":
            region = (slice(None),) + boxes[0]
            pastes = [(region, x[region].index_select(0, index))]
        else:
            pastes = [((i,) + box, x[(j,) + box]) for i, (j, box) in enumerate(zip(partners, boxes))]
            if self.inplace:          # read every box before writing any
                pastes = [(where, patch.clone()) for where, patch in pastes]
        result = x if self.inplace else (out if out is not None else new_like(x)).copy_(x)
        for where, patch in pastes:
            result[where] = patch
        return result

