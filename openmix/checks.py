"""Argument validation shared by policies, losses and the data path.

Every error names the argument, the value received and what is accepted.
"""
from __future__ import annotations

import numbers
from typing import Optional, Sequence

import torch


def check_probability(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def check_non_negative(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or float(value) < 0.0:
        raise ValueError(f"{name} must be a real number >= 0, got {value!r}")
    return float(value)


def check_choice(value: str, name: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def check_range(value: Sequence[float], name: str, low: float, high: float) -> tuple:
    """A (min, max) pair with low <= min <= max <= high."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (min, max), got {value!r}") from None
    if not low <= lo <= hi <= high:
        raise ValueError(f"{name} must satisfy {low} <= min <= max <= {high}, got {value!r}")
    return lo, hi


def check_input(x: torch.Tensor, name: str = "x", min_spatial: int = 1, max_spatial: int = 3,
                floating: bool = True) -> torch.Tensor:
    """x: (B, C, *spatial) with min_spatial <= len(spatial) <= max_spatial and B >= 1."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, C, *spatial), got {type(x).__name__}")
    lo, hi = 2 + min_spatial, 2 + max_spatial
    if not lo <= x.ndim <= hi:
        accepted = " or ".join(
            {2: "(B, F)", 3: "(B, C, L)", 4: "(B, C, H, W)", 5: "(B, C, D, H, W)"}[n] for n in range(lo, hi + 1))
        raise ValueError(f"{name} must have shape {accepted}, got shape {tuple(x.shape)}")
    if x.shape[0] < 1:
        raise ValueError(f"{name} must hold at least one sample, got batch size {x.shape[0]}")
    if floating and not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (float16/bfloat16/float32/float64), "
                        f"got dtype {x.dtype}; convert uint8 images with x.float() or use MixCollate")
    return x


def check_labels(y: torch.Tensor, batch_size: int, name: str = "y",
                 num_classes: Optional[int] = None) -> torch.Tensor:
    """y: (B,) integer class indices or (B, K) float soft labels; (B,) / (B, D) float targets also pass."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B,) or (B, K), got {type(y).__name__}")
    if y.ndim not in (1, 2):
        raise ValueError(f"{name} must have shape (B,) or (B, K), got shape {tuple(y.shape)}")
    if y.shape[0] != batch_size:
        raise ValueError(f"{name} must have one row per sample: expected {batch_size} rows, got {y.shape[0]}")
    if y.dtype == torch.bool or y.is_complex():
        raise TypeError(f"{name} must be integer class indices or floating labels, got dtype {y.dtype}")
    if not y.is_floating_point():
        if y.ndim != 1:
            raise ValueError(f"integer {name} must be class indices of shape (B,), got shape {tuple(y.shape)}")
        # range check on CPU only: on CUDA it would cost a host sync per batch, and an
        # out-of-range index there already stops with a device-side assert (not silently)
        if num_classes is not None and y.numel() > 0 and y.device.type == "cpu":
            lo, hi = int(y.min()), int(y.max())
            if lo < 0 or hi >= num_classes:
                raise ValueError(f"{name} holds class indices in [{lo}, {hi}], outside [0, {num_classes - 1}] "
                                 f"for num_classes={num_classes}")
    elif num_classes is not None and (y.ndim != 2 or y.shape[1] != num_classes):
        raise ValueError(f"soft {name} must have shape (B, {num_classes}) for num_classes={num_classes}, "
                         f"got shape {tuple(y.shape)}")
    return y
