"""ResizeMix's resize-and-paste."""
from __future__ import annotations

import functools
import math
from typing import List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .boxes import batch_box_mask
from .memory import DeferredMask, fresh_copy, new_like, row_by_row


INTERPOLATIONS = ("nearest", "bilinear")


def resize_paste(x: torch.Tensor, index: torch.Tensor, size: torch.Tensor, offset: torch.Tensor,
                 shared: bool = False, inplace: bool = False, interpolation: str = "nearest",
                 out: Optional[torch.Tensor] = None, defer_mask: bool = False):
    """Paste each row's whole partner, resized to ``size``, at ``offset``.

    ``interpolation`` is ``F.interpolate``'s ``"nearest"`` or ``"bilinear"`` (align_corners=False).
    On the CPU every patch is exactly ``F.interpolate`` of the partner (small nearest rows: one
    gather for the whole batch; otherwise row by row); elsewhere the per-row path samples it
    with ``grid_sample`` (no host sync).

    x: (B, C, L) or (B, C, H, W), float or uint8 (resized in float32, rounded); index: (B,) long;
    size, offset: (B, d) long with ``offset + size <= spatial`` and ``size >= 0``.
    ``shared=True`` promises every row has the same size and offset (batch mode), which allows
    one ``F.interpolate`` and a slice copy. ``inplace=True`` writes the result into ``x``;
    ``out`` (like x) receives it without a batch-sized allocation.
    Returns (mixed x, own-image mask (B, 1, *spatial): 0 where pasted, 1 elsewhere; float, in
    x's dtype for float x; expanded from one row when ``shared``). With ``defer_mask=True``, on
    the CPU (whose paths paste without the mask) a ``DeferredMask`` that makes it when
    ``MixedBatch.mask`` is first read.
    """
    if out is not None and out.stride() != x.stride():      # an out buffer in another layout
        result, mask = resize_paste(x, index, size, offset, shared, inplace, interpolation, defer_mask=defer_mask)
        return out.copy_(result), mask
    spatial = tuple(x.shape[2:])
    mask_dtype = x.dtype if x.is_floating_point() else torch.float32

    def make_mask():
        start, sides = (offset[:1], size[:1]) if shared else (offset, size)
        return batch_box_mask(start, start + sides, x.shape[0], spatial, mask_dtype)
    if not shared and x.device.type != "cpu":
        mask = make_mask()
        return _paste_sampled(x, index, size, offset, mask, inplace, interpolation, out), mask
    mask = DeferredMask(make_mask) if defer_mask else make_mask()        # the CPU paths below paste without it
    flat = _flat_spatial(x)
    if interpolation == "nearest" and flat is not None and not shared and x[0].numel() <= PADDED_MAX_ROW:
        scattered = _gather_nearest(x, flat, index, size, offset)               # read before any write
        result = x if inplace else (fresh_copy(x) if out is None else out.copy_(x))
        if scattered is not None:
            _scatter_into(result, *scattered)
        return result, mask
    if not inplace and not shared and row_by_row(x):
        return _paste_rows(x, index, size.tolist(), offset.tolist(), interpolation,
                           new_like(x) if out is None else out), mask
    pastes = _patches(x, index, size.tolist(), offset.tolist(), shared, interpolation)   # before any write
    result = x if inplace else (fresh_copy(x) if out is None else out.copy_(x))
    for row, at, box, patch in pastes:
        result[_region(row, at, box)] = patch
    return result, mask


# per-row boxes on rows up to this many elements are pasted with one gather and one scatter for
# the whole batch; larger rows one by one (the padded index outweighs the per-row calls). Measured
# on one CPU thread, ResizeMix elem: 256x3x32x32 2.7 ms gathered vs 6.2 ms row by row; 128x3x64x64
# 9.0 vs 5.8 ms
PADDED_MAX_ROW = 3 * 48 * 48


def _paste_rows(x: torch.Tensor, index: torch.Tensor, boxes: list, offsets: list, interpolation: str,
                out: torch.Tensor) -> torch.Tensor:
    """Into ``out`` (not x), one row at a time: the row, then its partner's patch over it, while
    the row is in cache."""
    for i, (j, box, at) in enumerate(zip(index.tolist(), boxes, offsets)):
        out[i].copy_(x[i])
        if min(box) > 0:
            patch = _resized(x[j:j + 1], box, interpolation)[0]
            out[_region(i, at, box)] = patch
    return out


def _region(row, at: list, box: list) -> tuple:
    """The index of a box of sides ``box`` at ``at`` in row(s) ``row``, every channel."""
    return (row, slice(None)) + tuple(slice(s, s + b) for s, b in zip(at, box))


def _patches(x: torch.Tensor, index: torch.Tensor, boxes: list, offsets: list, shared: bool,
             interpolation: str) -> list:
    """[(row or all rows, offset, box, patch (B, C, *box) or (C, *box))] for slice copies."""
    if shared:
        if min(boxes[0]) <= 0:
            return []
        return [(slice(None), offsets[0], boxes[0], _resized(x, boxes[0], interpolation).index_select(0, index))]
    partners = index.tolist()
    return [(i, at, box, _resized(x[j:j + 1], box, interpolation)[0])
            for i, (j, box, at) in enumerate(zip(partners, boxes, offsets)) if min(box) > 0]


def nearest_source(n_in: int, n_out, device=None) -> torch.Tensor:
    """The input index ``F.interpolate(mode="nearest")`` reads for each output index, PyTorch's rule
    ``min(floor(i * (float32(n_in) / n_out)), n_in - 1)`` computed in float32. ``n_out``: an int,
    giving (n_out,) long, or (R, 1) long sizes, giving (R, max size) (positions past a row's own
    size repeat its last one)."""
    one = isinstance(n_out, int)
    if one:
        n_out = torch.tensor([[n_out]], device=device)
    positions = torch.arange(int(n_out.max()), device=n_out.device).unsqueeze(0)
    positions = torch.minimum(positions, n_out - 1)
    scale = torch.tensor(float(n_in), dtype=torch.float32, device=n_out.device) / n_out.float()
    src = torch.floor(positions.float() * scale).long().clamp_(max=n_in - 1)
    return src[0] if one else src


@functools.lru_cache(maxsize=1024)
def _nearest_picks(spatial: tuple, box: tuple) -> torch.Tensor:
    """(prod(box),) long: flat positions in an image of size ``spatial`` that nearest reads for
    the resized ``box``, row-major (the same float32 rule as ``nearest_source``, in numpy)."""
    picks = np.zeros((), dtype=np.int64)
    for k, (n_in, n_out) in enumerate(zip(spatial, box)):
        scale = np.float32(n_in) / np.float32(n_out)
        src = np.minimum(np.floor(np.arange(n_out, dtype=np.float32) * scale).astype(np.int64), n_in - 1)
        picks = picks[..., None] + src * math.prod(spatial[k + 1:])
    return torch.from_numpy(np.ascontiguousarray(picks).reshape(-1))


def _flat_spatial(x: torch.Tensor):
    """(view, dim): x as (B, C, N) with dim 2, or channels_last x as (B, N, C) with dim 1, where N
    is the flattened spatial size; None for other layouts."""
    batch, channels = x.shape[:2]
    if x.is_contiguous():
        return x.view(batch, channels, -1), 2
    if x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return x.permute(0, 2, 3, 1).reshape(batch, -1, channels), 1
    return None


def _gather_nearest(x: torch.Tensor, flat: tuple, index: torch.Tensor, size: torch.Tensor,
                    offset: torch.Tensor):
    """(target, values) for ``scatter_`` on the flattened result: every row's partner resized by
    nearest and placed at its offset. Boxes are padded to the largest; a padded position repeats
    the row's last one, so duplicate targets get the same value. Rows with an empty box copy
    their own first pixel onto itself. None when no row pastes anything."""
    view, dim = flat
    spatial = tuple(x.shape[2:])
    empty = (size <= 0).any(dim=1, keepdim=True)                                # (B, 1)
    if bool(empty.all()):
        return None
    size = size.masked_fill(empty, 0)
    source = target = None
    for k, n in enumerate(spatial):
        widest = int(size[:, k].max())
        reads, places = (t[:, :widest].index_select(0, size[:, k]) for t in _nearest_tables(n))  # (B, m)
        stride = math.prod(spatial[k + 1:])
        places = places + offset[:, k:k + 1].masked_fill(empty, 0)
        if source is None:
            source, target = reads * stride, places * stride
        else:
            source = source.unsqueeze(-1) + (reads * stride).unsqueeze(1)
            target = target.unsqueeze(-1) + (places * stride).unsqueeze(1)
    source, target = source.flatten(1), target.flatten(1)                       # (B, T)
    rows = torch.arange(x.shape[0], device=x.device)
    partner_rows = torch.where(empty.squeeze(1), rows, index)
    if dim == 1:       # channels_last: whole pixels (C values together) by row index
        n = view.shape[1]
        pixels = view.reshape(-1, view.shape[2])
        values = pixels.index_select(0, (partner_rows.unsqueeze(1) * n + source).flatten())
        return (rows.unsqueeze(1) * n + target).flatten(), values
    shape = (x.shape[0], x.shape[1], source.shape[1])
    partners = view.index_select(0, partner_rows)
    return target.unsqueeze(1).expand(shape), torch.gather(partners, 2, source.unsqueeze(1).expand(shape))


def _scatter_into(result: torch.Tensor, target: torch.Tensor, values: torch.Tensor) -> None:
    """Writes ``_gather_nearest``'s values into result (in result's layout)."""
    view, dim = _flat_spatial(result)
    if dim == 1:
        view.reshape(-1, view.shape[2]).index_copy_(0, target, values)
    else:
        view.scatter_(2, target, values)


@functools.lru_cache(maxsize=64)
def _nearest_tables(n: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(reads, places): (n + 1, n) long each; row s is, for a box of side s, the input index
    nearest reads at each output position and that position, both padded by repeating the last
    one (row 0, an empty box: zeros). CPU tensors, made once per side."""
    reads = torch.zeros((n + 1, n), dtype=torch.long)
    places = torch.zeros((n + 1, n), dtype=torch.long)
    for s in range(1, n + 1):
        src = nearest_source(n, s)
        reads[s, :s], reads[s, s:] = src, src[-1]
        places[s] = torch.arange(n).clamp_(max=s - 1)
    return reads, places


# nearest patches of at least this many pixels (NCHW) come from F.interpolate itself (the
# reference the gather reproduces): its kernel runs on every intra-op thread where the gather
# runs on one, so ResizeMix at 64x3x224x224 on 2 threads took 1.23-1.38x less time, and the
# same on 1 thread; for 4096 pixels and fewer its kernel measured 2-5x slower than the gather
INTERPOLATE_MIN_PIXELS = 100 * 100


def _resized(x: torch.Tensor, box: List[int], interpolation: str) -> torch.Tensor:
    """(n, C, *box): ``F.interpolate`` of every row of x (n, C, *spatial) to ``box``; uint8 is
    resized in float32 and rounded."""
    flat = _flat_spatial(x)
    if interpolation == "nearest" and x.ndim == 4 and x.is_contiguous() and math.prod(box) >= INTERPOLATE_MIN_PIXELS:
        return F.interpolate(x, size=list(box), mode="nearest")
    if interpolation == "nearest" and flat is not None:     # one gather of the pixels nearest reads
        view, dim = flat
        picks = _nearest_picks(tuple(x.shape[2:]), tuple(box))
        if dim == 2:       # a 2-D index_select along dim 1 has a fast kernel (3-D does not)
            return view.reshape(-1, view.shape[2]).index_select(1, picks).view(*x.shape[:2], *box)
        small = torch.gather(view, 1, picks.view(1, -1, 1).expand(view.shape[0], -1, view.shape[2]))
        return small.view(x.shape[0], *box, x.shape[1]).movedim(-1, 1)
    if interpolation == "nearest":
        for k, (n_in, n_out) in enumerate(zip(x.shape[2:], box)):
            x = x.index_select(2 + k, nearest_source(n_in, n_out, x.device))
        return x
    source = x if x.is_floating_point() else x.float()
    one_d = source.ndim == 3
    small = F.interpolate(source.unsqueeze(2) if one_d else source, size=([1] + box) if one_d else box,
                          mode="bilinear", align_corners=False)
    small = small.squeeze(2) if one_d else small
    if not x.is_floating_point():
        small = small.round_().clamp_(0, 255).to(x.dtype)
    return small


def _paste_sampled(x: torch.Tensor, index: torch.Tensor, size: torch.Tensor, offset: torch.Tensor,
                   mask: torch.Tensor, inplace: bool, interpolation: str, out: Optional[torch.Tensor]) -> torch.Tensor:
    """Per-row sizes without a host sync: every output pixel samples the partner through
    ``grid_sample``. bilinear: the normalised coordinate (2u+1)/size - 1 is F.interpolate's source
    point; nearest: F.interpolate takes source pixel floor(u * n / size), given as its centre."""
    spatial = tuple(x.shape[2:])
    one_d = len(spatial) == 1
    img = x.unsqueeze(2) if one_d else x                                   # 1-D as (B, C, 1, L)
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    coords = []
    for k, n in enumerate(spatial):
        pos = torch.arange(n, device=x.device, dtype=dtype).unsqueeze(0) - offset[:, k:k + 1].to(dtype)
        box = size[:, k:k + 1].clamp(min=1).to(dtype)
        if interpolation == "nearest":
            source = torch.floor(pos.clamp(min=0) * (n / box)).clamp_(max=n - 1)
            coords.append((2 * source + 1) / n - 1)                                    # (B, n)
        else:
            coords.append((2 * pos + 1) / box - 1)                                     # (B, n)
    if one_d:
        gx = coords[0][:, None, :]
        gy = torch.zeros_like(gx)
    else:
        gy = coords[0][:, :, None].expand(-1, spatial[0], spatial[1])
        gx = coords[1][:, None, :].expand(-1, spatial[0], spatial[1])
    grid = torch.stack((gx, gy), dim=-1)
    pasted = F.grid_sample(img.index_select(0, index).to(dtype), grid, mode=interpolation,
                           padding_mode="border", align_corners=False)
    pasted = pasted.squeeze(2) if one_d else pasted
    if not x.is_floating_point():
        pasted = pasted.round_().clamp_(0, 255)
    pasted = pasted.to(x.dtype)
    if inplace:
        return x.copy_(torch.where(mask.bool(), x, pasted))
    result = torch.where(mask.bool(), x, pasted)
    return result if out is None else out.copy_(result)
