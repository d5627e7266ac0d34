"""What ``fit`` calls at its named points: epoch set-up, evaluation, selection, checkpoints, logs.

A callback is a small object with any of the hooks below (the base class gives no-op defaults)
and, when it holds state that a resumed run needs, ``state_dict``/``load_state_dict``::

    on_fit_start(run)            once, before the first epoch (after a resume, too)
    on_epoch_start(epoch)        epoch counts from 0
    on_epoch_end(record)         an ``EpochRecord``; callbacks run in order, so later ones see
                                 what earlier ones added (evaluation -> selection -> files)
    on_fit_end(run)              once, after the last epoch

To add behaviour to training (a learned mixer's update, a logger), write one callback and
append it to ``run.callbacks``; the loop does not change.
"""
from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..metrics_direction import Metric, metric_direction
from .checkpoint import capture_rng_state, save_checkpoint
from .distributed import all_gather_objects, barrier

__all__ = ["Callback", "EpochRecord", "Metric", "EpochSetter", "Evaluator", "Selector", "CheckpointWriter",
           "History", "MetricsWriter", "CHECKPOINT_FORMAT", "primary_metric"]

CHECKPOINT_FORMAT = "openmix-checkpoint"


def primary_metric(task: str) -> Metric:
    """The metric the trainer selects on: top-1 for classification, RMSE for regression."""
    return metric_direction("top1" if task == "classification" else "rmse")


@dataclass
class EpochRecord:
    """One epoch: ``train`` (loss, lr, seconds, samples), ``val`` and ``test`` metric dicts."""
    epoch: int                                      # 1-based, as written to metrics.jsonl
    train: dict
    val: dict = field(default_factory=dict)
    test: dict = field(default_factory=dict)
    eval_seconds: float = 0.0
    is_best: bool = False

    def row(self) -> dict:
        """The flat history row: train keys, ``val_<metric>`` and the test metrics."""
        return {"epoch": self.epoch, **self.train, **{f"val_{k}": v for k, v in self.val.items()},
                **self.test, "eval_seconds": self.eval_seconds}


class Callback:
    def on_fit_start(self, run: Any) -> None: ...
    def on_epoch_start(self, epoch: int) -> None: ...
    def on_epoch_end(self, record: EpochRecord) -> None: ...
    def on_fit_end(self, run: Any) -> None: ...

    def state_dict(self) -> Optional[dict]:
        return None

    def load_state_dict(self, state: dict) -> None: ...


class EpochSetter(Callback):
    """Tells everything that draws per-epoch randomness which epoch it is (sampler, augmentation,
    collate / device mixers, the policy's schedules)."""

    def __init__(self, *targets: Any):
        self.targets = [t for t in targets if t is not None and callable(getattr(t, "set_epoch", None))]

    def on_epoch_start(self, epoch: int) -> None:
        for target in self.targets:
            target.set_epoch(epoch)


class Evaluator(Callback):
    """Evaluates the model on the validation split (if any) and on the test split after each epoch."""

    def __init__(self, engine: Any, val_loader: Any, test_loader: Any):
        self.engine, self.val_loader, self.test_loader = engine, val_loader, test_loader

    def on_epoch_end(self, record: EpochRecord) -> None:
        t0 = time.perf_counter()
        if self.val_loader is not None:
            record.val = self.engine.evaluate(self.val_loader)
        record.test = self.engine.evaluate(self.test_loader)
        record.eval_seconds = time.perf_counter() - t0


class Selector(Callback):
    """Chooses the run's epoch. ``best_val``: the best validation ``metric`` (ties: lower
    validation NLL for classification, then the earlier epoch); reads only ``record.val``, never
    test metrics. ``last_k``: no single epoch — the median of the last k test epochs
    (OpenMixup's convention). ``final``: the last epoch."""

    def __init__(self, rule: str, metric: Metric, last_k: int):
        self.rule, self.metric, self.last_k = rule, metric, last_k
        self.best: dict = {}

    def on_epoch_end(self, record: EpochRecord) -> None:
        if self.rule != "best_val":
            return
        value = record.val[self.metric.name]
        tie_break = record.val.get("nll", 0.0)
        improved = not self.best or self.metric.better(value, self.best["value"]) or (
            value == self.best["value"] and tie_break < self.best["tie_break"])
        record.is_best = improved
        if improved:
            self.best = {"epoch": record.epoch, "metric": f"val_{self.metric.name}", "value": value,
                         "tie_break": tie_break}

    def selected(self, history: list[dict], test_keys: list[str]) -> dict:
        """``{epoch, rule, metric, k, val, test}`` for the summary."""
        out = {"rule": self.rule, "metric": self.metric.name, "k": None}
        if self.rule == "last_k":
            rows = history[-self.last_k:]
            out.update(epoch=None, k=self.last_k, val={},
                       test={k: float(statistics.median(r[k] for r in rows)) for k in test_keys})
            return out
        row = history[-1] if self.rule == "final" or not self.best else history[self.best["epoch"] - 1]
        out.update(epoch=row["epoch"], val={k[4:]: v for k, v in row.items() if k.startswith("val_")},
                   test={k: row[k] for k in test_keys})
        return out

    def state_dict(self) -> dict:
        return {"best": dict(self.best)}

    def load_state_dict(self, state: dict) -> None:
        self.best = dict(state.get("best", {}))


class History(Callback):
    """Appends each epoch's flat row to ``history`` (the list the run, checkpoints and files share)."""

    def __init__(self, history: list):
        self.history = history

    def on_epoch_end(self, record: EpochRecord) -> None:
        self.history.append(record.row())


class CheckpointWriter(Callback):
    """Writes ``checkpoints/last.pt`` every epoch and ``best.pt`` when the selector improved. Every
    rank's random states go in (gathered), rank 0 writes."""

    def __init__(self, run: Any, enabled: bool):
        self.run, self.enabled = run, enabled
        self.folder = Path(run.out_dir) / "checkpoints"

    def on_epoch_end(self, record: EpochRecord) -> None:
        run = self.run
        per_rank = all_gather_objects({"rng": capture_rng_state(), "policy": _state_of(run.policy)}, run.dist)
        if not (self.enabled and run.dist.is_main):
            return
        state = {"format": CHECKPOINT_FORMAT, "version": 2, "epoch": record.epoch,
                 "model": run.net.model.state_dict(), "optimizer": run.optimizer.state_dict(),
                 "scheduler": run.scheduler.state_dict(), "scaler": run.scaler.state_dict(),
                 "ema": run.ema.state_dict() if run.ema is not None else None,
                 "sampler": run.sampler.state_dict() if hasattr(run.sampler, "state_dict") else None,
                 "per_rank": per_rank, "history": list(run.history),
                 "callbacks": {type(cb).__name__: cb.state_dict() for cb in run.callbacks
                               if cb.state_dict() is not None},
                 "config": run.config_yaml, "previous_configs": list(run.previous_configs)}
        save_checkpoint(state, self.folder / "last.pt")
        if record.is_best:
            save_checkpoint(state, self.folder / "best.pt", keep_previous=False)


def _state_of(policy: Any) -> Optional[dict]:
    state_dict = getattr(policy, "state_dict", None)
    return state_dict() if callable(state_dict) else None


class MetricsWriter(Callback):
    """config.yaml at the start; per epoch metrics.jsonl (the whole history, rewritten atomically),
    TensorBoard scalars and one console line, on rank 0; then a barrier so that ranks leave the
    epoch together."""

    def __init__(self, run: Any):
        self.run, self.tb = run, None
        t = run.settings.trainer
        self.show_bar = t.progress and run.dist.is_main and sys.stderr.isatty()

    def on_fit_start(self, run: Any) -> None:
        from ..files import write_text_atomic
        from .outputs import TensorBoardLogger
        t = run.settings.trainer
        if run.dist.is_main:
            out = Path(run.out_dir)
            out.mkdir(parents=True, exist_ok=True)
            write_text_atomic(out / "config.yaml", run.config_yaml)
            for k, previous in enumerate(run.previous_configs, 1):   # resumed with another config
                write_text_atomic(out / f"config.previous-{k}.yaml",
                                  f"# used until epoch {previous['until_epoch']}\n{previous['config']}")
        self.tb = TensorBoardLogger(Path(run.out_dir) / "tb", enabled=run.dist.is_main and t.tensorboard,
                                    purge_step=run.start_epoch + 1 if run.start_epoch else None)

    def on_epoch_end(self, record: EpochRecord) -> None:
        from .outputs import write_metrics_jsonl
        run = self.run
        if run.dist.is_main:
            write_metrics_jsonl(Path(run.out_dir) / "metrics.jsonl", run.history)
            self.tb.log(run.history[-1], record.epoch)
            shown = {**{f"val_{k}": v for k, v in record.val.items()}, **record.test}
            msg = (f"epoch {record.epoch}/{run.settings.trainer.epochs}  loss {record.train['train_loss']:.4f}  "
                   + "  ".join(f"{k} {v:.4f}" for k, v in shown.items()) + f"  {record.train['train_seconds']:.1f}s")
            if self.show_bar:
                from tqdm.auto import tqdm
                tqdm.write(msg, file=sys.stderr)
            else:
                print(msg, flush=True)
        barrier(run.dist)

    def on_fit_end(self, run: Any) -> None:
        if self.tb is not None:
            self.tb.close()
