"""Axis-aligned boxes in 1, 2 or 3 spatial dimensions."""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch

from .blend import blend_with_partner
from .memory import DeferredMask, fresh_copy, new_empty, new_like, row_by_row

# on the CPU, masks of images with at least this many pixels are filled row by row
FILL_MIN_PIXELS = 128 * 128
# on the CPU, rows of at least this many elements get their boxes by slice copies, one row at a
# time; smaller rows are blended with the mask in one batched call (fewer, larger operations)
BOX_COPY_MIN_ROW = 3 * 96 * 96


def box_bounds(lam: torch.Tensor, centre: torch.Tensor, spatial: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """CutMix boxes covering a fraction ``1 - lam`` before clipping.

    lam: (B,) in [0, 1]; centre: (B, d) uniform in [0, 1), scaled to a pixel per dim;
    spatial: the d sizes. Each side is ``floor(size * (1 - lam) ** (1 / d))`` (for 2-D the paper's
    ``W * sqrt(1 - lam)``), placed around the centre and clipped at the borders.
    Returns lo, hi: (B, d) long, the box is ``lo <= i < hi`` per dim.
    """
    sizes = torch.tensor(list(spatial), device=lam.device, dtype=torch.float64)
    ratio = (1.0 - lam.to(torch.float64)).clamp_(0.0, 1.0).pow_(1.0 / len(spatial))
    cut = torch.mul(sizes, ratio.unsqueeze(1)).floor_()              # whole numbers in float64:
    lo = torch.mul(centre.to(torch.float64), sizes).floor_().sub_(cut.div(2).floor_())   # exact
    hi = lo + cut
    zero = torch.zeros((), dtype=torch.float64, device=lam.device)
    return lo.clamp_(zero, sizes).long(), hi.clamp_(zero, sizes).long()


def box_inside(lo: torch.Tensor, hi: torch.Tensor, spatial: Sequence[int]) -> torch.Tensor:
    """(B, 1, *spatial) bool, True inside each row's box. lo, hi: (B, d) long."""
    batch, ndim = lo.shape
    inside = torch.ones((batch,) + (1,) * ndim, dtype=torch.bool, device=lo.device)
    for k, size in enumerate(spatial):
        ar = torch.arange(size, device=lo.device)
        along = (ar >= lo[:, k:k + 1]) & (ar < hi[:, k:k + 1])           # (B, size)
        shape = [batch] + [1] * ndim
        shape[1 + k] = size
        inside = inside & along.view(shape)
    return inside.unsqueeze(1)


def box_mask(lo: torch.Tensor, hi: torch.Tensor, spatial: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, 1, *spatial) in ``dtype``: 0 inside each row's box, 1 outside (the own-image weight).

    lo, hi: (B, d) long, the box is ``lo <= i < hi`` per dim. Built as 1 minus the outer product
    of per-dim indicators (one image-sized tensor, negated and shifted in place); on the CPU, images of at
    least FILL_MIN_PIXELS are filled with ones and each box zeroed by a slice (2.3x faster at
    64x224x224, where the outer product's broadcast costs more than the extra box writes).
    """
    batch, ndim = lo.shape
    if lo.device.type == "cpu" and math.prod(spatial) >= FILL_MIN_PIXELS and len(spatial) == ndim:
        mask = new_empty((batch, 1) + tuple(spatial), dtype, lo.device).fill_(1)
        for row, (start, stop) in enumerate(zip(lo.tolist(), hi.tolist())):
            mask[(row, 0) + tuple(slice(a, b) for a, b in zip(start, stop))] = 0
        return mask
    if len(spatial) != ndim:
        raise ValueError(f"spatial must hold {ndim} sizes, got {tuple(spatial)}")
    inside = None
    for k, size in enumerate(spatial):
        ar = torch.arange(size, device=lo.device)
        along = ((ar >= lo[:, k:k + 1]) & (ar < hi[:, k:k + 1])).to(dtype)        # (B, size)
        shape = [batch, 1] + [1] * ndim
        shape[2 + k] = size
        along = along.view(shape)
        inside = along if inside is None else inside * along
    # in place: no second image-sized tensor (addcmul with a 0-d one measured 2x slower)
    return inside.neg_().add_(1)


def batch_box_mask(lo: torch.Tensor, hi: torch.Tensor, batch: int, spatial: Sequence[int],
                   dtype: torch.dtype) -> torch.Tensor:
    """(batch, 1, *spatial) ``box_mask``; lo, hi of one row (a box shared by the batch) give one
    mask expanded over the batch."""
    mask = box_mask(lo, hi, spatial, dtype)
    return mask.expand(batch, -1, *spatial) if lo.shape[0] == 1 else mask


def mix_boxes(x: torch.Tensor, index: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, inplace: bool = False,
              out: Optional[torch.Tensor] = None, defer_mask: bool = False, overwrite: bool = False):
    """x with each row's box ``lo <= i < hi`` taken from its partner ``x[index]``: CutMix's paste.

    x: (B, C, *spatial); index: (B,) long; lo, hi: (B, d) long, or (1, d) for one box shared by
    every row (made once, its mask expanded). Returns (mixed, mask, lam): mask (B, 1, *spatial),
    0 inside the box; lam (B,) float64, the fraction outside. On the CPU, shared boxes and rows
    of at least BOX_COPY_MIN_ROW elements are pasted by slice copies without the mask, which is
    then made on demand (a ``DeferredMask``) when ``defer_mask``; otherwise the mask weights a
    blend, whose weights of exactly 0 and 1 give the same values as the copies. ``overwrite``:
    x is scratch, so the slice-copy paths paste into x itself (as ``inplace``), the same values.
    """
    batch, spatial = x.shape[0], tuple(x.shape[2:])
    shared = lo.shape[0] == 1
    lam = 1.0 - (hi - lo).prod(dim=1).to(torch.float64) / math.prod(spatial)
    lam = lam.expand(batch).clone() if shared else lam
    mask_dtype = x.dtype if x.is_floating_point() else torch.float32

    def make_mask():
        return batch_box_mask(lo, hi, batch, spatial, mask_dtype)
    if x.device.type == "cpu" and (shared or x[0].numel() >= BOX_COPY_MIN_ROW):    # no mask needed to mix
        result = copy_boxes(x, index, lo, hi, inplace or (overwrite and out is None), out)
        return result, DeferredMask(make_mask) if defer_mask else make_mask(), lam
    mask = make_mask()
    return blend_with_partner(x, index, mask, inplace=inplace, out=out), mask, lam


def copy_boxes(x: torch.Tensor, index: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, inplace: bool = False,
               out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``mix_boxes`` by slice copies (same arguments). Rows of at least BOX_COPY_MIN_ROW
    elements: in place, along the cycles of the pairing; into a new tensor (or ``out``), where
    ``row_by_row`` picks them, one at a time, the row then its box, while the row is in cache.
    Otherwise the whole batch, then one region (a shared box) or each row's box."""
    partners = index.tolist()
    boxes = [(slice(None),) + tuple(slice(a, b) for a, b in zip(l, h)) for l, h in zip(lo.tolist(), hi.tolist())]
    shared = len(boxes) == 1
    large = x[0].numel() >= BOX_COPY_MIN_ROW
    if large and (inplace or row_by_row(x)):
        boxes = boxes * len(partners) if shared else boxes
        if inplace:
            return paste_boxes_by_cycles(x, partners, boxes)
        result = new_like(x) if out is None else out
        for i, (j, box) in enumerate(zip(partners, boxes)):
            row = result[i]
            row.copy_(x[i])
            row[box] = x[j][box]
        return result
    if shared:
        region = (slice(None),) + boxes[0]
        pastes = [(region, x[region].index_select(0, index))]
    else:
        pastes = [((i,) + box, x[(j,) + box]) for i, (j, box) in enumerate(zip(partners, boxes))]
        if inplace:          # read every box before writing any
            pastes = [(where, patch.clone()) for where, patch in pastes]
    result = x if inplace else (fresh_copy(x) if out is None else out.copy_(x))
    for where, patch in pastes:
        result[where] = patch
    return result


def paste_boxes_by_cycles(x: torch.Tensor, partners: List[int], boxes: List[tuple]) -> torch.Tensor:
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
