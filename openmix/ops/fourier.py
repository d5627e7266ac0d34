"""FMix's low-frequency images and exact top-k binarisation."""
from __future__ import annotations

from typing import Optional, Sequence

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


def top_k_mask(values: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Per row, 1 on exactly the ``k`` largest values, 0 elsewhere (ties broken by position).

    values: (B, N) float, finite; k: (B,) long in [0, N]. Returns (B, N) in values' dtype.
    A selection (``kthvalue``, linear time) instead of a sort: each row is padded with
    ``K - k`` +inf and ``k`` -inf entries (K = max k) so that one common rank finds every row's
    own k-th largest value.
    """
    batch, n = values.shape
    # the width K needs a host read; on an accelerator use the always-valid K = N instead
    width = int(k.max()) if values.device.type == "cpu" else n
    if width == 0:
        return torch.zeros_like(values)
    cols = torch.arange(width, device=values.device).unsqueeze(0)
    pad = torch.where(cols < (width - k).unsqueeze(1), float("inf"), float("-inf")).to(values.dtype)
    threshold = torch.kthvalue(torch.cat((values, pad), dim=1), n + 1, dim=1).values.unsqueeze(1)
    above = values > threshold
    missing = (k - above.sum(dim=1)).unsqueeze(1)        # how many ties at the threshold to take
    tied = values == threshold
    take = tied & (torch.cumsum(tied, dim=1) <= missing)
    return (above | take).to(values.dtype)


def rank_mask(values: torch.Tensor, k: torch.Tensor, soft: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per row, 1 on the ``k`` largest values and 0 elsewhere, with an optional soft border.

    values: (B, N) float; k: (B,) long in [0, N]; soft: None or (B,) long >= 0 with ``soft <= min(k, N-k)``.
    Without a soft border this is ``top_k_mask``. With ``soft > 0`` the ranks ``k-soft .. k+soft-1`` fall linearly from 1 to 0, which keeps the
    row sum at exactly ``k``. Returns (B, N) in values' dtype; each row sums to ``k``.
    """
    batch, n = values.shape
    if soft is None:
        return top_k_mask(values, k)
    order = torch.argsort(values, dim=1, descending=True)
    rank = torch.arange(n, device=values.device).unsqueeze(0)            # (1, N)
    k, soft = k.unsqueeze(1), soft.unsqueeze(1)
    hard = (rank < k).to(values.dtype)
    ramp = ((k + soft - 1 - rank).to(values.dtype) / (2 * soft - 1).clamp(min=1).to(values.dtype)).clamp(0, 1)
    by_rank = torch.where(soft > 0, ramp, hard)
    return torch.empty_like(values).scatter_(1, order, by_rank)
