"""DeviceMixer: normalise and mix after the host-to-device copy; DevicePrefetcher overlaps it."""
from __future__ import annotations

from typing import Any, Iterable, Iterator, Optional, Sequence, Tuple

import torch

from ..batch import MixedBatch
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
    are divided by 255 first. Draws use a CPU generator derived from ``(seed, 0, epoch)`` exactly
    as ``MixCollate`` with ``num_workers=0`` does, so both paths mix a batch the same way and the
    same seed gives the same mix on any device. ``channels_last`` converts 4-D inputs.
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
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.generator = derive_generator(self.seed, 0, self.epoch)
        if hasattr(self.policy, "set_epoch"):
            self.policy.set_epoch(self.epoch)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, *spatial) on the device -> float, scaled to [0, 1] if uint8, then normalised."""
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        elif not x.is_floating_point():
            raise TypeError(f"x must be uint8 or floating point, got dtype {x.dtype}")
        shape = (1, -1) + (1,) * (x.ndim - 2)
        for stat, name in ((self.mean, "mean"), (self.std, "std")):
            if stat is not None and stat.numel() not in (1, x.shape[1]):
                raise ValueError(f"{name} has {stat.numel()} values but x has {x.shape[1]} channels")
        if self.mean is not None:
            x = x - self.mean.view(shape)
        if self.std is not None:
            x = x / self.std.view(shape)
        return x

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> MixedBatch:
        x = x.to(self.device, non_blocking=True)
        y = torch.as_tensor(y).to(self.device, non_blocking=True)
        x = self.normalise(x)
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.policy(x, y, generator=self.generator)


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
