"""ResizeMix's resize-and-paste."""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

from .boxes import box_inside


INTERPOLATIONS = ("nearest", "bilinear")


def resize_paste(x: torch.Tensor, index: torch.Tensor, size: torch.Tensor, offset: torch.Tensor,
                 shared: bool = False, inplace: bool = False,
                 interpolation: str = "nearest") -> Tuple[torch.Tensor, torch.Tensor]:
    """Paste each row's whole partner, resized to ``size``, at ``offset``.

    ``interpolation`` is ``F.interpolate``'s ``"nearest"`` or ``"bilinear"`` (align_corners=False);
    the per-row path reproduces it with ``grid_sample``.

    x: (B, C, L) or (B, C, H, W); index: (B,) long; size, offset: (B, d) long with
    ``offset + size <= spatial`` and ``size >= 0``. ``shared=True`` promises every row has the same
    size and offset (batch mode), which allows one small ``F.interpolate`` and a slice copy.
    ``inplace=True`` writes the result into ``x``.
    Returns (mixed x, own-image mask (B, 1, *spatial) in x's dtype: 0 where pasted, 1 elsewhere).
    """
    spatial = tuple(x.shape[2:])
    one_d = len(spatial) == 1
    inside = box_inside(offset, offset + size, spatial)
    mask = (~inside).to(x.dtype)
    img = x.unsqueeze(2) if one_d else x                                   # 1-D as (B, C, 1, L)
    if shared:
        box = size[0].tolist()
        start = offset[0].tolist()
        out = x if inplace else x.clone()
        if min(box) == 0:
            return out, mask
        corners = {"align_corners": False} if interpolation == "bilinear" else {}
        small = F.interpolate(img, size=([1] + box) if one_d else box, mode=interpolation, **corners)
        small = small.squeeze(2) if one_d else small
        region = (slice(None), slice(None)) + tuple(slice(s, s + b) for s, b in zip(start, box))
        out[region] = small.index_select(0, index)
        return out, mask
    # per-row sizes: sample each output pixel of the box from the partner through grid_sample.
    # bilinear: the normalised coordinate (2u+1)/size - 1 is F.interpolate's source point;
    # nearest: F.interpolate takes source pixel floor(u * n / size), given as its centre
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
                           padding_mode="border", align_corners=False).to(x.dtype)
    pasted = pasted.squeeze(2) if one_d else pasted
    if inplace:
        return x.lerp_(pasted, 1.0 - mask), mask
    return pasted.lerp_(x, mask), mask
