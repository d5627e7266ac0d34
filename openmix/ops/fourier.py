"""FMix's low-frequency images and exact top-k binarisation."""
from __future__ import annotations

from typing import Sequence

import torch


def rfft_shape(spatial: Sequence[int]) -> tuple:
    """Shape of the real-FFT grid of an image of size ``spatial``."""
    return tuple(spatial[:-1]) + (spatial[-1] // 2 + 1,)


def frequency_radius(spatial: Sequence[int], device=None) -> torch.Tensor:
    """(*rfft_shape(spatial)) magnitude of each sample frequency (cycles per pixel)."""
    axes = [torch.fft.fftfreq(n, device=device) for n in spatial[:-1]]
    axes.append(torch.fft.rfftfreq(spatial[-1], device=device))
    grids = torch.meshgrid(*axes, indexing="ij")
    return torch.sqrt(sum(g * g for g in grids))


def low_frequency_image(noise: torch.Tensor, spatial: Sequence[int], decay_power: float) -> torch.Tensor:
    """A random low-frequency image per row (FMix, Harris et al. 2020).

    noise: (B, *rfft_shape(spatial), 2) standard normal (real and imaginary parts);
    returns (B, *spatial) real. Each frequency f is scaled by ``1 / max(f, 1/max(spatial)) ** decay_power``.
    """
    radius = frequency_radius(spatial, device=noise.device)
    scale = radius.clamp(min=1.0 / max(spatial)).pow(-decay_power).to(noise.dtype)
    spectrum = torch.complex(noise[..., 0], noise[..., 1]) * scale
    dims = tuple(range(1, 1 + len(spatial)))
    return torch.fft.irfftn(spectrum, s=tuple(spatial), dim=dims)


def rank_mask(values: torch.Tensor, k: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """Per row, 1 on the ``k`` largest values and 0 elsewhere, with an optional soft border.

    values: (B, N) float; k: (B,) long in [0, N]; soft: (B,) long >= 0 with ``soft <= min(k, N-k)``.
    With ``soft > 0`` the ranks ``k-soft .. k+soft-1`` fall linearly from 1 to 0, which keeps the
    row sum at exactly ``k``. Returns (B, N) in values' dtype; each row sums to ``k``.
    """
    batch, n = values.shape
    order = torch.argsort(values, dim=1, descending=True)
    rank = torch.arange(n, device=values.device).unsqueeze(0)            # (1, N)
    k, soft = k.unsqueeze(1), soft.unsqueeze(1)
    hard = (rank < k).to(values.dtype)
    ramp = ((k + soft - 1 - rank).to(values.dtype) / (2 * soft - 1).clamp(min=1).to(values.dtype)).clamp(0, 1)
    by_rank = torch.where(soft > 0, ramp, hard)
    return torch.empty_like(values).scatter_(1, order, by_rank)
