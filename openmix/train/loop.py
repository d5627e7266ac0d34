"""``fit(run)``: the epoch loop. Everything else happens in callbacks at its named points."""
from __future__ import annotations

import sys
from typing import Any

from .callbacks import EpochRecord

__all__ = ["fit"]


def fit(run: Any) -> list[dict]:
    """Train ``run`` from ``run.start_epoch`` to ``trainer.epochs``; returns the history rows."""
    epochs = run.settings.trainer.epochs
    for cb in run.callbacks:
        cb.on_fit_start(run)
    for epoch in range(run.start_epoch, epochs):
        for cb in run.callbacks:
            cb.on_epoch_start(epoch)
        loader = run.loaders.train()
        with _progress(run, len(loader), f"epoch {epoch + 1}/{epochs}") as bar:
            stats = run.engine.train_epoch(loader, progress=bar, epoch=epoch)
        record = EpochRecord(epoch + 1, {"train_loss": stats.train_loss, "lr": stats.lr,
                                         "train_seconds": stats.seconds, "train_samples": stats.samples,
                                         "samples_per_second": stats.samples / max(stats.seconds, 1e-9)})
        for cb in run.callbacks:
            cb.on_epoch_end(record)
    for cb in run.callbacks:
        cb.on_fit_end(run)
    return run.history


def _progress(run: Any, total: int, desc: str):
    """A tqdm bar on rank 0 when stderr is a terminal and trainer.progress is on (else disabled)."""
    from tqdm.auto import tqdm
    show = run.settings.trainer.progress and run.dist.is_main and sys.stderr.isatty()
    return tqdm(total=total, desc=desc, disable=not show, leave=True, dynamic_ncols=True, file=sys.stderr)
