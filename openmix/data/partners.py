"""Batches that carry each row's C-Mixup partner drawn from the whole training set."""
from __future__ import annotations

from typing import Iterator, List

import torch
from torch.utils.data import Sampler

from ..pairing.kernel import DEFAULT_SIGMA, KernelPairing


class KernelPartnerSampler(Sampler[int]):
    """Sample indices for a DataLoader so that every batch is ``[a_1..a_h, p(a_1)..p(a_h)]``:
    h = batch_size / 2 anchors in a seeded random order, then for each the partner that C-Mixup
    draws among ALL training labels, P(j | i) ∝ exp(-||y_i - y_j||² / 2σ²) (``KernelPairing``,
    no N×N matrix). Use it with ``pairing="halves"``, which mixes row k with row k + h.

    labels: (N,) or (N, D) training labels (class indices or floats); batch_size: the
    DataLoader's, even. sigma, sigma_units: the bandwidth as in ``KernelPairing`` (default 0.2 x
    the spread of the N training labels). One epoch takes ceil(N/2) anchors, so it yields about N indices, as a
    shuffled epoch does; each drawn pair is used in both directions. With ``world_size > 1`` the
    anchors are sharded across ranks.
    """

    def __init__(self, labels: torch.Tensor, batch_size: int, sigma: float = DEFAULT_SIGMA, sigma_units: str = "std",
                 seed: int = 0, rank: int = 0, world_size: int = 1, truncation: float = 8.0) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 2 or batch_size % 2:
            raise ValueError(f"batch_size must be an even int >= 2 for whole-dataset C-Mixup "
                             f"(half anchors, half partners), got {batch_size!r}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
        self.labels = torch.as_tensor(labels)
        self.pairing = KernelPairing(sigma=sigma, sigma_units=sigma_units, labels=self.labels,
                                     truncation=truncation)
        self.batch_size, self.seed, self.rank, self.world = batch_size, int(seed), rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _anchors(self, generator: torch.Generator) -> torch.Tensor:
        n = self.labels.shape[0]
        order = torch.randperm(n, generator=generator)[: -(-n // 2)]
        return order[self.rank::self.world]

    def indices(self) -> List[int]:
        """The epoch's index stream: per batch, h anchors then their h partners."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        anchors = self._anchors(g)
        partners = self.pairing.sample_epoch(g)[anchors]
        h = self.batch_size // 2
        chunks = [torch.cat((anchors[i:i + h], partners[i:i + h])) for i in range(0, len(anchors), h)]
        return torch.cat(chunks).tolist() if chunks else []

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices())

    def __len__(self) -> int:
        n = self.labels.shape[0]
        return 2 * len(range(self.rank, -(-n // 2), self.world))

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch}
