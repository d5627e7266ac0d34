"""From database rows to the leaderboard's records: group per-seed rows into cells and tables,
then hand the per-seed values to :mod:`openmix.bench.stats`.

Rows are the dicts of ``ResultsDB.runs``; every number of a :class:`Report` is recomputed from
them. A cell is one (dataset, model, epochs, policy, headline metric); a table (panel) is one
(dataset, model, epochs, metric). Nothing here formats or draws.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..metrics_direction import Metric, metric_direction
from . import stats
from .suite import DEFAULT_HEADLINE, resolve_path


@dataclass(frozen=True)
class Selection:
    """How a run's headline value was chosen: ``rule`` is ``best_val``, ``last_k``, ``final``
    or the trainer's own word; ``on`` the validation metric (best_val); ``last_k`` the k."""

    rule: str
    on: str | None = None
    last_k: int | None = None


@dataclass(frozen=True)
class CellData:
    """The successful runs of one cell: ``values`` maps seed -> headline value."""

    suite: str
    dataset: str
    model: str
    epochs: int | None
    task: str
    policy: str
    metric: str
    mix: str | None
    policy_args: dict
    loss: str | None
    loss_args: dict
    set_args: dict | None          # mix.* arguments the suite entry set (None: unknown)
    set_loss_args: dict | None     # loss.* arguments the suite entry set
    values: Mapping[int, float]
    ece: tuple[float, ...] = ()
    seconds_per_epoch: tuple[float, ...] = ()
    samples_per_second: tuple[float, ...] = ()
    peak_memory_mb: tuple[float, ...] = ()
    selections: tuple[Selection, ...] = ()
    superseded: int = 0            # older rows of the same seed that a later row replaced

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(self.values)


@dataclass(frozen=True)
class CellReport:
    """A cell with its statistics; ``comparison`` is None for the baseline itself."""

    data: CellData
    stats: stats.CellStats
    ece: stats.CellStats | None
    comparison: stats.Comparison | None
    cost_vs_baseline: float | None
    mean_rank: float | None
    rank_group: str | None


@dataclass(frozen=True)
class PanelReport:
    dataset: str
    model: str
    epochs: int | None
    task: str
    metric: Metric
    cells: tuple[CellReport, ...]
    winner: str | None              # best mean whose interval clears the runner-up's
    tied: tuple[str, ...]           # no winner: the policies whose interval overlaps the top's
    selections: tuple[Selection, ...]

    @property
    def title(self) -> str:
        epochs = "" if self.epochs is None else f" · {self.epochs} epochs"
        return f"{self.dataset} · {self.model}{epochs}"


@dataclass(frozen=True)
class FailedRun:
    dataset: str
    model: str
    policy: str
    seed: Any
    error: str


@dataclass(frozen=True)
class Report:
    suite: str
    baseline: str | None
    panels: tuple[PanelReport, ...]
    ranks: tuple[stats.RankSummary, ...]
    failed: tuple[FailedRun, ...] = ()
    confidence: float = stats.CONFIDENCE
    alpha: float = stats.ALPHA
    superseded: int = field(default=0)
    claims: tuple = ()              # openmix.bench.claims.ClaimResult per claim of the suite


# ---- reading rows ------------------------------------------------------------------------
def number(value: Any) -> float | None:
    """A finite float, or None for missing, boolean or non-numeric values."""
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def lookup(mapping: Any, path: str) -> Any:
    """``mapping[path]`` if present, else follow the dotted ``path`` (``selected.test.top1``; keys
    holding dots, such as ``occlusion_0.5``, are matched whole)."""
    return resolve_path(mapping, path)


def _set_by_overrides(overrides: Any, prefix: str) -> dict | None:
    """``{"alpha": "0.2"}`` from overrides such as ``mix.alpha=0.2`` (later ones win)."""
    if not overrides:
        return None
    out = {}
    for item in overrides:
        if isinstance(item, str) and item.startswith(prefix) and "=" in item:
            key, _, value = item[len(prefix):].partition("=")
            out[key] = value
    return out


def _last_k(row: dict) -> int | None:
    trainer = (row.get("config") or {}).get("trainer") or {}
    value = trainer.get("last_k") if isinstance(trainer, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def selection_of(row: dict, metric: str) -> Selection:
    """The rule behind ``metric``: the trainer's ``selected`` record (``{rule, metric, k, epoch,
    val, test}``, in ``final`` or the row) when the metric is read from it (``selected.…``),
    else inferred from the metric's name."""
    if metric.startswith("selected."):
        selected = (row.get("final") or {}).get("selected") or row.get("selected") or {}
        if isinstance(selected, Mapping) and selected.get("rule"):
            k = selected.get("k")
            k = k if isinstance(k, int) and not isinstance(k, bool) else _last_k(row)
            return Selection(str(selected["rule"]), selected.get("metric"), k)
        return Selection("unknown")
    if "median_last_k" in metric:
        return Selection("last_k", None, _last_k(row))
    return Selection("final")


def _ece_of(final: Mapping, metric: str) -> float | None:
    """ECE of the same epoch as the headline (``selected.test.ece``), else the final one."""
    if "." in metric:
        value = number(lookup(final, metric.rsplit(".", 1)[0] + ".ece"))
        if value is not None:
            return value
    return number(final.get("ece"))


def headline_of(row: dict, metric: str | None) -> float | None:
    """The row's ``headline`` column, else ``final[metric]`` (dotted paths allowed)."""
    value = number(row.get("headline"))
    if value is None and metric:
        value = number(lookup(row.get("final") or {}, metric))
    return value


# ---- grouping ----------------------------------------------------------------------------
def _run_of(row: dict, metric: str, value: float) -> dict:
    final = row.get("final") or {}
    return {
        "value": value,
        "ece": _ece_of(final, metric),
        "seconds_per_epoch": number(row.get("seconds_per_epoch")),
        "samples_per_second": number(row.get("samples_per_second")),
        "peak_memory_mb": number(row.get("peak_memory_mb")),
        "selection": selection_of(row, metric),
    }


def _cell_of(row: dict, task: str, metric: str, runs: dict, superseded: int) -> CellData:
    def present(name: str) -> tuple[float, ...]:
        return tuple(r[name] for r in runs.values() if r[name] is not None)

    return CellData(
        suite=row["suite"], dataset=row["dataset"], model=row["model"], epochs=row.get("epochs"),
        task=task, policy=row["policy"], metric=metric, mix=row.get("mix_name"),
        policy_args=row.get("policy_args") or {}, loss=row.get("loss"),
        loss_args=row.get("loss_args") or {},
        set_args=_set_by_overrides(row.get("overrides"), "mix."),
        set_loss_args=_set_by_overrides(row.get("overrides"), "loss."),
        values={seed: r["value"] for seed, r in runs.items()},
        ece=present("ece"), seconds_per_epoch=present("seconds_per_epoch"),
        samples_per_second=present("samples_per_second"), peak_memory_mb=present("peak_memory_mb"),
        selections=tuple(dict.fromkeys(r["selection"] for r in runs.values())),
        superseded=superseded,
    )


def group_cells(rows: Iterable[dict], headline: Mapping[str, str] | None = None) -> list[CellData]:
    """Successful rows -> one :class:`CellData` per (suite, dataset, model, epochs, policy,
    metric), in the order of their first row. A later row of the same seed replaces an earlier
    one (counted in ``superseded``); rows without a headline value are left out."""
    headline = {**DEFAULT_HEADLINE, **(headline or {})}
    groups: dict[tuple, tuple[dict, str, str, dict]] = {}
    superseded: dict[tuple, int] = {}
    for row in rows:
        if row.get("status", "ok") != "ok":
            continue
        task = row.get("task") or "classification"
        metric = row.get("headline_metric") or headline.get(task)
        if not metric:
            raise ValueError(f"headline must name a metric for task {task!r}, got {headline!r} "
                             f"and a row without headline_metric ({row.get('policy')!r})")
        value = headline_of(row, metric)
        if value is None:
            continue
        key = (row["suite"], row["dataset"], row["model"], row.get("epochs"), row["policy"], metric)
        runs = groups.setdefault(key, (row, task, metric, {}))[3]
        seed = int(row["seed"])
        superseded[key] = superseded.get(key, 0) + (seed in runs)
        runs[seed] = _run_of(row, metric, value)
    return [_cell_of(first, task, metric, runs, superseded[key])
            for key, (first, task, metric, runs) in groups.items()]


def panel_title(dataset: str, model: str, epochs: int | None) -> str:
    epochs_text = "" if epochs is None else f" · {epochs} epochs"
    return f"{dataset} · {model}{epochs_text}"


def group_panels(cells: Sequence[CellData], baseline: str | None) -> list[list[CellData]]:
    """Cells -> tables of one (dataset, model, epochs, metric); the baseline first in each."""
    panels: dict[tuple, list[CellData]] = {}
    for cell in cells:
        panels.setdefault((cell.dataset, cell.model, cell.epochs, cell.metric), []).append(cell)
    return [sorted(p, key=lambda c: 0 if c.policy == baseline else 1) for p in panels.values()]


# ---- statistics per table and across tables ----------------------------------------------
def rank_groups(panels: Sequence[Sequence[CellData]], alpha: float = stats.ALPHA
                ) -> list[stats.RankSummary]:
    """One :class:`~openmix.bench.stats.RankSummary` per task, over the policies that every
    table of that task has (a task with fewer than 2 such policies is left out); a table's
    score for a policy is its mean over seeds."""
    by_task: dict[str, list[Sequence[CellData]]] = {}
    for panel in panels:
        by_task.setdefault(panel[0].task, []).append(panel)
    out = []
    for task, group in by_task.items():
        means = [{c.policy: _mean(list(c.values.values())) for c in p} for p in group]
        common = [c.policy for c in group[0] if all(c.policy in m for m in means)]
        if len(common) < 2:  # nothing to rank
            continue
        out.append(stats.rank_summary(
            [[m[policy] for policy in common] for m in means], common,
            [metric_direction(p[0].metric).higher_is_better for p in group], group=task,
            panels=[panel_title(p[0].dataset, p[0].model, p[0].epochs) for p in group], alpha=alpha,
        ))
    return out


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def panel_report(panel: Sequence[CellData], baseline: str | None, ranks: Mapping[str, stats.RankSummary],
                 confidence: float = stats.CONFIDENCE, alpha: float = stats.ALPHA) -> PanelReport:
    """Statistics of one table: per-cell intervals, paired comparisons, costs, ranks, winner."""
    first = panel[0]
    metric = metric_direction(first.metric)
    comparisons = {} if baseline is None else stats.compare_to_baseline(
        {c.policy: c.values for c in panel}, baseline, metric.higher_is_better, alpha)
    base = next((c for c in panel if c.policy == baseline), None)
    base_cost = _mean(base.seconds_per_epoch) if base is not None else None
    summary = ranks.get(first.task)
    cells = []
    for cell in panel:
        cost = _mean(cell.seconds_per_epoch)
        cells.append(CellReport(
            data=cell, stats=stats.cell_stats(list(cell.values.values()), confidence),
            ece=stats.cell_stats(cell.ece, confidence) if cell.ece else None,
            comparison=comparisons.get(cell.policy),
            cost_vs_baseline=cost / base_cost if cost is not None and base_cost else None,
            mean_rank=summary.rank_of(cell.policy) if summary else None,
            rank_group=summary.group if summary and cell.policy in summary.policies else None,
        ))
    cell_stats = [c.stats for c in cells]
    winner = stats.clear_winner(cell_stats, metric.higher_is_better)
    tied = stats.tied_with_best(cell_stats, metric.higher_is_better)
    return PanelReport(
        dataset=first.dataset, model=first.model, epochs=first.epochs, task=first.task,
        metric=metric, cells=tuple(cells), winner=None if winner is None else panel[winner].policy,
        tied=tuple(panel[i].policy for i in tied),
        selections=tuple(dict.fromkeys(s for c in panel for s in c.selections)),
    )


def failed_run(row: dict) -> FailedRun:
    lines = (row.get("error") or "").strip().splitlines()
    return FailedRun(str(row.get("dataset")), str(row.get("model")), str(row.get("policy")),
                     row.get("seed"), lines[-1] if lines else "unknown error")


def build_report(
    suite: str,
    rows: Iterable[dict],
    failed: Iterable[dict] = (),
    baseline: str | None = "vanilla",
    headline: Mapping[str, str] | None = None,
    confidence: float = stats.CONFIDENCE,
    alpha: float = stats.ALPHA,
    claims: Sequence = (),
) -> Report:
    """The whole leaderboard of ``suite`` as one immutable :class:`Report`; ``claims``: the
    suite's ``ClaimSpec``s, evaluated on the same rows."""
    from .claims import evaluate_claims
    rows = list(rows)
    cells = group_cells(rows, headline)
    panels = group_panels(cells, baseline)
    ranks = rank_groups(panels, alpha)
    by_group = {r.group: r for r in ranks}
    return Report(
        suite=suite, baseline=baseline,
        panels=tuple(panel_report(p, baseline, by_group, confidence, alpha) for p in panels),
        ranks=tuple(ranks), failed=tuple(failed_run(r) for r in failed),
        confidence=confidence, alpha=alpha, superseded=sum(c.superseded for c in cells),
        claims=evaluate_claims(rows, claims, dict(headline or DEFAULT_HEADLINE), alpha),
    )
