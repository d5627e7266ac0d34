"""FMix's low-frequency images and exact top-k binarisation."""
from __future__ import annotations

import functools
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


@functools.lru_cache(maxsize=32)
def _spectrum_scale(spatial: tuple, decay_power: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    radius = frequency_radius(spatial, device=device)
    return radius.clamp(min=1.0 / max(spatial)).pow(-decay_power).to(dtype)


def low_frequency_image(noise: torch.Tensor, spatial: Sequence[int], decay_power: float) -> torch.Tensor:
    """A random low-frequency image per row (FMix, Harris et al. 2020).

    noise: (B, *rfft_shape(spatial), 2) standard normal (real and imaginary parts);
    returns (B, *spatial) real. Each frequency f is scaled by ``1 / max(f, 1/max(spatial)) ** decay_power``.
    """
    scale = _spectrum_scale(tuple(spatial), float(decay_power), noise.dtype, noise.device)
    if noise.stride(-1) == 1 and noise.is_contiguous():
        spectrum = torch.view_as_complex(noise) * scale          # no copy of the noise
    else:
        spectrum = torch.complex(noise[..., 0], noise[..., 1]) * scale
    dims = tuple(range(1, 1 + len(spatial)))
    return torch.fft.irfftn(spectrum, s=tuple(spatial), dim=dims)


def top_k_mask(values: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Per row, 1 on exactly the ``k`` largest values, 0 elsewhere (ties go to the earlier position).

    values: (B, N) float, finite; k: (B,) long in [0, N]. Returns (B, N) in values' dtype.
    No full sort of large inputs: on the CPU a per-row histogram finds the bin holding each
    row's threshold and only that bin is sorted (small inputs: one stable sort); elsewhere a
    linear-time selection (no host reads).
    """
    if values.device.type == "cpu":
        if values.numel() <= SORT_MAX_ELEMENTS:
            return _top_k_mask_sorted(values, k)
        return _top_k_mask_histogram(values, k)
    return _top_k_mask_select(values, k)


# on the CPU, up to this many values in all are ranked by one stable sort: for one 32x32 or
# 64x64 mask (FMix batch mode) 3-7x faster than the histogram's two dozen small operations,
# which win from 16 rows of 1024
SORT_MAX_ELEMENTS = 4096


def _top_k_mask_sorted(values: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """A stable descending sort: equal values keep their order, so ties go to the earlier position."""
    order = torch.argsort(values, dim=1, descending=True, stable=True)
    rank = torch.arange(values.shape[1], device=values.device).unsqueeze(0)
    return torch.empty_like(values).scatter_(1, order, (rank < k.unsqueeze(1)).to(values.dtype))


def _top_k_mask_histogram(values: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    batch, n = values.shape
    bins = min(4096, max(16, n // 16))       # about 16 values per bin on average
    low = values.amin(dim=1, keepdim=True)       # (amin and amax beat aminmax on the CPU)
    span = (values.amax(dim=1, keepdim=True) - low).clamp_(min=torch.finfo(values.dtype).tiny)
    # monotone in the value, so every value in a higher bin is larger
    key = (values - low).mul_((bins - 1e-3) / span).to(torch.int32).clamp_(0, bins - 1)
    # row r's bins become r * bins + bin: one bincount for the batch, and one comparison of
    # every key with its row's threshold key
    offset = (torch.arange(batch, dtype=torch.int32) * bins).unsqueeze(1)
    key += offset
    counts = torch.bincount(key.view(-1), minlength=batch * bins).view(batch, bins)
    from_top = counts.flip(1).cumsum(1)                       # values in the top j+1 bins
    first = torch.searchsorted(from_top, k.unsqueeze(1)).clamp_(max=bins - 1)
    threshold_bin = (bins - 1 - first).to(torch.int32)        # the bin holding the k-th largest
    threshold_key = threshold_bin + offset
    mask = torch.gt(key, threshold_key, out=torch.empty(values.shape, dtype=values.dtype))   # 1.0 above
    in_bin = key == threshold_key
    # counts from the histogram (a sum over the bool masks costs more than building them)
    above = torch.where(first > 0, from_top.gather(1, (first - 1).clamp_(min=0)), 0).squeeze(1)
    need = k - above                                          # how many to take from that bin
    size = counts.gather(1, threshold_bin.long()).squeeze(1)
    where = in_bin.view(-1).nonzero().squeeze(1)              # row-major: grouped by row
    candidates = values.view(-1).index_select(0, where)
    rows = torch.repeat_interleave(torch.arange(batch), size)
    by_value = torch.argsort(candidates, descending=True, stable=True)
    order = by_value[torch.argsort(rows[by_value], stable=True)]   # by row, then by value
    sorted_rows = rows[order]
    rank = torch.arange(candidates.numel()) - (torch.cumsum(size, 0) - size)[sorted_rows]
    chosen = torch.empty(candidates.numel(), dtype=values.dtype)
    chosen[order] = (rank < need[sorted_rows]).to(values.dtype)
    mask.view(-1).index_put_((where,), chosen)
    return mask


def _top_k_mask_select(values: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``kthvalue`` on each row padded with ``N - k`` +inf and ``k`` -inf entries, so that one
    common rank finds every row's own k-th largest value; ties broken by position."""
    batch, n = values.shape
    cols = torch.arange(n, device=values.device).unsqueeze(0)
    pad = torch.where(cols < (n - k).unsqueeze(1), float("inf"), float("-inf")).to(values.dtype)
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
