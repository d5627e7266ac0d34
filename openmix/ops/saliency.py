"""Spectral-residual saliency (Hou & Zhang, CVPR 2007) in torch, batched, any device."""
from __future__ import annotations

import functools
import math
from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F

# ITU-R BT.601 luma weights, the grey conversion OpenCV applies to RGB before its saliency
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def grey_image(x: torch.Tensor) -> torch.Tensor:
    """x: (B, C, H, W) -> (B, H, W): BT.601 luma for C == 3 (RGB order), the channel mean otherwise."""
    if x.shape[1] == 3:   # r*wr + g*wg + b*wb in that order, as (x * w).sum(1), without the (B, 3, H, W) product
        w = torch.tensor(LUMA_WEIGHTS, dtype=x.dtype, device=x.device)
        grey = x[:, 0] * w[0]
        grey += x[:, 1] * w[1]
        grey += x[:, 2] * w[2]
        return grey
    return x.mean(1)


def working_size(spatial: Tuple[int, int], max_size: int) -> Tuple[int, int]:
    """The size the saliency is computed at: the image shrunk so its longer side is at most
    ``max_size`` (aspect kept, each side >= 1); never enlarged."""
    h, w = spatial
    scale = min(1.0, max_size / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


@functools.lru_cache(maxsize=64)
def gaussian_band(n: int, sigma: float, dtype: torch.dtype, device) -> torch.Tensor:
    """(n, n) banded matrix of a Gaussian of std ``sigma`` on an odd kernel of radius ceil(3 sigma),
    normalised over the whole kernel: ``band @ v`` blurs v with zero padding. Cached (one per
    size, sigma, dtype and device; treat it as read-only)."""
    radius = max(1, math.ceil(3 * sigma))
    taps = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    kernel = torch.exp(-taps * taps / (2 * sigma * sigma))
    kernel = kernel / kernel.sum()
    pos = torch.arange(n, device=device)
    offset = pos.unsqueeze(1) - pos.unsqueeze(0)
    inside = offset.abs() <= radius
    zero = torch.zeros((), dtype=dtype, device=device)
    return torch.where(inside, kernel[(offset + radius).clamp(0, 2 * radius)], zero)


def gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """img: (B, h, w) -> (B, h, w), a separable Gaussian of std ``sigma`` pixels (kernel radius
    ceil(3 sigma)) with zero padding (MATLAB ``imfilter``'s default), as two small matrix products
    (faster than a one-channel convolution); sigma 0 returns img."""
    if sigma <= 0:
        return img
    h, w = img.shape[1:]
    rows = gaussian_band(h, float(sigma), img.dtype, img.device)
    cols = gaussian_band(w, float(sigma), img.dtype, img.device)
    return rows @ img @ cols.T


def _circular_mean3(log_amplitude: torch.Tensor, width: int) -> torch.Tensor:
    """The 3x3 mean, circular in both axes, of the full spectrum's log amplitude, at the columns
    of the half spectrum: log_amplitude (B, h, width // 2 + 1) from ``rfft2`` -> the same shape.
    The two columns the half lacks are read from their mirror images (the amplitude of a real
    image's spectrum is symmetric: A[k, c] == A[-k, -c])."""
    h, half = log_amplitude.shape[-2:]
    flipped_rows = (-torch.arange(h, device=log_amplitude.device)) % h

    def full_column(c):
        c %= width
        return log_amplitude[..., c] if c < half else log_amplitude[..., flipped_rows, width - c]

    padded = torch.cat((full_column(-1).unsqueeze(-1), log_amplitude, full_column(half).unsqueeze(-1)), dim=-1)
    padded = torch.cat((padded[..., -1:, :], padded, padded[..., :1, :]), dim=-2)   # rows wrap around
    rows = padded[..., :-2, :] + padded[..., 1:-1, :] + padded[..., 2:, :]
    return (rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]) / 9


def spectral_residual(grey: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """The unblurred spectral-residual map: grey (B, h, w) real -> (B, h, w) ``|IFFT(exp(R + iP))|^2``
    where ``P`` is the phase of the 2-D FFT, ``L = log(|FFT| + eps * max|FFT|)`` (a floor relative
    to each image's spectrum, so the map does not depend on the intensity scale) and
    ``R = L - (3x3 mean of L)``, the mean taken with circular borders as the spectrum is periodic.

    Computed on the half spectrum (``rfft2``): R is symmetric and P antisymmetric, so
    ``exp(R + iP)`` is Hermitian and its inverse transform real. ``exp(iP)`` is ``FFT / |FFT|``
    (1 where the FFT is 0, whose angle is 0), which spares the cos/sin of a polar form; the map
    equals the direct formula to float rounding, 3-6x faster on the CPU."""
    h, w = grey.shape[-2:]
    spectrum = torch.fft.rfft2(grey)
    parts = torch.view_as_real(spectrum)
    real, imag = parts[..., 0], parts[..., 1]
    amplitude = (real * real + imag * imag).sqrt_()   # a reduction over the size-2 axis is 2x slower
    floor = eps * amplitude.flatten(1).amax(dim=1).clamp(min=torch.finfo(amplitude.dtype).tiny)
    log_amplitude = torch.log(amplitude + floor.view(-1, 1, 1))
    gain = torch.exp(log_amplitude - _circular_mean3(log_amplitude, w))
    zero = amplitude == 0
    phase = torch.where(zero, torch.ones((), dtype=spectrum.dtype, device=spectrum.device), spectrum)
    residual_spectrum = phase * torch.where(zero, gain, gain / amplitude)
    return torch.fft.irfft2(residual_spectrum, s=(h, w)).square()


def saliency_map(x: torch.Tensor, max_size: int = 64, blur_sigma: float = 0.125) -> torch.Tensor:
    """Spectral-residual saliency of each image.

    x: (B, C, H, W) float. The grey image is shrunk (area averaging) to ``working_size`` (longer side
    at most ``max_size``; Hou & Zhang use 64), its spectral residual computed, then blurred by a
    Gaussian of std ``blur_sigma`` times the working longer side (default 0.125: the paper's
    sigma = 8 px at 64 px; OpenCV truncates that Gaussian to 5x5, Hou & Zhang's MATLAB code uses
    2.5 px, which peaks on a blob's corners rather than its centre). Computed in float32 (float64
    for float64 input). Returns (B, h, w) at the working size.
    """
    work_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    grey = grey_image(x.to(work_dtype))
    size = working_size(tuple(x.shape[2:]), max_size)
    if size != tuple(x.shape[2:]):
        grey = F.interpolate(grey.unsqueeze(1), size=size, mode="area").squeeze(1)
    return gaussian_blur(spectral_residual(grey), blur_sigma * max(size))


def first_argmax(rows: torch.Tensor) -> torch.Tensor:
    """(B,) long: ``rows.argmax(dim=1)`` for rows (B, N) float, the first maximum on ties (a NaN
    counts as the maximum, as in torch). On the CPU numpy's vectorised argmax, 10x faster than
    torch's at 256x1024."""
    if rows.device.type == "cpu" and rows.dtype in (torch.float32, torch.float64) and not rows.requires_grad:
        return torch.from_numpy(np.argmax(rows.contiguous().numpy(), axis=1).astype(np.int64))
    return rows.argmax(dim=1)


def saliency_peak(x: torch.Tensor, max_size: int = 64, blur_sigma: float = 0.125) -> torch.Tensor:
    """(B, 2) long: the (row, column) pixel of x's grid under each image's saliency maximum
    (the first maximum in row-major order on ties). x: (B, C, H, W)."""
    smap = saliency_map(x, max_size, blur_sigma)
    h, w = smap.shape[1:]
    flat = first_argmax(smap.reshape(smap.shape[0], -1))
    peak = torch.stack((flat // w, flat % w), dim=1)
    # centre of the working pixel, mapped back onto the input grid
    scale = torch.tensor([x.shape[2] / h, x.shape[3] / w], dtype=torch.float64, device=x.device)
    full = torch.floor((peak.to(torch.float64) + 0.5) * scale).long()
    return torch.minimum(full, torch.tensor(list(x.shape[2:]), device=x.device) - 1)
