"""Axis-aligned boxes in 1, 2 or 3 spatial dimensions."""
from __future__ import annotations

import math
from typing import Sequence, Tuple

import torch

from .memory import new_empty

# on the CPU, masks of images with at least this many pixels are filled row by row
FILL_MIN_PIXELS = 128 * 128


def box_bounds(lam: torch.Tensor, centre: torch.Tensor, spatial: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """CutMix boxes covering a fraction ``1 - lam`` before clipping.

    lam: (B,) in [0, 1]; centre: (B, d) uniform in [0, 1), scaled to a pixel per dim;
    spatial: the d sizes. Each side is ``floor(size * (1 - lam) ** (1 / d))`` (for 2-D the paper's
    ``W * sqrt(1 - lam)``), placed around the centre and clipped at the borders.
    Returns lo, hi: (B, d) long, the box is ``lo <= i < hi`` per dim.
    """
    sizes = torch.tensor(list(spatial), device=lam.device, dtype=torch.float64)
    ratio = (1.0 - lam.to(torch.float64)).clamp_(0.0, 1.0).pow(1.0 / len(spatial))
    cut = torch.floor(sizes * ratio.unsqueeze(1)).long()
    centre_px = torch.floor(centre.to(torch.float64) * sizes).long()
    lo = centre_px - cut // 2
    hi = lo + cut
    upper = sizes.long()
    return lo.clamp(min=0).minimum(upper), hi.clamp(min=0).minimum(upper)


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
    of per-dim indicators, so the full-size tensor is written once; on the CPU, images of at
    least FILL_MIN_PIXELS are filled with ones and each box zeroed by a slice (2.3x faster at
    64x224x224, where the outer product's broadcast costs more than the extra box writes).
    """
    batch, ndim = lo.shape
    if lo.device.type == "cpu" and math.prod(spatial) >= FILL_MIN_PIXELS and len(spatial) == ndim:
        mask = new_empty((batch, 1) + tuple(spatial), dtype, lo.device).fill_(1)
        for row, (start, stop) in enumerate(zip(lo.tolist(), hi.tolist())):
            mask[(row, 0) + tuple(slice(a, b) for a, b in zip(start, stop))] = 0
        return mask
    inside = None
    for k, size in enumerate(spatial):
        ar = torch.arange(size, device=lo.device)
        along = ((ar >= lo[:, k:k + 1]) & (ar < hi[:, k:k + 1])).to(dtype)        # (B, size)
        shape = [batch, 1] + [1] * ndim
        shape[2 + k] = size
        along = along.view(shape)
        if k == ndim - 1:
            if inside is None:
                return torch.sub(1, along)
            return torch.addcmul(torch.ones((), dtype=dtype, device=lo.device), inside, along, value=-1)
        inside = along if inside is None else inside * along
    raise ValueError(f"spatial must hold {ndim} sizes, got {tuple(spatial)}")
