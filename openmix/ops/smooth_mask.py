"""Soft-edged masks built as products of one 1-D profile per spatial dimension (SmoothMix)."""
from __future__ import annotations

from typing import Sequence

import torch

PROFILES = ("circle", "square")


def axis_profiles(kind: str, centre: torch.Tensor, length: torch.Tensor,
                  spatial: Sequence[int]) -> list:
    """One (B, n_k) float64 profile per spatial dim k, evaluated at the pixel positions 0..n_k-1.

    centre, length: (B, d) float (pixels). ``"circle"``: ``exp(-(i - c)^2 / (2 l^2))`` (their product
    is a Gaussian blob of std l); ``"square"``: 1 within ``l/2`` of the centre, falling linearly to 0
    at ``3l/2`` (their product is a square plateau of side l with linear edges of width l).
    """
    profiles = []
    for k, n in enumerate(spatial):
        pos = torch.arange(n, dtype=torch.float64, device=centre.device).unsqueeze(0)
        c = centre[:, k:k + 1].to(torch.float64)
        ell = length[:, k:k + 1].to(torch.float64).clamp(min=1e-12)
        if kind == "circle":
            profiles.append(torch.exp(-(pos - c).square() / (2.0 * ell * ell)))
        elif kind == "square":
            profiles.append(((1.5 * ell - (pos - c).abs()) / ell).clamp(0.0, 1.0))
        else:
            raise ValueError(f"kind must be one of {list(PROFILES)}, got {kind!r}")
    return profiles


def separable_mask(profiles: Sequence[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    """Outer product of per-dim profiles (B, n_k) -> (B, *spatial) in ``dtype``."""
    d = len(profiles)
    out = None
    for k, prof in enumerate(profiles):
        shape = [prof.shape[0]] + [1] * d
        shape[1 + k] = prof.shape[1]
        term = prof.to(dtype).view(shape)
        out = term if out is None else out * term
    return out
