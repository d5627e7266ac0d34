"""Train / validation / test splits, label noise and low-data subsets, the same for every dataset.

``make_splits(bundle, settings, seed)`` turns a dataset builder's (whole training set, test set)
into the three splits the trainer uses:

1. label noise (``label_noise``, ``label_noise_kind``) on the training labels only, fixed by the
   run's seed: exactly round(rate·N) labels are changed — ``symmetric``: to a uniformly drawn
   *other* class; ``pairflip``: class c to c+1 (mod K). The test set stays clean;
2. the validation split (``val_fraction``) carved from the (noisy) training set, so it is noisy
   like train: stratified by class and seeded by ``split_seed`` for the embedded sets, random for
   regression, the last images for CIFAR (as is common: the last 5,000 at 0.1);
3. ``per_class``: N training samples per class (stratified, seeded by the run's seed);
   ``train_size`` / ``test_size``: the first N samples (smoke tests).

Training samples get the dataset's random augmentation (``train_transform``) from a generator
seeded per (seed, epoch, sample); validation and test samples get its deterministic
``eval_transform`` (if any).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from .datasets import DataBundle

__all__ = ["Split", "make_splits", "noisy_labels", "per_class_indices", "validation_indices"]


class Split(Dataset):
    """Rows ``indices`` of ``base`` with labels ``y`` (possibly noisy), each sample passed through
    ``transform(x, generator)`` with a generator seeded from (seed, epoch, position) when given.

    x: the base dataset's sample (C, *spatial); y: (N,) labels of the split (``.y`` for samplers
    that need them in memory, e.g. whole-dataset C-Mixup). ``set_epoch`` before each epoch."""

    def __init__(self, base: Dataset, indices: torch.Tensor, y: torch.Tensor,
                 transform: Optional[Callable] = None, seed: int = 0):
        if len(indices) != len(y):
            raise ValueError(f"indices and y must have the same length, got {len(indices)} and {len(y)}")
        self.base, self.indices, self.y = base, torch.as_tensor(indices, dtype=torch.long), y
        self.transform, self.seed, self.epoch = transform, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k):
        x = self.base[int(self.indices[k])][0]
        if self.transform is not None:
            g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch * 7_919 + int(k)) % (2**63 - 1))
            x = self.transform(x, g)
        return x, self.y[k]


def noisy_labels(y: torch.Tensor, num_classes: int, rate: float, kind: str, seed: int) -> torch.Tensor:
    """y: (N,) class indices -> a copy with exactly round(rate * N) entries changed (seeded).

    symmetric: each chosen label becomes a uniformly drawn different class; pairflip: c -> c+1 mod K."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"data.label_noise must be in [0, 1), got {rate!r}")
    if kind not in ("symmetric", "pairflip"):
        raise ValueError(f"data.label_noise_kind must be 'symmetric' or 'pairflip', got {kind!r}")
    if num_classes < 2:
        raise ValueError(f"label noise needs at least 2 classes, got num_classes={num_classes}")
    y = y.clone()
    n_noisy = int(round(rate * len(y)))
    if n_noisy == 0:
        return y
    g = torch.Generator().manual_seed(int(seed) * 7_919 + 17)
    chosen = torch.randperm(len(y), generator=g)[:n_noisy]
    if kind == "pairflip":
        shift = torch.ones(n_noisy, dtype=torch.long)
    else:  # a shift in 1..K-1 lands on every other class with equal probability
        shift = torch.randint(1, num_classes, (n_noisy,), generator=g)
    y[chosen] = (y[chosen] + shift) % num_classes
    return y


def validation_indices(y: torch.Tensor, fraction: float, how: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices) of a training set with labels y: (N,).

    how: ``stratified`` (by class, seeded), ``random`` (seeded) or ``tail`` (the last images)."""
    n = len(y)
    n_val = int(round(fraction * n))
    idx = np.arange(n)
    if n_val == 0:
        return idx, idx[:0]
    if n_val >= n:
        raise ValueError(f"data.val_fraction={fraction} leaves no training samples out of {n}")
    if how == "tail":
        return idx[: n - n_val], idx[n - n_val:]
    if how == "random":
        perm = np.random.default_rng(seed).permutation(n)
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])
    if how != "stratified":
        raise ValueError(f"val_from must be 'stratified', 'random' or 'tail', got {how!r}")
    from sklearn.model_selection import train_test_split
    labels = y.numpy()
    stratify = labels if np.bincount(labels).min(initial=n) >= 2 and n_val >= len(np.unique(labels)) else None
    tr, va = train_test_split(idx, test_size=n_val, stratify=stratify, random_state=seed, shuffle=True)
    return np.sort(tr), np.sort(va)


def per_class_indices(y: torch.Tensor, per_class: int, seed: int) -> np.ndarray:
    """Positions of ``per_class`` samples of each class (a seeded draw; all of a class with fewer)."""
    rng = np.random.default_rng(int(seed) * 7_919 + 29)
    labels = y.numpy()
    keep = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)]
    return np.sort(np.concatenate(keep))


def make_splits(bundle: DataBundle, settings: Any, seed: int, split_seed: int = 0) -> DataBundle:
    """The bundle with ``train``, ``val`` (or None with val_fraction 0) and ``test`` as ``Split``s.

    settings: ``DataSettings`` (val_fraction, train_size, test_size, per_class, label_noise,
    label_noise_kind); seed: the run's seed (noise, per-class draw, augmentation)."""
    base = bundle.train
    y = torch.as_tensor(base.y)
    if settings.label_noise > 0:
        y = noisy_labels(y, bundle.num_classes, settings.label_noise, settings.label_noise_kind, seed)
    train_idx, val_idx = validation_indices(y, settings.val_fraction, bundle.val_from, split_seed)
    if settings.per_class is not None:
        train_idx = train_idx[per_class_indices(y[train_idx], settings.per_class, seed)]
    if settings.train_size is not None:
        train_idx = train_idx[: settings.train_size]
    test_y = torch.as_tensor(bundle.test.y)
    test_idx = np.arange(len(test_y))[: settings.test_size]
    train = Split(base, torch.from_numpy(train_idx), y[train_idx], bundle.train_transform, seed)
    val = Split(base, torch.from_numpy(val_idx), y[val_idx], bundle.eval_transform) if len(val_idx) else None
    test = Split(bundle.test, torch.from_numpy(test_idx), test_y[test_idx], bundle.eval_transform)
    extra = {**bundle.extra, "noisy_labels": int((y != torch.as_tensor(base.y)).sum()) if bundle.task ==
             "classification" else 0}
    return dataclasses.replace(bundle, train=train, val=val, test=test, extra=extra)
