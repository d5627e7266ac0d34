"""Run outputs: atomic text/JSON files, metrics.jsonl, TensorBoard, the one-screen summary."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

from ..files import json_safe, write_json_atomic, write_text_atomic

__all__ = ["write_text_atomic", "write_json_atomic", "write_metrics_jsonl", "TensorBoardLogger", "format_summary"]


def write_metrics_jsonl(path: str | os.PathLike, history: Sequence[dict]) -> Path:
    """The whole history, one JSON object per epoch, rewritten atomically each epoch (small)."""
    return write_text_atomic(path, "".join(json.dumps(json_safe(h)) + "\n" for h in history))


class TensorBoardLogger:
    """Scalars per epoch to TensorBoard event files under ``log_dir`` (no-op when disabled)."""

    def __init__(self, log_dir: str | os.PathLike, enabled: bool = True, purge_step: int | None = None):
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    def log(self, row: dict, step: int) -> None:
        if self.writer is None:
            return
        for k, v in row.items():
            if k != "epoch" and isinstance(v, (int, float)) and math.isfinite(float(v)):
                if k.startswith("val_"):
                    group, k = "val", k[4:]
                else:
                    group = "train" if k in ("train_loss", "lr", "train_seconds", "samples_per_second") else "test"
                self.writer.add_scalar(f"{group}/{k}", v, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _fmt(v: Any, digits: int = 4) -> str:
    if isinstance(v, float):
        if not math.isfinite(v):
            return "nan"
        return f"{v:.{digits}f}"
    return str(v)


def format_summary(summary: dict, out_dir: str, max_rows: int = 8) -> str:
    """A one-screen text summary of a finished run: the epochs, the selected epoch and the costs."""
    task = summary["task"]
    test = ["top1", "top5", "nll", "ece"] if task == "classification" else ["rmse", "mape"]
    hist = summary["history"]
    keys = ["train_loss", *([f"val_{test[0]}"] if f"val_{test[0]}" in hist[-1] else []), *test]
    width = 78
    pairing = summary.get("pairing")
    policy = summary["policy"] + (f" (pairing {pairing})" if pairing not in (None, "random") else "")
    lines = ["=" * width, f" openmix-train: {summary['dataset']} / {summary['model']} / {policy}".ljust(width),
             "=" * width]
    info = summary.get("info", {})
    lines.append(f" task {task}   loss {summary['loss']}   seed {summary['seed']}   epochs {summary['epochs']}   "
                 f"device {summary['device']}   world {summary.get('world_size', 1)}")
    if info:
        lines.append(f" data {info.get('train_samples')} train / {info.get('val_samples', 0)} val / "
                     f"{info.get('test_samples')} test, input {info.get('input_shape')}   params {info.get('params')}")
    lines.append("-" * width)
    lines.append(" epoch " + "".join(f"{k:>12}" for k in keys))
    shown = hist if len(hist) <= max_rows else [*hist[:2], None, *hist[-(max_rows - 3):]]
    for h in shown:
        if h is None:
            lines.append("   ...")
            continue
        lines.append(f" {h['epoch']:>5} " + "".join(f"{_fmt(h.get(k)):>12}" for k in keys))
    lines.append("-" * width)
    sel = summary.get("selected")
    if sel:
        how = {"best_val": f"epoch {sel['epoch']}, best validation {sel['metric']}",
               "last_k": f"median of the last {sel['k']} epochs", "final": f"epoch {sel['epoch']}, the last"}
        lines.append(f" selected ({sel['rule']}: {how[sel['rule']]})  test "
                     + "   ".join(f"{k} {_fmt(v)}" for k, v in sel["test"].items()))
    lines.append(" final  " + "   ".join(f"{k} {_fmt(v)}" for k, v in summary["final"].items()))
    lines.append(f" speed  {_fmt(summary['seconds_per_epoch'], 2)} s/epoch   "
                 f"{_fmt(summary['samples_per_second'], 0)} train samples/s   "
                 f"peak memory {_fmt(summary['peak_memory_mb'], 0)} MB   total {_fmt(summary.get('total_seconds', 0.0), 1)} s")
    lines.append(f" output {out_dir}")
    lines.append("=" * width)
    return "\n".join(lines)
