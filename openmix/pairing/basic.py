"""Random permutation, flip (timm's pairs) and roll (torchvision v2's pairs)."""
from __future__ import annotations

from typing import Optional

import torch

from . import register_pairing


def _check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    return batch_size


@register_pairing("random")
class RandomPairing:
    """A uniformly random permutation; with ``involution=True`` a random perfect matching
    (pairs swap partners; with an odd batch one row is left to pair with itself)."""

    def __call__(self, batch_size: int, generator: torch.Generator, y: Optional[torch.Tensor] = None,
                 involution: bool = False) -> torch.Tensor:
        _check_batch_size(batch_size)
        perm = torch.randperm(batch_size, generator=generator, device=generator.device)
        if not involution:
            return perm
        index = torch.empty_like(perm)
        half = batch_size // 2
        a, b = perm[0:2 * half:2], perm[1:2 * half:2]
        index[a], index[b] = b, a
        if batch_size % 2:
            index[perm[-1]] = perm[-1]
        return index

    def __repr__(self) -> str:
        return "RandomPairing()"


@register_pairing("flip")
class FlipPairing:
    """Row ``i`` with row ``B-1-i``: the pairs of timm's ``Mixup`` (``x.flip(0)``)."""

    def __call__(self, batch_size: int, generator: torch.Generator, y: Optional[torch.Tensor] = None,
                 involution: bool = False) -> torch.Tensor:
        _check_batch_size(batch_size)
        return torch.arange(batch_size - 1, -1, -1, device=generator.device)

    def __repr__(self) -> str:
        return "FlipPairing()"


@register_pairing("roll")
class RollPairing:
    """Row ``i`` with row ``i - shift`` (mod B): torchvision v2's ``batch.roll(1, 0)`` for shift 1."""

    def __init__(self, shift: int = 1) -> None:
        if isinstance(shift, bool) or not isinstance(shift, int):
            raise TypeError(f"shift must be an int, got {shift!r}")
        self.shift = shift

    def __call__(self, batch_size: int, generator: torch.Generator, y: Optional[torch.Tensor] = None,
                 involution: bool = False) -> torch.Tensor:
        _check_batch_size(batch_size)
        index = (torch.arange(batch_size, device=generator.device) - self.shift) % batch_size
        if involution and not torch.equal(index[index], torch.arange(batch_size, device=index.device)):
            raise ValueError(f"mode='pair' needs a pairing where partners swap (random, flip); "
                             f"roll with shift={self.shift} on a batch of {batch_size} does not")
        return index

    def __repr__(self) -> str:
        return f"RollPairing(shift={self.shift})"


@register_pairing("halves")
class HalvesPairing:
    """Row ``i`` with row ``i + B/2`` and back: for batches whose second half holds partners
    chosen for the first half (``openmix.data.KernelPartnerSampler``). An odd last row pairs
    with itself."""

    def __call__(self, batch_size: int, generator: torch.Generator, y: Optional[torch.Tensor] = None,
                 involution: bool = False) -> torch.Tensor:
        _check_batch_size(batch_size)
        half = batch_size // 2
        index = torch.arange(batch_size, device=generator.device)
        index[:half] += half
        index[half:2 * half] -= half
        return index

    def __repr__(self) -> str:
        return "HalvesPairing()"
