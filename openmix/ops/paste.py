"""ResizeMix's resize-and-paste."""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

from .boxes import box_inside


def resize_paste(x: torch.Tensor, index: torch.Tensor, size: torch.Tensor, offset: torch.Tensor,
                 shared: bool = False, inplace: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """Paste each row's whole partner, resized (bilinear) to ``size``, at ``offset``.

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
        small = F.interpolate(img, size=([1] + box) if one_d else box, mode="bilinear", align_corners=False)
        small = small.squeeze(2) if one_d else small
        region = (slice(None), slice(None)) + tuple(slice(s, s + b) for s, b in zip(start, box))
        out[region] = small.index_select(0, index)
        return out, mask
    # per-row sizes: sample each output pixel of the box from the partner through grid_sample,
    # whose bilinear sampling with align_corners=False matches F.interpolate's
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    coords = []
    for k, n in enumerate(spatial):
        pos = torch.arange(n, device=x.device, dtype=dtype).unsqueeze(0) - offset[:, k:k + 1].to(dtype)
        coords.append((2 * pos + 1) / size[:, k:k + 1].clamp(min=1).to(dtype) - 1)   # (B, n)
    if one_d:
        gx = coords[0][:, None, :]
        gy = torch.zeros_like(gx)
    else:
        gy = coords[0][:, :, None].expand(-1, spatial[0], spatial[1])
        gx = coords[1][:, None, :].expand(-1, spatial[0], spatial[1])
    grid = torch.stack((gx, gy), dim=-1)
    pasted = F.grid_sample(img.index_select(0, index).to(dtype), grid, mode="bilinear",
                           padding_mode="border", align_corners=False).to(x.dtype)
    pasted = pasted.squeeze(2) if one_d else pasted
    if inplace:
        return x.lerp_(pasted, 1.0 - mask), mask
    return torch.lerp(pasted, x, mask), mask
