"""SaliencyMix (Uddin et al., ICLR 2021): a CutMix box centred on the partner's saliency peak."""
from __future__ import annotations

import numbers

import torch

from ..checks import check_non_negative
from ..ops.boxes import box_bounds, mix_boxes
from ..ops.saliency import saliency_peak
from .base import MixPolicy, register_policy


@register_policy("saliencymix")
class SaliencyMix(MixPolicy):
    """λ ~ Beta(alpha, alpha); a box with sides ``floor(size * sqrt(1 - λ))`` centred on the
    saliency maximum of the SOURCE image (the partner, ``x[index]``), clipped at the borders, is
    pasted from the source at the same place; then λ = 1 − clipped box area / (H·W).

    Saliency: the spectral residual (Hou & Zhang 2007) of the grey image, computed in torch on the
    image shrunk to a longer side of at most ``saliency_size`` px, blurred by a Gaussian of std
    ``blur_sigma`` × that side (``openmix.ops.saliency``). The authors' code calls OpenCV's
    fine-grained static saliency (Montabone & Soto 2010) instead; the spectral residual is one of
    the detectors the paper compares, chosen here because it is a few FFTs on any device.

    Modes: ``batch`` follows the authors' code (one λ, one box from the saliency of row 0's
    partner, for the whole batch); ``elem`` and ``pair`` give each row the box centred on its own
    partner's peak (``pair`` shares λ within a pair). Inputs: (B, C, H, W) only; the MixedBatch
    has ``mask`` (B, 1, H, W) (0 inside the box) and ``lam`` (B,) = mask mean.

    >>> mb = openmix.build_policy("saliencymix", mode="elem", seed=0)(x, y)   # x: (B, C, H, W)
    """

    uses_mask = True
    defers_mask = True
    spatial_dims = (2, 2)

    def __init__(self, alpha=1.0, saliency_size: int = 64, blur_sigma: float = 0.125, **kwargs):
        super().__init__(alpha=alpha, **kwargs)
        if isinstance(saliency_size, bool) or not isinstance(saliency_size, numbers.Integral) or saliency_size < 1:
            raise ValueError(f"saliency_size must be an int >= 1 (pixels), got {saliency_size!r}")
        self.saliency_size = int(saliency_size)
        self.blur_sigma = check_non_negative(blur_sigma, "blur_sigma")

    def apply(self, x, params, defer_mask=False, **context):
        index = params["index"]
        if self.mode == "batch":   # one saliency map and box: row 0's partner's (the authors' rand_index[0])
            peak = saliency_peak(x[index[:1]], self.saliency_size, self.blur_sigma)
            lam = params["lam"][:1]
        else:
            peak = saliency_peak(x, self.saliency_size, self.blur_sigma)[index]
            lam = params["lam"]
        sizes = torch.tensor(x.shape[2:], dtype=torch.float64, device=x.device)
        centre = (peak.to(torch.float64) + 0.5) / sizes          # box_bounds floors this back to peak
        lo, hi = box_bounds(lam, centre, tuple(x.shape[2:]))
        return mix_boxes(x, index, lo, hi, inplace=self.inplace, defer_mask=defer_mask)

    def extra_repr(self):
        return f"saliency_size={self.saliency_size}, blur_sigma={self.blur_sigma}"
