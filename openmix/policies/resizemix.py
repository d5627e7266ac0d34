"""ResizeMix (Qin et al., 2020): paste the whole partner, shrunk, inside the image."""
from __future__ import annotations

import math

import torch

from ..checks import check_choice, check_range
from ..ops import resize_paste
from ..ops.paste import INTERPOLATIONS
from .base import MixPolicy, register_policy


@register_policy("resizemix")
class ResizeMix(MixPolicy):
    """Scale τ ~ U(scale); the partner is resized to ``floor(τ·size)`` per spatial dim
    and pasted at a uniformly random place entirely inside the image;
    λ = 1 − pasted area / image area (≈ 1 − τ²). ``alpha`` is not used (τ replaces λ).
    ``interpolation``: ``"nearest"`` (the default of OpenMixup, whose benchmark openmix follows)
    or ``"bilinear"``.
    Inputs: (B, C, L) or (B, C, H, W).
    """

    uses_mask = True
    uses_alpha = False
    spatial_dims = (1, 2)

    def __init__(self, scale=(0.1, 0.8), interpolation: str = "nearest", **kwargs):
        kwargs.setdefault("alpha", 1.0)
        super().__init__(**kwargs)
        self.scale = check_range(scale, "scale", 0.0, 1.0)
        self.interpolation = check_choice(interpolation, "interpolation", INTERPOLATIONS)

    def sample_params(self, shape, generator, y=None):
        params = super().sample_params(shape, generator, y)
        g = dict(generator=generator, device=generator.device)
        lo, hi = self.scale
        tau = (lo + (hi - lo) * torch.rand(shape[0], **g))[params["rows"]]
        params["tau"] = torch.where(params["mixed"], tau, torch.zeros_like(tau))
        params["place"] = torch.rand(shape[0], len(shape) - 2, **g)[params["rows"]]
        return params

    def apply(self, x, params, **context):
        spatial = torch.tensor(x.shape[2:], device=x.device)
        size = torch.floor(params["tau"].to(torch.float64).unsqueeze(1) * spatial).long()
        offset = torch.floor(params["place"].to(torch.float64) * (spatial - size + 1)).long()
        shared = self.mode == "batch" and x.device.type == "cpu"
        out, mask = resize_paste(x, params["index"], size, offset, shared=shared,
                                 inplace=self.inplace, interpolation=self.interpolation)
        lam = 1.0 - size.prod(dim=1).to(torch.float64) / math.prod(x.shape[2:])
        return out, mask, lam

    def extra_repr(self):
        return f"scale={self.scale}, interpolation={self.interpolation!r}"
