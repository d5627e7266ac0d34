"""FMix (Harris et al., 2020): a binarised random low-frequency mask."""
from __future__ import annotations

import math

import torch

from ..checks import check_non_negative, check_probability
from ..ops import blend_with_partner, low_frequency_image, rank_mask
from ..ops.fourier import rfft_shape
from .base import MixPolicy, register_policy


@register_policy("fmix")
class FMix(MixPolicy):
    """Sample a Gaussian spectrum, damp frequency f by ``1/f^decay_power``, inverse-FFT, and keep
    the row's own image on the top ``round(λN)`` pixels (rounded up or down with probability 1/2,
    as the reference code does), so the mask mean is λ to within 1/N. ``max_soft`` softens the
    border over up to ``max_soft * N`` ranks on each side. Inputs: (B, C, L), (B, C, H, W) or
    (B, C, D, H, W). The returned λ is the exact mask mean per row.
    """

    uses_mask = True
    supports_out = True
    supports_uint8 = True
    spatial_dims = (1, 3)

    def __init__(self, alpha=1.0, decay_power: float = 3.0, max_soft: float = 0.0, **kwargs):
        super().__init__(alpha=alpha, **kwargs)
        self.decay_power = check_non_negative(decay_power, "decay_power")
        self.max_soft = check_probability(max_soft, "max_soft")

    def sample_params(self, shape, generator, y=None):
        params = super().sample_params(shape, generator, y)
        draws = 1 if self.mode == "batch" else shape[0]
        g = dict(generator=generator, device=generator.device)
        params["noise"] = torch.randn((draws,) + rfft_shape(shape[2:]) + (2,), **g)
        params["round_up"] = self.by_row(torch.rand(shape[0], **g) < 0.5, params["rows"])
        return params

    def apply(self, x, params, out=None, **context):
        batch, spatial = x.shape[0], tuple(x.shape[2:])
        n = math.prod(spatial)
        sources, spread = self.mask_rows(params["rows"])
        lam = params["lam"][sources].to(torch.float64)
        scaled = lam * n
        k = torch.where(params["round_up"][sources], torch.ceil(scaled), torch.floor(scaled)).long()
        soft = None
        if self.max_soft > 0:
            soft = torch.floor(n * torch.minimum(torch.minimum(lam, 1 - lam), torch.full_like(lam, self.max_soft))).long()
        image = low_frequency_image(params["noise"][sources], spatial, self.decay_power)
        mask = rank_mask(image.reshape(image.shape[0], n), k, soft)
        if spread is not None:      # pair mode: partners share their mask
            mask, k = mask[spread], k[spread]
        mask_dtype = x.dtype if x.is_floating_point() else torch.float32
        mask = mask.view(-1, 1, *spatial).to(mask_dtype).expand(batch, 1, *spatial)
        lam = (k.to(torch.float64) / n).expand(batch)     # every mask row sums to exactly k
        return blend_with_partner(x, params["index"], mask, inplace=self.inplace, out=out), mask, lam

    def mask_rows(self, rows):
        """(the rows whose draws make a mask, as a slice or an index; row -> mask, or None): one
        mask in ``batch`` mode, one per row in ``elem`` mode, one per pair in ``pair`` mode (made
        once per pair on the CPU)."""
        if self.mode == "batch":
            return slice(0, 1), None
        if self.mode == "elem" or rows.device.type != "cpu":   # (no host sync: each row makes one)
            return slice(None), None
        sources, spread = torch.unique(rows, return_inverse=True)
        return sources, spread

    def extra_repr(self):
        return f"decay_power={self.decay_power}, max_soft={self.max_soft}"
