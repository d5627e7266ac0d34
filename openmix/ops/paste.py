"""ResizeMix's resize-and-paste."""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F

from .boxes import box_mask


INTERPOLATIONS = ("nearest", "bilinear")


def resize_paste(x: torch.Tensor, index: torch.Tensor, size: torch.Tensor, offset: torch.Tensor,
                 shared: bool = False, inplace: bool = False, interpolation: str = "nearest",
                 out: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Paste each row's whole partner, resized to ``size``, at ``offset``.

    ``interpolation`` is ``F.interpolate``'s ``"nearest"`` or ``"bilinear"`` (align_corners=False).
    On the CPU every patch is exactly ``F.interpolate`` of the partner (rows grouped by patch
    size); elsewhere the per-row path samples it with ``grid_sample`` (no host sync).

    x: (B, C, L) or (B, C, H, W), float or uint8 (resized in float32, rounded); index: (B,) long;
    size, offset: (B, d) long with ``offset + size <= spatial`` and ``size >= 0``.
    ``shared=True`` promises every row has the same size and offset (batch mode), which allows
    one ``F.interpolate`` and a slice copy. ``inplace=True`` writes the result into ``x``;
    ``out`` (like x) receives it without a batch-sized allocation.
    Returns (mixed x, own-image mask (B, 1, *spatial): 0 where pasted, 1 elsewhere; float, in
    x's dtype for float x; expanded from one row when ``shared``).
    """
    spatial = tuple(x.shape[2:])
    mask_dtype = x.dtype if x.is_floating_point() else torch.float32
    if shared:
        mask = box_mask(offset[:1], offset[:1] + size[:1], spatial, mask_dtype).expand(x.shape[0], -1, *spatial)
    else:
        mask = box_mask(offset, offset + size, spatial, mask_dtype)
    if not shared and x.device.type != "cpu":
        return _paste_sampled(x, index, size, offset, mask, inplace, interpolation, out), mask
    rows = torch.arange(x.shape[0], device=x.device)
    groups = [(rows, size[0].tolist(), offset[:1])] if shared else _groups_by_size(size, offset)
    patches = [(r, box, at, _resized(x, index[r], box, interpolation))          # before any write
               for r, box, at in groups if min(box) > 0]
    result = x if inplace else (x.clone() if out is None else out.copy_(x))
    for r, box, at, patch in patches:
        if shared:
            region = (slice(None), slice(None)) + tuple(slice(s, s + b) for s, b in zip(at[0].tolist(), box))
            result[region] = patch
        else:
            _paste_rows(result, r, at, patch)
    return result, mask


def _groups_by_size(size: torch.Tensor, offset: torch.Tensor) -> List[tuple]:
    """[(rows (n,), box as a list, offsets (n, d))] for each distinct patch size."""
    key = size[:, 0].clone()
    for k in range(1, size.shape[1]):
        key = key * (int(size[:, k].max()) + 1) + size[:, k]
    sorted_key, order = torch.sort(key, stable=True)
    counts = torch.unique_consecutive(sorted_key, return_counts=True)[1].tolist()
    starts = [0]
    for c in counts[:-1]:
        starts.append(starts[-1] + c)
    boxes = size[order[starts]].tolist()
    return [(order[s:s + c], box, offset[order[s:s + c]]) for s, c, box in zip(starts, counts, boxes)]


def nearest_source(n_in: int, n_out: int, device=None) -> torch.Tensor:
    """(n_out,) long: the input index ``F.interpolate(mode="nearest")`` reads for each output index
    (PyTorch's rule: ``min(floor(i * float32(n_in / n_out)), n_in - 1)`` in float32)."""
    scale = torch.tensor(float(n_in), dtype=torch.float32, device=device) / n_out
    src = torch.floor(torch.arange(n_out, dtype=torch.float32, device=device) * scale).long()
    return src.clamp_(max=n_in - 1)


def _resized(x: torch.Tensor, partners: torch.Tensor, box: List[int], interpolation: str) -> torch.Tensor:
    """(n, C, *box): ``F.interpolate`` of the rows ``partners`` of x to ``box``."""
    if interpolation == "nearest":      # a gather of the pixels nearest reads: no full-size copy
        picks = [partners.view(-1, *([1] * len(box)))]
        for k, (n_in, n_out) in enumerate(zip(x.shape[2:], box)):
            shape = [1] * (1 + len(box))
            shape[1 + k] = n_out
            picks.append(nearest_source(n_in, n_out, x.device).view(shape))
        patch = x[(picks[0], slice(None), *picks[1:])]                      # (n, *box, C)
        return patch.movedim(-1, 1)
    source = x.index_select(0, partners)
    source = source if source.is_floating_point() else source.float()
    one_d = source.ndim == 3
    small = F.interpolate(source.unsqueeze(2) if one_d else source, size=([1] + box) if one_d else box,
                          mode="bilinear", align_corners=False)
    small = small.squeeze(2) if one_d else small
    if not x.is_floating_point():
        small = small.round_().clamp_(0, 255).to(x.dtype)
    return small


def _paste_rows(result: torch.Tensor, rows: torch.Tensor, at: torch.Tensor, patch: torch.Tensor) -> None:
    """result[rows[i], :, at[i] + box grid] = patch[i] for n rows at once; patch: (n, C, *box)."""
    box = patch.shape[2:]
    d = len(box)
    where = [rows.view(-1, *([1] * d))]
    for k, b in enumerate(box):
        shape = [1] * (1 + d)
        shape[1 + k] = b
        where.append(at[:, k].view(-1, *([1] * d)) + torch.arange(b, device=result.device).view(shape))
    result[(where[0], slice(None), *where[1:])] = patch.movedim(1, -1)      # (n, *box, C)


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
