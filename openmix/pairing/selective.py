"""Selective Mixup partners (Teney et al., 2023): same / different class or group, within the batch."""
from __future__ import annotations

from typing import Optional

import torch

from . import register_pairing
from .knn import check_batch_labels

__all__ = ["SelectivePairing", "CRITERIA"]

# criterion -> (class rule, group rule); a rule is "same", "different" or None (not checked)
CRITERIA = {
    "same_class": ("same", None),
    "different_class": ("different", None),
    "same_group": (None, "same"),
    "different_group": (None, "different"),
    "same_class_different_group": ("same", "different"),
    "different_class_same_group": ("different", "same"),
}
FALLBACKS = ("self", "random")


def _uniform_among(allowed: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """allowed: (B, B) bool -> (B,) long, per row a column drawn uniformly among its True entries
    (argmax of uniform noise over the allowed columns); rows with none return column 0."""
    noise = torch.rand(allowed.shape, generator=generator, device=allowed.device)
    return torch.where(allowed, noise, torch.full_like(noise, -1.0)).argmax(dim=1)


@register_pairing("selective")
class SelectivePairing:
    """Selective Mixup (Teney et al., 2023): each row's partner is drawn uniformly among the other
    rows of the batch that meet ``criterion``: ``same_class``, ``different_class``, ``same_group``,
    ``different_group``, ``same_class_different_group`` or ``different_class_same_group``.

    Classes come from y (B,) integer class indices; groups (domains) from ``groups`` (B,) integers,
    passed when the pairing is called directly: ``pairing(B, g, y=y, groups=domains)``. openmix's
    policies pass only y, and its datasets carry no group labels, so through ``build_policy`` /
    ``openmix-train`` only the class criteria apply; a group criterion without ``groups`` is an error.

    ``fallback`` for a row with no valid partner: ``"self"`` (the row pairs with itself, which
    leaves its input and label unchanged whatever λ is) or ``"random"`` (any other row, uniformly).
    Partners are drawn independently per row, so ``involution=True`` (mode="pair") is refused.
    Returns index (B,) long on ``generator.device``.

    >>> policy = openmix.build_policy("cutmix", pairing={"name": "selective", "criterion": "same_class"})
    >>> index = openmix.build_pairing("selective", criterion="different_group")(B, g, y=y, groups=domains)
    """

    def __init__(self, criterion: str = "different_class", fallback: str = "self") -> None:
        if criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {list(CRITERIA)}, got {criterion!r}")
        if fallback not in FALLBACKS:
            raise ValueError(f"fallback must be one of {list(FALLBACKS)}, got {fallback!r}")
        self.criterion = criterion
        self.fallback = fallback

    def allowed(self, y: torch.Tensor, groups: Optional[torch.Tensor]) -> torch.Tensor:
        """(B, B) bool: row i may pair with column j (never j == i)."""
        class_rule, group_rule = CRITERIA[self.criterion]
        batch = y.shape[0]
        ok = ~torch.eye(batch, dtype=torch.bool, device=y.device)
        for rule, labels in ((class_rule, y), (group_rule, groups)):
            if rule is not None:
                same = labels.unsqueeze(0) == labels.unsqueeze(1)
                ok &= same if rule == "same" else ~same
        return ok

    def __call__(self, batch_size: int, generator: torch.Generator, y: Optional[torch.Tensor] = None,
                 involution: bool = False, groups: Optional[torch.Tensor] = None) -> torch.Tensor:
        check_batch_labels(batch_size, y, "selective")
        if involution:
            raise ValueError("pairing='selective' draws each row's partner independently, so partners do not "
                             "swap; use mode='batch' or mode='elem' with it, not mode='pair'")
        class_rule, group_rule = CRITERIA[self.criterion]
        if class_rule is not None and (y.ndim != 1 or y.is_floating_point() or y.dtype == torch.bool):
            raise TypeError(f"criterion={self.criterion!r} needs y as integer class indices of shape (B,), "
                            f"got dtype {y.dtype} and shape {tuple(y.shape)}")
        if group_rule is not None:
            if groups is None:
                raise ValueError(f"criterion={self.criterion!r} needs groups=(B,) integer group labels; openmix's "
                                 f"datasets have none, use same_class or different_class")
            if (not isinstance(groups, torch.Tensor) or groups.shape != (batch_size,) or groups.is_floating_point()
                    or groups.dtype == torch.bool):
                got = (f"dtype {groups.dtype} shape {tuple(groups.shape)}" if isinstance(groups, torch.Tensor)
                       else type(groups).__name__)
                raise TypeError(f"groups must be integer group labels of shape ({batch_size},), got {got}")
            groups = groups.to(generator.device)
        allowed = self.allowed(y.detach().to(generator.device), groups)
        index = _uniform_among(allowed, generator)
        has_partner = allowed.any(dim=1)
        if self.fallback == "random" and batch_size > 1:
            others = ~torch.eye(batch_size, dtype=torch.bool, device=allowed.device)
            fallback = _uniform_among(others, generator)
        else:
            fallback = torch.arange(batch_size, device=allowed.device)
        return torch.where(has_partner, index, fallback)

    def __repr__(self) -> str:
        return f"SelectivePairing(criterion={self.criterion!r}, fallback={self.fallback!r})"
