"""CutMix (Yun et al., 2019): paste a box of the partner; λ corrected to the clipped box."""
from __future__ import annotations

import math

import torch

from ..ops import box_bounds, box_mask, blend_with_partner
from ..ops.memory import DeferredMask, fresh_copy, new_like, row_by_row
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
    defers_mask = True
    supports_out = True
    supports_uint8 = True
    spatial_dims = (1, 3)

    def sample_params(self, shape, generator, y=None):
        params = super().sample_params(shape, generator, y)
        centre = torch.rand(shape[0], len(shape) - 2, generator=generator, device=generator.device)
        params["centre"] = self.by_row(centre, params["rows"])
        return params

    def apply(self, x, params, out=None, defer_mask=False, **context):
        spatial = tuple(x.shape[2:])
        lo, hi = box_bounds(params["lam"], params["centre"], spatial)
        lam = 1.0 - (hi - lo).prod(dim=1).to(torch.float64) / math.prod(spatial)
        mask_dtype = x.dtype if x.is_floating_point() else torch.float32
        shared = self.mode == "batch"

        def make_mask():
            mask = box_mask(lo[:1] if shared else lo, hi[:1] if shared else hi, spatial, mask_dtype)
            return mask.expand(x.shape[0], -1, *spatial) if shared else mask
        if x.device.type == "cpu" and (shared or x[0].numel() >= BOX_COPY_MIN_ROW):    # no mask needed to mix
            result = self.copy_boxes(x, params["index"], lo, hi, out)
            return result, DeferredMask(make_mask) if defer_mask else make_mask(), lam
        mask = make_mask()
        return blend_with_partner(x, params["index"], mask, inplace=self.inplace, out=out), mask, lam

    def copy_boxes(self, x, index, lo, hi, out=None):
        """x with each row's box taken from its partner, by slice copies. Rows of at least
        BOX_COPY_MIN_ROW elements: in place, along the cycles of the pairing; into a new tensor
        (or ``out``), where ``row_by_row`` picks them, one at a time, the row then its box, while
        the row is in cache. Otherwise the whole batch, then one region (``batch`` mode) or each
        row's box. lo, hi: (B, d) long."""
        boxes = [(slice(None),) + tuple(slice(a, b) for a, b in zip(l, h)) for l, h in zip(lo.tolist(), hi.tolist())]
        partners = index.tolist()
        if self.mode == "batch":
            boxes = boxes[:1] * len(partners)
        large = x[0].numel() >= BOX_COPY_MIN_ROW
        if large and self.inplace:
            return paste_boxes_by_cycles(x, partners, boxes)
        if large and not self.inplace and row_by_row(x):
            result = new_like(x) if out is None else out
            for i, (j, box) in enumerate(zip(partners, boxes)):
                row = result[i]
                row.copy_(x[i])
                row[box] = x[j][box]
            return result
        if self.mode == "batch":
            region = (slice(None),) + boxes[0]
            pastes = [(region, x[region].index_select(0, index))]
        else:
            pastes = [((i,) + box, x[(j,) + box]) for i, (j, box) in enumerate(zip(partners, boxes))]
            if self.inplace:          # read every box before writing any
                pastes = [(where, patch.clone()) for where, patch in pastes]
        result = x if self.inplace else (fresh_copy(x) if out is None else out.copy_(x))
        for where, patch in pastes:
            result[where] = patch
        return result


def paste_boxes_by_cycles(x, partners, boxes):
    """In place, x[i][boxes[i]] = x[partners[i]][boxes[i]] for every row as if all were read
    first. Walking each cycle i -> partners[i] -> ..., a row's partner is still unwritten when
    the row is done, except the partner of the cycle's last row: the cycle's first row, whose
    needed box is saved before the walk (one box per cycle instead of one per row)."""
    done = [False] * len(partners)
    for start in range(len(partners)):
        if done[start] or partners[start] == start:
            continue
        last = start
        while partners[last] != start:          # the row whose partner is the cycle's first row
            last = partners[last]
        saved = x[start][boxes[last]].clone()
        row = start
        while not done[row]:
            done[row] = True
            nxt = partners[row]
            x[row][boxes[row]] = saved if nxt == start else x[nxt][boxes[row]]
            row = nxt
    return x
