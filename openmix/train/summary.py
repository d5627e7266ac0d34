"""The run's summary: what ``train`` returns and writes to ``summary.json``."""
from __future__ import annotations

import platform
import resource
import time
from typing import Any

import torch

from .metrics import median_last_k

__all__ = ["summarize", "TEST_KEYS"]

TEST_KEYS = {"classification": ("top1", "top5", "nll", "ece"), "regression": ("rmse", "mape")}


def summarize(run: Any, t_start: float) -> dict:
    """The summary of a finished run: identity, selected epoch (``selected``), last epoch
    (``final``), costs, versions and the history."""
    s, data, history = run.settings, run.data, run.history
    test_keys = [k for k in TEST_KEYS[data.task] if k in history[-1]]
    primary = test_keys[0]
    final = {k: history[-1][k] for k in test_keys}
    final[f"{primary}_median_last_k"] = median_last_k(history, primary, s.trainer.last_k)
    peak_mb, peak_kind = _peak_memory_mb(run.device)
    needs = getattr(run.policy, "needs", "input")
    train_seconds = sum(h.get("train_seconds", 0.0) for h in history)
    return {
        "task": data.task, "dataset": data.name, "model": run.model_name, "policy": s.mix.name,
        "pairing": _pairing_name(s.mix.policy_kwargs.get("pairing", "random")), "loss": s.loss.name,
        "seed": s.seed, "epochs": s.trainer.epochs, "selected": run.selector.selected(history, test_keys),
        "final": final, "history": history,
        "seconds_per_epoch": sum(h["train_seconds"] + h["eval_seconds"] for h in history) / len(history),
        "samples_per_second": sum(h.get("train_samples", 0) for h in history) / max(train_seconds, 1e-9),
        "peak_memory_mb": peak_mb, "peak_memory_kind": peak_kind, "device": str(run.device),
        "versions": _versions(), "world_size": run.dist.world_size, "last_k": s.trainer.last_k,
        "best": {k: v for k, v in run.selector.best.items() if k != "tie_break"},
        "where": s.mix.where if needs == "input" else "engine", "out_dir": str(run.out_dir),
        "resumed_from_epoch": run.start_epoch if run.resumed_from is not None else None,
        "resumed_from": None if run.resumed_from is None else str(run.resumed_from),
        "config_changes_on_resume": len(run.previous_configs),
        "reports": run.reports,
        "total_seconds": time.perf_counter() - t_start,
        "info": {"train_samples": len(data.train), "val_samples": 0 if data.val is None else len(data.val),
                 "test_samples": len(data.test), "noisy_train_labels": data.extra.get("noisy_labels", 0),
                 "input_shape": list(data.input_shape), "params": sum(p.numel() for p in run.net.parameters()),
                 "where": s.mix.where if needs == "input" else f"engine ({needs})"},
    }


def _pairing_name(pairing) -> str:
    """The pairing's registered name (a mapping's ``name``; ``halves`` for whole-dataset C-Mixup)."""
    if isinstance(pairing, dict):
        return str(pairing.get("name", "random"))
    return str(pairing)


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version
    import openmix
    try:
        timm_version = version("timm")  # no import: timm pulls in torchvision (seconds)
    except PackageNotFoundError:
        timm_version = None
    return {"torch": torch.__version__, "timm": timm_version, "openmix": getattr(openmix, "__version__", "?"),
            "python": platform.python_version()}


def _peak_memory_mb(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, "cpu_max_rss"
