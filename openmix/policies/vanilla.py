"""No mixing: the baseline. Returns the batch unchanged with λ = 1."""
from __future__ import annotations

from ..checks import check_input, check_labels
from .base import MixPolicy, register_policy


@register_policy("vanilla")
class Vanilla(MixPolicy):
    spatial_dims = (0, 3)

    def __init__(self, **kwargs):
        kwargs.setdefault("alpha", 0.0)
        super().__init__(**kwargs)

    def __call__(self, x, y, generator=None, **context):
        check_input(x, "x", *self.spatial_dims)
        check_labels(y, x.shape[0], "y")
        return self.identity(x, y)
