"""Claims a suite tests: a paper's statement, the runs that test it, and the measured verdict.

A suite may list claims (``claims:`` in its YAML)::

    claims:
      - id: noise-mixup
        text: mixup beats ERM clearly at 40% symmetric label noise
        source: Zhang et al., mixup (ICLR 2018), Table 2
        policy: mixup
        baseline: vanilla                      # default: the suite's baseline
        datasets: [digits-noise40, mnist1d-noise40]
        metric: selected.test.top1             # a dotted path into the run's row: selected.*, reports.*,
                                               # or a plain name of final (default: the suite's headline)
        expect: better                         # better | not_better | larger_gain_than
        reference: digits-full                 # only for larger_gain_than

Verdicts, from per-seed rows (paired by seed, Holm-corrected across the claim's datasets):

- ``better``: *reproduced* when the policy is significantly better than the baseline on every
  dataset; *not reproduced* when it is significantly worse on any; else *inconclusive*.
- ``not_better`` (e.g. "the gain vanishes after temperature scaling"): *reproduced* when it is
  significantly better on none; *not reproduced* when it is on any. A null result is only as
  strong as the interval, which the page prints beside it.
- ``larger_gain_than``: the per-seed gain (policy − baseline) on each dataset against the gain on
  ``reference``, by a paired t-test of their difference; *reproduced* when significantly larger
  on every dataset, *not reproduced* when significantly smaller on any, else *inconclusive*.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from ..metrics_direction import metric_direction
from . import stats
from .aggregate import number
from .suite import summary_value

__all__ = ["ClaimSpec", "DatasetResult", "ClaimResult", "parse_claims", "evaluate_claims", "EXPECTATIONS",
           "VERDICTS"]

EXPECTATIONS = ("better", "not_better", "larger_gain_than")
VERDICTS = ("reproduced", "not reproduced", "inconclusive")
_KEYS = {"id", "text", "source", "policy", "baseline", "datasets", "metric", "expect", "reference", "note"}
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


@dataclass(frozen=True)
class ClaimSpec:
    id: str
    text: str
    source: str
    policy: str
    baseline: str
    datasets: tuple[str, ...]
    metric: str | None
    expect: str
    reference: str | None = None
    note: str = ""


@dataclass(frozen=True)
class DatasetResult:
    """One dataset of a claim: the comparison (policy vs baseline, or gain vs the reference gain)."""
    dataset: str
    comparison: stats.Comparison
    policy_mean: float
    baseline_mean: float


@dataclass(frozen=True)
class ClaimResult:
    spec: ClaimSpec
    metric: str
    higher_is_better: bool
    results: tuple[DatasetResult, ...]
    verdict: str
    reason: str


def _name(value: Any, key: str) -> str:
    if not isinstance(value, str) or not _SAFE.fullmatch(value):
        raise ValueError(f"{key} must be a name of letters, digits and _.+-, got {value!r}")
    return value


def parse_claims(raw: Any, baseline: str | None, datasets: Iterable[str], policies: Iterable[str]) -> tuple[ClaimSpec, ...]:
    """Validate a suite's ``claims`` list against its datasets and policies."""
    if raw is None:
        return ()
    if isinstance(raw, (str, bytes)) or not isinstance(raw, Sequence):
        raise ValueError(f"suite.claims must be a list of claims, got {raw!r}")
    known_datasets, known_policies = set(datasets), set(policies)
    out = []
    for i, item in enumerate(raw):
        key = f"suite.claims[{i}]"
        if not isinstance(item, Mapping):
            raise ValueError(f"{key} must be a mapping, got {item!r}")
        unknown = sorted(set(item) - _KEYS)
        if unknown:
            raise ValueError(f"{key}.{unknown[0]} is not a claim key; accepted: {sorted(_KEYS)}")
        for required in ("id", "text", "source", "policy", "datasets", "expect"):
            if required not in item:
                raise ValueError(f"{key}.{required} is missing")
        out.append(_claim(item, key, baseline, known_datasets, known_policies))
    ids = [c.id for c in out]
    if len(set(ids)) != len(ids):
        raise ValueError(f"suite.claims ids must be distinct, got {ids}")
    return tuple(out)


def _claim(item: Mapping, key: str, baseline: str | None, datasets: set, policies: set) -> ClaimSpec:
    expect = item["expect"]
    if expect not in EXPECTATIONS:
        raise ValueError(f"{key}.expect must be one of {list(EXPECTATIONS)}, got {expect!r}")
    names = item["datasets"]
    if isinstance(names, str) or not isinstance(names, Sequence) or not names:
        raise ValueError(f"{key}.datasets must be a non-empty list of the suite's datasets, got {names!r}")
    for d in [*names, *([item["reference"]] if item.get("reference") is not None else [])]:
        if d not in datasets:
            raise ValueError(f"{key}: dataset {d!r} is not one of the suite's datasets {sorted(datasets)}")
    base = item.get("baseline", baseline)
    for role, p in (("policy", item["policy"]), ("baseline", base)):
        if p not in policies:
            raise ValueError(f"{key}.{role} must be one of the suite's policies {sorted(policies)}, got {p!r}")
    reference = item.get("reference")
    if (expect == "larger_gain_than") != (reference is not None):
        raise ValueError(f"{key}.reference is needed with expect=larger_gain_than and only then, got "
                         f"expect={expect!r}, reference={reference!r}")
    for text_key in ("text", "source"):
        if not isinstance(item[text_key], str) or not item[text_key].strip():
            raise ValueError(f"{key}.{text_key} must be a non-empty string, got {item[text_key]!r}")
    metric = item.get("metric")
    if metric is not None and (not isinstance(metric, str) or not metric):
        raise ValueError(f"{key}.metric must be a dotted metric path such as selected.test.top1, got {metric!r}")
    return ClaimSpec(id=_name(item["id"], f"{key}.id"), text=item["text"].strip(), source=item["source"].strip(),
                     policy=item["policy"], baseline=base, datasets=tuple(names), metric=metric, expect=expect,
                     reference=reference, note=str(item.get("note", "")))


# ---------------------------------------------------------------------------------- verdicts
def _values(rows: Iterable[dict], dataset: str, policy: str, metric: str) -> dict[int, float]:
    """seed -> the metric of the successful runs of (dataset, policy); a later row wins."""
    out: dict[int, float] = {}
    for row in rows:
        if row.get("dataset") != dataset or row.get("policy") != policy or row.get("status", "ok") != "ok":
            continue
        value = number(summary_value(row, metric))
        if value is None and metric == row.get("headline_metric"):
            value = number(row.get("headline"))
        if value is not None:
            out[int(row["seed"])] = value
    return out


def _mean(values: Mapping[int, float]) -> float:
    return sum(values.values()) / len(values) if values else math.nan


def evaluate_claims(rows: Sequence[dict], claims: Sequence[ClaimSpec], headline: Mapping[str, str],
                    alpha: float = stats.ALPHA) -> tuple[ClaimResult, ...]:
    """Every claim's per-dataset comparisons and verdict, recomputed from the rows."""
    return tuple(_evaluate(rows, c, headline, alpha) for c in claims)


def _metric_of(rows: Sequence[dict], claim: ClaimSpec, headline: Mapping[str, str]) -> str:
    if claim.metric:
        return claim.metric
    tasks = {r.get("task") for r in rows if r.get("dataset") in claim.datasets}
    task = next(iter(tasks)) if len(tasks) == 1 else "classification"
    return headline.get(task, "selected.test.top1")


def _evaluate(rows: Sequence[dict], claim: ClaimSpec, headline: Mapping[str, str], alpha: float) -> ClaimResult:
    metric = _metric_of(rows, claim, headline)
    higher = metric_direction(metric).higher_is_better
    per = {d: (_values(rows, d, claim.policy, metric), _values(rows, d, claim.baseline, metric))
           for d in claim.datasets}
    if claim.expect == "larger_gain_than":
        ref_p, ref_b = (_values(rows, claim.reference, p, metric) for p in (claim.policy, claim.baseline))
        reference = {s: ref_p[s] - ref_b[s] for s in set(ref_p) & set(ref_b)}
        pairs = {d: ({s: p[s] - b[s] for s in set(p) & set(b)}, reference) for d, (p, b) in per.items()}
    else:
        pairs = per
    tests = {d: stats.paired_t_test(a, b) for d, (a, b) in pairs.items()}
    tested = [d for d in claim.datasets if math.isfinite(tests[d].p_value)]
    adjusted = dict(zip(tested, stats.holm_adjust([tests[d].p_value for d in tested])))   # Holm across datasets
    results = []
    for d in claim.datasets:
        test = tests[d]
        if d in adjusted:
            low, high, level, verdict, reason = stats.decide(test, float(adjusted[d]), higher, alpha)
            comparison = stats.Comparison(claim.policy, claim.baseline, test.seeds, test.delta, low, high, level,
                                          test.p_value, float(adjusted[d]), verdict, reason)
        else:
            nan = math.nan
            comparison = stats.Comparison(claim.policy, claim.baseline, test.seeds, test.delta, nan, nan, nan, nan,
                                          nan, "not significant", f"not tested: {test.note}")
        results.append(DatasetResult(d, comparison, _mean(per[d][0]), _mean(per[d][1])))
    verdict, reason = _verdict(claim, results)
    return ClaimResult(claim, metric, higher, tuple(results), verdict, reason)


def _verdict(claim: ClaimSpec, results: Sequence[DatasetResult]) -> tuple[str, str]:
    verdicts = [r.comparison.verdict for r in results]
    where = ", ".join(f"{r.dataset}: {r.comparison.verdict}" for r in results)
    if claim.expect == "not_better":
        if any(v == "better" for v in verdicts):
            return "not reproduced", f"significantly better on some dataset ({where})"
        return "reproduced", f"not significantly better on any dataset ({where}); a null result, read its interval"
    if all(v == "better" for v in verdicts):
        return "reproduced", f"significant in the claimed direction on every dataset ({where})"
    if any(v == "worse" for v in verdicts):
        return "not reproduced", f"significant in the opposite direction ({where})"
    return "inconclusive", f"no significant difference on some dataset ({where})"
