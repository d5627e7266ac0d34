"""Which way is better for a metric: the one place that decides it (bench and trainer both read it).

A metric name may be plain (``top1``, ``rmse_median_last_k``) or a dotted path into a run's
summary (``selected.test.rmse``). Only the last component counts, and it is lower-is-better when
it is one of :data:`LOWER_IS_BETTER` or starts with one of them followed by ``_``:

>>> metric_direction("selected.test.rmse")
Metric(name='selected.test.rmse', mode='min')
>>> metric_direction("top1_median_last_k").higher_is_better
True

This module imports nothing beyond the standard library.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

# Error- and calibration-like metrics: a smaller value is better.
LOWER_IS_BETTER = ("rmse", "mape", "nll", "ece", "brier", "mae", "mse")
MODES = ("max", "min")


@dataclass(frozen=True)
class Metric:
    """A metric name and whether larger (``mode="max"``) or smaller (``"min"``) is better."""

    name: str
    mode: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")

    def better(self, a: float, b: float) -> bool:
        """Whether ``a`` is strictly better than ``b`` (NaN is never better; anything beats NaN)."""
        if math.isnan(a):
            return False
        return math.isnan(b) or (a > b if self.mode == "max" else a < b)

    @property
    def higher_is_better(self) -> bool:
        return self.mode == "max"

    @property
    def sign(self) -> int:
        """+1 when larger is better, -1 when smaller is better (sign * delta > 0 is better)."""
        return 1 if self.mode == "max" else -1

    @property
    def leaf(self) -> str:
        """The last dotted component, e.g. ``rmse`` of ``selected.test.rmse``."""
        return self.name.rsplit(".", 1)[-1]


def metric_direction(name: str) -> Metric:
    """``Metric(name, "min")`` for error-like metrics (see :data:`LOWER_IS_BETTER`), else ``"max"``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty metric name, got {name!r}")
    leaf = name.rsplit(".", 1)[-1].lower()
    lower = any(leaf == key or leaf.startswith(key + "_") for key in LOWER_IS_BETTER)
    return Metric(name, "min" if lower else "max")


def lower_is_better(name: str) -> bool:
    return metric_direction(name).mode == "min"
