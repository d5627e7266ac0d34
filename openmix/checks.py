"""Argument validation shared by policies, losses and the data path.

Every error names the argument, the value received and what is accepted.
"""
from __future__ import annotations

import math
import numbers
import warnings
from typing import Any, Optional, Sequence, Tuple

import torch


def check_probability(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def check_non_negative(value: float, name: str) -> float:
    if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value))
            or float(value) < 0.0):
        raise ValueError(f"{name} must be a finite real number >= 0, got {value!r}")
    return float(value)


def check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


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


class LayoutWarning(UserWarning):
    """An input whose shape looks like a layout mistake (channels-last, no channel or no batch dim).

    A warning, not an error: each flagged shape is also a legal layout for some data (a 2-D
    sensor grid 3 wide, a 1-D signal with as many channels as samples), so legitimate users
    silence it with ``warnings.filterwarnings('ignore', category=openmix.LayoutWarning)``.
    """


def _looks_like_image_side(n: int) -> bool:
    return n >= 8


def layout_mistake(shape: Tuple[int, ...]) -> Optional[str]:
    """Why ``shape`` looks like a wrongly laid out image batch, or None.

    (B, H, W, C) with C in {1, 3} and H, W >= 8 looks channels-last; a 3-D (N, H, W) with
    H, W >= 8 within a factor 2 of each other looks like grayscale images without their channel
    dim, or (when N is 1 or 3) like a single (C, H, W) image without its batch dim.
    """
    if len(shape) == 4:
        _, h, w, c = shape
        if c in (1, 3) and _looks_like_image_side(h) and _looks_like_image_side(w):
            return (f"has shape {tuple(shape)}, which looks channels-last (B, H, W, C); openmix reads "
                    f"(B, C, H, W) and would mix along the wrong axes: use x.permute(0, 3, 1, 2) "
                    f"(a tensor in torch.channels_last memory format keeps the (B, C, H, W) shape and is fine)")
        return None
    if len(shape) == 3:
        n, h, w = shape
        if not (_looks_like_image_side(h) and _looks_like_image_side(w) and max(h, w) <= 2 * min(h, w)):
            return None
        fix = f"if it is a batch of grayscale (B, H, W) images, add the channel: x.unsqueeze(1) -> {(n, 1, h, w)}"
        if n in (1, 3):
            fix = (f"if it is one (C, H, W) image, add the batch dim: x.unsqueeze(0) -> {(1, n, h, w)} "
                   f"(mixing needs several images); {fix}")
        return f"has shape {tuple(shape)}, which openmix reads as (B, C, L) 1-D signals; {fix}"
    return None


def check_layout(x: torch.Tensor, name: str = "x") -> None:
    """Warns (LayoutWarning) when x's shape looks like an image layout mistake.

    Reads only the shape, so it costs no host sync on any device.
    """
    reason = layout_mistake(tuple(x.shape))
    if reason is not None:
        warnings.warn(f"{name} {reason}. If the layout is meant, silence this with "
                      f"warnings.filterwarnings('ignore', category=openmix.LayoutWarning)",
                      LayoutWarning, stacklevel=3)


def check_unit_range(x: torch.Tensor, mean: Optional[torch.Tensor], std: Optional[torch.Tensor],
                     name: str = "x") -> None:
    """Raises when float x: (B, C, *spatial) holds values above 1.5 while mean and std are in
    [0, 1] units, i.e. 0-255 pixels (or already normalised inputs) about to be normalised as if
    they were in [0, 1]. Reads x's maximum: one host sync on an accelerator, so call it once.
    """
    if not x.is_floating_point() or x.numel() == 0 or (mean is None and std is None):
        return
    stats_in_unit = all(s is None or bool(((s >= 0) & (s <= 1)).all()) for s in (mean, std))
    if not stats_in_unit:
        return
    peak = float(x.detach().amax())
    if peak > 1.5:
        raise ValueError(
            f"{name} is {x.dtype} with values up to {peak:g}, but mean and std are in [0, 1] units: if {name} "
            f"holds 0-255 pixels, pass it as uint8 (it is divided by 255 first) or divide it by 255; if it is "
            f"already normalised, leave mean and std out; otherwise give mean and std in {name}'s units")
