"""Equal-budget tuning: choose a cell's grid values from its trials' validation metric.

Every tuned policy of a suite gets the same grid size (checked when the suite loads); each
trial runs once with ``suite.tune.seed``. The choice reads only the metric named by
``suite.tune.metric`` (``selected.val.*``, the validation metrics of the trainer's selected
epoch), with the direction given by ``lower_is_better``; ties go to the earlier grid point.
The decision is stored in the database (table ``tuning``) and beside the runs
(``<runs_dir>/<suite>/<dataset>/<model>/<policy>/tuning[-<E>ep].json``), from where
``openmix-bench rebuild_db=true`` restores it.
"""
from __future__ import annotations

import datetime as _dt
import math
import os
from pathlib import Path
from typing import Any

from ..files import write_json_atomic
from .suite import RunSpec, Suite, lower_is_better, summary_value


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def decide(suite: Suite, spec: RunSpec,
           results: list[tuple[RunSpec, str | None, dict | None]]) -> dict | str:
    """The decision for ``spec``'s cell from ``(trial, config hash, results row)`` triples,
    or a one-line reason why none can be made (no trial succeeded with the metric)."""
    metric = suite.tune.metric[spec.task]
    trials, scored = [], []
    for index, (trial, digest, row) in enumerate(results):
        status = row["status"] if row else "failed"
        value = _finite(summary_value(row, metric)) if row and status == "ok" else None
        trials.append({"values": dict(trial.trial), "config_hash": digest, "status": status,
                       "value": value, "label": trial.label})
        if value is not None:
            scored.append((value, index))
    if not scored:
        statuses = ", ".join(f"{t['label']}: {t['status']}" for t in trials)
        return (f"tuning {spec.cell}: no trial reported the validation metric {metric!r} "
                f"({statuses}); a trainer that writes summary['selected']['val'] is needed")
    sign = 1.0 if lower_is_better(metric) else -1.0
    best_value, best_index = min(scored, key=lambda s: (sign * s[0], s[1]))
    return {
        "suite": suite.name, "cell": spec.cell, "dataset": spec.dataset, "model": spec.model,
        "epochs": spec.epochs, "policy": spec.policy, "task": spec.task, "metric": metric,
        "choice": dict(results[best_index][0].trial), "value": best_value, "trials": trials,
        "decided_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def decision_path(runs_dir: str | os.PathLike, decision: dict) -> Path:
    epochs = "" if decision.get("epochs") is None else f"-{decision['epochs']}ep"
    return (Path(runs_dir) / decision["suite"] / decision["dataset"] / decision["model"]
            / decision["policy"] / f"tuning{epochs}.json")


def write_decision(runs_dir: str | os.PathLike, decision: dict) -> Path:
    return write_json_atomic(decision_path(runs_dir, decision), decision)


def describe(decision: dict) -> str:
    """``mix.alpha=0.5 (selected.val.top1 0.97; trials 0.2: 0.95, 0.5: 0.97, ...)``."""
    choice = ", ".join(f"{k}={v}" for k, v in decision["choice"].items())
    tried = ", ".join(
        "/".join(str(v) for v in t["values"].values()) + ": "
        + ("failed" if t["value"] is None else f"{t['value']:.4g}")
        for t in decision["trials"])
    return f"{choice} ({decision['metric']} {decision['value']:.4g}; trials {tried})"
