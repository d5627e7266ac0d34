"""Linear interpolation of each row with its partner."""
from __future__ import annotations

import torch


def blend_with_partner(x: torch.Tensor, index: torch.Tensor, weight: torch.Tensor,
                       inplace: bool = False) -> torch.Tensor:
    """``weight * x + (1 - weight) * x[index]``.

    x: (B, C, *spatial); index: (B,) long; weight: broadcastable to x, e.g. (B, 1, ..., 1) for
    one λ per row or a (B, 1, *spatial) mask. Weights of exactly 0 and 1 give exactly the partner
    and the row itself (``torch.lerp`` computes from the nearer end).
    """
    partner = x.index_select(0, index)
    weight = weight.to(x.dtype)
    if inplace:
        return x.lerp_(partner, 1.0 - weight)
    # the partner copy becomes the output: one batch-sized allocation per call instead of two,
    # which also keeps glibc from trimming and re-faulting the heap on every call
    return partner.lerp_(x, weight)
