"""k-nearest-neighbour partners in label space, within the batch (RegMix-style, for regression)."""
from __future__ import annotations

import numbers
from typing import Optional

import torch

from . import register_pairing

__all__ = ["KNNPairing"]


def check_batch_labels(batch_size: int, y: Optional[torch.Tensor], name: str) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if y is None:
        raise ValueError(f"pairing={name!r} needs the labels y of the batch, got None")
    if not isinstance(y, torch.Tensor) or y.ndim not in (1, 2) or y.shape[0] != batch_size:
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"y must be a tensor of shape ({batch_size},) or ({batch_size}, D), got {got}")


@register_pairing("knn")
class KNNPairing:
    """Each row's partner is drawn uniformly among its ``k`` nearest OTHER rows of the batch by
    Euclidean label distance (RegMix, Hwang & Whang 2022, limits mixing to nearest neighbours;
    RegMix measures distance on the examples and meta-learns k per example: here the distance is
    on the labels, the only thing a pairing sees, and k is fixed; the default k = 8 is openmix's).

    y: (B,) or (B, D) float targets. Ties at the k-th distance are broken at random. With a batch
    of B <= k rows every other row is a candidate; a batch of one row pairs with itself.
    Partners are drawn independently per row, so ``involution=True`` (mode="pair") is refused.
    Returns index (B,) long on ``generator.device``.

    >>> policy = openmix.build_policy("mixup", pairing={"name": "knn", "k": 4}, seed=0)   # y: (B,) float
    """

    def __init__(self, k: int = 8) -> None:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"k must be an int >= 1 (number of nearest neighbours), got {k!r}")
        self.k = int(k)

    def __call__(self, batch_size: int, generator: torch.Generator, y: Optional[torch.Tensor] = None,
                 involution: bool = False) -> torch.Tensor:
        check_batch_labels(batch_size, y, "knn")
        if involution:
            raise ValueError("pairing='knn' draws each row's partner independently, so partners do not "
                             "swap; use mode='batch' or mode='elem' with it, not mode='pair'")
        if not y.is_floating_point():
            raise TypeError(f"pairing='knn' needs float targets (regression) of shape (B,) or (B, D), got "
                            f"dtype {y.dtype}; for class labels use pairing 'selective'")
        dev = generator.device
        if batch_size == 1:
            return torch.zeros(1, dtype=torch.long, device=dev)
        points = y.detach().to(dev, torch.float64).reshape(batch_size, -1)
        dist = torch.cdist(points, points)
        dist.fill_diagonal_(float("inf"))                  # never the row itself
        k = min(self.k, batch_size - 1)
        # a random column order makes the stable sort break distance ties uniformly at random
        order = torch.randperm(batch_size, generator=generator, device=dev)
        ranked = torch.sort(dist[:, order], dim=1, stable=True).indices[:, :k]     # (B, k)
        pick = torch.randint(0, k, (batch_size, 1), generator=generator, device=dev)
        return order[ranked.gather(1, pick).squeeze(1)]

    def __repr__(self) -> str:
        return f"KNNPairing(k={self.k})"
