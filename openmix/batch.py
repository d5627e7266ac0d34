"""MixedBatch: what a policy returns and what a loss consumes."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Dict, Iterator, Optional, Tuple, Union

import torch

from .checks import check_labels, check_non_negative
from .ops.memory import DeferredMask


def smoothed_one_hot(y: torch.Tensor, num_classes: int, smoothing: float = 0.0,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Class indices (B,) or soft labels (B, K) -> (B, K) rows summing to 1, smoothed like timm.

    A hard label gets ``1 - smoothing + smoothing / K`` on its class and ``smoothing / K``
    elsewhere; a soft label row ``q`` becomes ``(1 - smoothing) * q + smoothing / K``.
    """
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    check_labels(y, y.shape[0] if isinstance(y, torch.Tensor) and y.ndim else -1, "y", num_classes)
    off = smoothing / num_classes
    if y.is_floating_point():
        return y.to(dtype) * (1.0 - smoothing) + off
    out = torch.full((y.shape[0], num_classes), off, dtype=dtype, device=y.device)
    return out.scatter_(1, y.long().unsqueeze(1), 1.0 - smoothing + off)


@dataclass
class MixedBatch:
    """A mixed batch.

    x:     mixed input, (B, C, *spatial), same dtype and device as the policy's input.
    y:     the labels as given: (B,) class indices, (B, K) soft labels, or float regression targets.
    index: (B,) long, the partner of each row.
    lam:   (B,) float, the weight of each row's OWN label (1 for an unmixed row).
    mask:  (B, 1, *spatial) per-pixel weight of the row's own image, or None for policies
           without a mask; where present, ``lam == mask.mean`` over the spatial dims. Policies
           that mix without it make it on first access (see ``DeferredMask``).

    Unpacking gives ``(x, target)`` where ``target`` is the MixedBatch itself, so the usual loop
    ``for x, target in loader: loss = loss_fn(model(x), target)`` works with an openmix loss,
    and a plain ``F.cross_entropy(logits, target)`` fails loudly instead of silently dropping
    the partner's share of the label.
    """

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor
    lam: torch.Tensor
    mask: Optional[torch.Tensor] = None

    def __iter__(self) -> Iterator[Union[torch.Tensor, "MixedBatch"]]:
        return iter((self.x, self))

    def label_pair(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """(y, y[index]): each row's own label and its partner's."""
        return self.y, self.y[self.index]

    def soft_targets(self, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
        """(B, num_classes) mixed soft targets, rows summing to 1.

        Smoothing is applied once, to both labels before mixing (as timm's ``mixup_target``).
        """
        check_non_negative(smoothing, "smoothing")
        dtype = self.lam.dtype if self.lam.is_floating_point() else torch.float32
        t = smoothed_one_hot(self.y, num_classes, smoothing, dtype=dtype)
        return torch.lerp(t[self.index], t, self.lam.to(t.device, dtype).unsqueeze(1))

    def mix_targets(self) -> torch.Tensor:
        """Float targets (B,) or (B, D) mixed with the batch's λ: ``lam*y + (1-lam)*y[index]``."""
        if not self.y.is_floating_point():
            raise TypeError(f"mix_targets needs float targets (regression), got dtype {self.y.dtype}; "
                            f"use soft_targets(num_classes) for class indices")
        lam = self.lam.to(self.y.device, self.y.dtype).reshape(-1, *([1] * (self.y.ndim - 1)))
        return torch.lerp(self.y[self.index], self.y, lam)

    def _map(self, fn) -> "MixedBatch":
        return replace(self, **{f.name: fn(getattr(self, f.name)) for f in fields(self)
                                if getattr(self, f.name) is not None})

    def to(self, device, non_blocking: bool = False) -> "MixedBatch":
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "MixedBatch":
        """Lets ``DataLoader(pin_memory=True)`` pin a MixedBatch returned by a collate function."""
        return self._map(lambda t: t.pin_memory())

    # a plain dict entry, not a DeferredMask, crosses process boundaries (DataLoader workers)
    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        state["_mask"] = self.mask
        return state


def _get_mask(batch: MixedBatch) -> Optional[torch.Tensor]:
    mask = batch.__dict__.get("_mask")
    if isinstance(mask, DeferredMask):
        mask = batch.__dict__["_mask"] = mask.make()
    return mask


def _set_mask(batch: MixedBatch, value: Union[None, torch.Tensor, DeferredMask]) -> None:
    batch.__dict__["_mask"] = value


# after the dataclass is made: its __init__ assigns ``self.mask``, which this property stores
MixedBatch.mask = property(_get_mask, _set_mask, doc="(B, 1, *spatial) own-image weight or None")
