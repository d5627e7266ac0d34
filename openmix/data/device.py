"""DeviceMixer: normalise and mix after the host-to-device copy; DevicePrefetcher overlaps it."""
from __future__ import annotations

from typing import Any, Iterable, Iterator, Optional, Sequence, Tuple

import torch

from ..batch import MixedBatch
from ..checks import check_unit_range
from .collate import check_input_policy, derive_generator


def _as_channel_vector(value: Optional[Sequence[float]], name: str, device) -> Optional[torch.Tensor]:
    if value is None:
        return None
    t = torch.as_tensor(value, dtype=torch.float32, device=device).flatten()
    if t.numel() == 0 or not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite numbers, one per channel, got {value!r}")
    if name == "std" and (t <= 0).any():
        raise ValueError(f"std must be positive, got {value!r}")
    return t


class DeviceMixer:
    """``mixer(x, y) -> MixedBatch`` on ``device``: copy (non-blocking), uint8 → float, normalise,
    mix, in one place.

    mean, std: per-channel statistics in [0, 1] units (torchvision's convention); uint8 inputs
    are divided by 255 first. Float inputs must already be in the statistics' units: the first
    float batch is checked once (one host sync), and values above 1.5 with [0, 1] statistics
    (0-255 pixels, or inputs already normalised) raise. Draws use a CPU generator derived from
    ``(seed, 0, epoch)`` exactly as ``MixCollate`` with ``num_workers=0`` does, so both paths mix
    a batch the same way and the same seed gives the same mix on any device. ``channels_last`` converts 4-D inputs, and the
    mixed output is returned in that memory format too.
    """

    def __init__(self, policy: Any, device: Any = "cpu", mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None, seed: int = 0, channels_last: bool = False) -> None:
        check_input_policy(policy, "DeviceMixer")
        self.policy = policy
        self.device = torch.device(device)
        self.mean = _as_channel_vector(mean, "mean", self.device)
        self.std = _as_channel_vector(std, "std", self.device)
        self.seed = int(seed)
        self.channels_last = channels_last
        self.range_checked = False
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.generator = derive_generator(self.seed, 0, self.epoch)
        if hasattr(self.policy, "set_epoch"):
            self.policy.set_epoch(self.epoch)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, *spatial) on the device -> float, scaled to [0, 1] if uint8, then normalised.

        Computes ``(x / 255 - mean) / std`` (uint8) or ``(x - mean) / std`` (float) with the same
        operations in the same order as that formula, so results are bitwise equal to it, but
        allocates one float batch instead of three: the first operation makes the only new
        tensor and the rest run in place on it (never on the caller's x).
        """
        if not (x.dtype == torch.uint8 or x.is_floating_point()):
            raise TypeError(f"x must be uint8 or floating point, got dtype {x.dtype}")
        if x.ndim < 2:
            raise ValueError(f"x must have shape (B, C, *spatial), got shape {tuple(x.shape)}")
        shape = (1, -1) + (1,) * (x.ndim - 2)
        for stat, name in ((self.mean, "mean"), (self.std, "std")):
            if stat is not None and stat.numel() not in (1, x.shape[1]):
                hint = ("; x looks channels-last (B, H, W, C): use x.permute(0, 3, 1, 2)"
                        if x.ndim == 4 and x.shape[-1] == stat.numel() else "")
                raise ValueError(f"{name} has {stat.numel()} values but x has {x.shape[1]} channels "
                                 f"(x: {tuple(x.shape)}, read as (B, C, *spatial)){hint}")
        if x.dtype == torch.uint8:
            out = x.float().div_(255.0)
        else:
            if not self.range_checked:
                check_unit_range(x, self.mean, self.std)
                self.range_checked = True
            if self.mean is None and self.std is None:
                return x
            out = None
        if self.mean is not None:
            mean = self.mean.view(shape)
            out = torch.sub(x, mean) if out is None else out.sub_(mean)
        if self.std is not None:
            std = self.std.view(shape)
            out = torch.div(x, std) if out is None else out.div_(std)
        return out

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> MixedBatch:
        x = x.to(self.device, non_blocking=True)
        y = torch.as_tensor(y).to(self.device, non_blocking=True)
        x = self.normalise(x)
        channels_last = self.channels_last and x.ndim == 4
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        mb = self.policy(x, y, generator=self.generator)
        if channels_last and not mb.x.is_contiguous(memory_format=torch.channels_last):
            # several policies return the default layout (ops.blend_with_partner's index_select)
            mb.x = mb.x.contiguous(memory_format=torch.channels_last)
        return mb


class DevicePrefetcher:
    """Iterates a loader of (x, y) batches and yields mixed batches on the mixer's device.

    On CUDA the next batch is copied and mixed on a side stream while the current one trains;
    elsewhere it is a plain loop.
    """

    def __init__(self, loader: Iterable[Tuple[torch.Tensor, torch.Tensor]], mixer: DeviceMixer) -> None:
        self.loader = loader
        self.mixer = mixer

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[MixedBatch]:
        if self.mixer.device.type != "cuda":
            for x, y in self.loader:
                yield self.mixer(x, y)
            return
        stream = torch.cuda.Stream(device=self.mixer.device)
        pending: Optional[MixedBatch] = None
        for x, y in self.loader:
            with torch.cuda.stream(stream):
                ready = self.mixer(x, y)
            if pending is not None:
                yield pending
            torch.cuda.current_stream(self.mixer.device).wait_stream(stream)
            for t in (ready.x, ready.y, ready.index, ready.lam, ready.mask):
                if t is not None and t.is_cuda:
                    t.record_stream(torch.cuda.current_stream(self.mixer.device))
            pending = ready
        if pending is not None:
            yield pending
