"""SmoothMix (Lee et al., CVPR-W 2020): the partner blended in through a soft-edged mask."""
from __future__ import annotations

import torch

from ..checks import check_choice, check_range
from ..ops import blend_with_partner
from ..ops.smooth_mask import PROFILES, axis_profiles, separable_mask
from .base import MixPolicy, register_policy


@register_policy("smoothmix")
class SmoothMix(MixPolicy):
    """A soft mask ``G`` with values in [0, 1] shows the partner: ``x̃ = (1 − G)·x + G·x[index]``,
    so the own-image mask is ``1 − G`` and λ (the own label's weight) = mean(1 − G), exact per row.

    ``G`` is centred on a uniformly drawn pixel, with a size ``s·n_k`` along each spatial dim of
    size ``n_k``, ``s ~ U(scale)``:
    ``"circle"`` (the paper's Gaussian mask): ``G = exp(-Σ_k (i_k − c_k)² / (2 (s·n_k)²))``, the
    std range [0.25, 0.5] × image size being that of OpenMixup's implementation;
    ``"square"``: a square plateau of side ``s·n_k`` whose edges fall linearly to 0 over ``s·n_k``.
    The paper's exact square parameterisation could not be checked here; this one is openmix's.
    λ does not come from Beta(alpha, alpha) (``alpha`` is unused), as in OpenMixup.

    Note: OpenMixup's ``smoothmix`` gives the own label the weight mean(G), the partner's share;
    openmix gives it mean(1 − G), the share of the own image.
    Inputs: (B, C, L), (B, C, H, W) or (B, C, D, H, W); ``mask`` (B, 1, *spatial), ``lam`` (B,).

    >>> mb = openmix.build_policy("smoothmix", shape="square", mode="elem", seed=0)(x, y)
    """

    uses_mask = True
    uses_alpha = False
    spatial_dims = (1, 3)

    def __init__(self, shape: str = "circle", scale=(0.25, 0.5), **kwargs):
        if "alpha" in kwargs:
            raise ValueError(f"alpha is not a SmoothMix argument (λ is the mean of the smooth mask, whose size "
                             f"follows scale, not Beta(alpha, alpha)); remove it, got alpha={kwargs['alpha']!r}")
        super().__init__(alpha=1.0, **kwargs)
        self.shape = check_choice(shape, "shape", PROFILES)
        self.scale = check_range(scale, "scale", 0.0, float("inf"))
        if self.scale[0] <= 0.0:
            raise ValueError(f"scale must be a pair (min, max) with 0 < min <= max, got {scale!r}")

    def sample_params(self, shape, generator, y=None):
        params = super().sample_params(shape, generator, y)
        g = dict(generator=generator, device=generator.device)
        lo, hi = self.scale
        params["centre"] = torch.rand(shape[0], len(shape) - 2, **g)[params["rows"]]
        params["scale"] = (lo + (hi - lo) * torch.rand(shape[0], **g))[params["rows"]]
        return params

    def apply(self, x, params, **context):
        batch, spatial = x.shape[0], tuple(x.shape[2:])
        rows = slice(0, 1) if self.mode == "batch" else slice(None)    # batch mode: one mask
        sizes = torch.tensor(spatial, dtype=torch.float64, device=x.device)
        centre = torch.floor(params["centre"][rows].to(torch.float64) * sizes)     # a pixel
        length = params["scale"][rows].to(torch.float64).unsqueeze(1) * sizes
        profiles = axis_profiles(self.shape, centre, length, spatial)
        profiles[0] = profiles[0] * params["mixed"][rows].unsqueeze(1)      # unmixed rows: G = 0
        partner = separable_mask(profiles, torch.float32)
        mask = partner.neg_().add_(1.0).to(x.dtype).unsqueeze(1).expand(batch, 1, *spatial)
        dims = tuple(range(2, 2 + len(spatial)))
        lam = mask.sum(dim=dims, dtype=torch.float64).squeeze(1) / float(sizes.prod())
        return blend_with_partner(x, params["index"], mask, inplace=self.inplace), mask, lam

    def extra_repr(self):
        return f"shape={self.shape!r}, scale={self.scale}"
