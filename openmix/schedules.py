"""Epoch-dependent values for a policy's ``alpha`` and ``p``.

A schedule is a picklable callable ``schedule(epoch) -> float``. Policies accept a plain number,
a schedule, or a mapping such as ``{"schedule": "linear", "start": 0.0, "end": 1.0, "epochs": 10}``
(the form Hydra configs use).
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Mapping, Sequence, Union

from .registry import Registry

SCHEDULES = Registry("schedule")


@SCHEDULES.register("constant")
class Constant:
    def __init__(self, value: float) -> None:
        self.value = float(value)

    def __call__(self, epoch: int) -> float:
        return self.value

    def __repr__(self) -> str:
        return f"Constant({self.value})"


@SCHEDULES.register("linear")
class Linear:
    """``start`` at epoch 0, moving linearly to ``end`` at ``epochs``, then constant."""

    def __init__(self, start: float, end: float, epochs: int) -> None:
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs!r}")
        self.start, self.end, self.epochs = float(start), float(end), int(epochs)

    def __call__(self, epoch: int) -> float:
        t = min(max(epoch, 0), self.epochs) / self.epochs
        return self.start + (self.end - self.start) * t

    def __repr__(self) -> str:
        return f"Linear({self.start}, {self.end}, epochs={self.epochs})"


@SCHEDULES.register("cosine")
class Cosine(Linear):
    """Half-cosine from ``start`` to ``end`` over ``epochs``, then constant."""

    def __call__(self, epoch: int) -> float:
        t = min(max(epoch, 0), self.epochs) / self.epochs
        return self.end + (self.start - self.end) * 0.5 * (1.0 + math.cos(math.pi * t))

    def __repr__(self) -> str:
        return f"Cosine({self.start}, {self.end}, epochs={self.epochs})"


@SCHEDULES.register("step")
class Step:
    """``values[k]`` from epoch ``milestones[k-1]`` on (``values[0]`` before the first milestone)."""

    def __init__(self, values: Sequence[float], milestones: Sequence[int]) -> None:
        if len(values) != len(milestones) + 1:
            raise ValueError(f"step schedule needs len(values) == len(milestones) + 1, "
                             f"got {len(values)} values and {len(milestones)} milestones")
        if list(milestones) != sorted(milestones):
            raise ValueError(f"milestones must be increasing, got {list(milestones)}")
        self.values, self.milestones = [float(v) for v in values], [int(m) for m in milestones]

    def __call__(self, epoch: int) -> float:
        return self.values[sum(epoch >= m for m in self.milestones)]

    def __repr__(self) -> str:
        return f"Step({self.values}, milestones={self.milestones})"


def as_schedule(value: Union[float, Callable[[int], float], Mapping[str, Any]], name: str) -> Callable[[int], float]:
    """A number, a schedule, or a mapping with a ``schedule`` key -> a schedule."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return Constant(value)
    if isinstance(value, Mapping):
        spec = dict(value)
        kind = spec.pop("schedule", None)
        if kind is None:
            raise ValueError(f"{name} as a mapping needs a 'schedule' key ({', '.join(SCHEDULES.names())}), "
                             f"got keys {sorted(value)}")
        return SCHEDULES.build(kind, **spec)
    if callable(value):
        return value
    raise TypeError(f"{name} must be a number, a schedule or a mapping with 'schedule', got {value!r}")
