"""GridMix (Baek et al., Pattern Recognition 2021): grid cells swapped with the partner at random."""
from __future__ import annotations

import math
import numbers
from typing import Optional

import torch

from ..checks import check_probability
from ..ops import blend_with_partner
from .base import MixPolicy, register_policy


def grid_cells(n: torch.Tensor, size: int) -> torch.Tensor:
    """(B, size) long: the cell ``floor(i * n_b / size)`` of pixel i along one axis cut into n_b
    cells (cells of floor/ceil(size / n_b) pixels when size is not a multiple of n_b). n: (B,) long."""
    pos = torch.arange(size, device=n.device)
    return torch.div(pos.unsqueeze(0) * n.unsqueeze(1), size, rounding_mode="floor")


@register_policy("gridmix")
class GridMix(MixPolicy):
    """Each spatial dim is cut into ``n`` near-equal cells (``n`` uniform in ``grid``, inclusive; an
    n×n grid for images), and each cell shows the partner with probability ``cell_prob``
    (independently per cell); λ = the true pixel share of the row's own cells (own label weight).

    ``cell_prob=None`` draws λ₀ ~ Beta(alpha, alpha) per row (per batch / pair by ``mode``) and
    uses ``1 − λ₀`` as the cell probability, so the expected own share is λ₀.
    The paper's local-context loss (patch-level labels on a grid head) is not part of this policy;
    its values of the grid range and of the cell probability could not be checked here, so the
    defaults (n in 2..4, p = 0.5) are openmix's. Inputs: (B, C, L), (B, C, H, W) or (B, C, D, H, W);
    ``mask`` (B, 1, *spatial) holds 0 on the partner's cells, ``lam`` (B,) = mask mean.

    >>> mb = openmix.build_policy("gridmix", grid=(4, 4), cell_prob=0.3, mode="elem", seed=0)(x, y)
    """

    uses_mask = True
    spatial_dims = (1, 3)

    def __init__(self, alpha=1.0, grid=(2, 4), cell_prob: Optional[float] = 0.5, **kwargs):
        super().__init__(alpha=alpha, **kwargs)
        try:
            lo, hi = grid
        except (TypeError, ValueError):
            raise ValueError(f"grid must be a pair (min, max) of ints >= 1, got {grid!r}") from None
        if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in (lo, hi)) or not 1 <= lo <= hi:
            raise ValueError(f"grid must be a pair (min, max) of ints with 1 <= min <= max, got {grid!r}")
        self.grid = (int(lo), int(hi))
        self.cell_prob = None if cell_prob is None else check_probability(cell_prob, "cell_prob")
        self.uses_alpha = self.cell_prob is None

    def sample_params(self, shape, generator, y=None):
        params = super().sample_params(shape, generator, y)
        g = dict(generator=generator, device=generator.device)
        batch, ndim = shape[0], len(shape) - 2
        lo, hi = self.grid
        params["cells"] = torch.randint(lo, hi + 1, (batch,), **g)[params["rows"]]
        params["coins"] = torch.rand((batch,) + (hi,) * ndim, **g)[params["rows"]]
        return params

    def apply(self, x, params, **context):
        batch, spatial = x.shape[0], tuple(x.shape[2:])
        rows = slice(0, 1) if self.mode == "batch" else slice(None)     # batch mode: one grid
        n, coins, mixed = params["cells"][rows], params["coins"][rows], params["mixed"][rows]
        if self.cell_prob is None:
            prob = 1.0 - params["lam"][rows].to(torch.float64)
        else:
            prob = torch.full(n.shape, self.cell_prob, dtype=torch.float64, device=x.device)
        per_row = (-1,) + (1,) * len(spatial)
        from_partner = (coins.to(torch.float64) < prob.view(per_row)) & mixed.view(per_row)
        # the own-image weight of every cell, spread to its pixels one axis at a time (only the
        # last step is image-sized); λ sums the cells' pixel counts, exactly the mask's sum
        own = (~from_partner).to(x.dtype)
        picked, pixels = own, torch.ones_like(own, dtype=torch.float64)
        for k, size in enumerate(spatial):
            cell = grid_cells(n, size)                                       # (b, size)
            shape = [cell.shape[0]] + [1] * len(spatial)
            shape[1 + k] = size
            expand = list(picked.shape)
            expand[1 + k] = size
            picked = picked.gather(1 + k, cell.view(shape).expand(expand))
            count = torch.zeros(own.shape[:1] + own.shape[1 + k:2 + k], dtype=torch.float64, device=x.device)
            count.scatter_add_(1, cell, torch.ones(cell.shape, dtype=torch.float64, device=x.device))
            shape[1 + k] = own.shape[1 + k]
            pixels = pixels * count.view(shape)                              # pixels per cell
        lam = (own.to(torch.float64) * pixels).flatten(1).sum(1).expand(batch) / float(math.prod(spatial))
        mask = picked.unsqueeze(1).expand(batch, 1, *spatial)
        return blend_with_partner(x, params["index"], mask, inplace=self.inplace), mask, lam

    def extra_repr(self):
        return f"grid={self.grid}, cell_prob={self.cell_prob}"
