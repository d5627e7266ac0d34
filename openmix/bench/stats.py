"""Leaderboard statistics: pure functions on per-seed values that return frozen records.

No database, no files, no plotting here; ``aggregate`` feeds these functions and the renderers
only read the records they return.

* :func:`cell_stats` — mean, sample std and a 95% **Student-t** interval over the seeds of one
  cell. With 3–5 seeds a percentile bootstrap under-covers (its interval is too narrow), so the
  t-interval is the honest choice.
* :func:`compare_to_baseline` — each policy against the baseline, **paired by seed** (only the
  seeds run by both): ``delta`` = mean of the per-seed differences (policy − baseline), a
  two-sided paired t-test, Holm's correction across the policies of one table, and a verdict.
  A Wilcoxon signed-rank test cannot reach p < 0.05 with fewer than 6 pairs (its smallest
  two-sided p is 2/2^n), so the paired t-test is the only usable test at these seed counts.
  The reported delta interval is the t-interval at the level that matches the Holm decision
  (confidence ``1 − α·p/p_holm``; that is Holm's own step level ``1 − α/(m − i + 1)`` unless the
  adjusted p was raised by monotonicity or capped at 1), so the verdict is ``better``/``worse``
  exactly when that interval excludes 0, and ``not significant`` otherwise.
* :func:`rank_summary` — mean rank across datasets (1 = best, ties averaged), the Friedman
  test and the Nemenyi critical difference ``q_α·sqrt(k(k+1)/(6N))`` with
  ``q_α = studentized_range.ppf(1 − α, k, ∞)/√2`` (Demšar, JMLR 2006).
* :func:`prob_improvement` — rliable's probability of improvement ``P(X > Y)`` over all pairs of
  runs (ties count one half).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

CONFIDENCE = 0.95
ALPHA = 0.05
VERDICTS = ("better", "worse", "not significant")
INTERVAL_METHOD = "t"


def _finite_array(values: Sequence[float], name: str) -> np.ndarray:
    try:
        x = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a sequence of numbers, got {values!r}") from None
    if x.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} must be finite numbers, got {values!r}")
    return x


def _check_level(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
    return float(value)


def t_quantile(confidence: float, df: int) -> float:
    """Two-sided Student-t quantile ``t_{(1+confidence)/2, df}`` (e.g. 2.776 for 0.95, df=4)."""
    _check_level(confidence, "confidence")
    if isinstance(df, bool) or not isinstance(df, (int, np.integer)) or df < 1:
        raise ValueError(f"df must be an integer >= 1, got {df!r}")
    return float(sps.t.ppf(0.5 + confidence / 2.0, df))


# ---- one cell ----------------------------------------------------------------------------
@dataclass(frozen=True)
class CellStats:
    """Mean, sample std (ddof 1) and t-interval of one cell's values over seeds.

    With one value ``std``, ``ci_low`` and ``ci_high`` are NaN (no spread can be estimated)."""

    mean: float
    std: float
    n: int
    ci_low: float
    ci_high: float
    confidence: float = CONFIDENCE
    method: str = INTERVAL_METHOD

    @property
    def half_width(self) -> float:
        return (self.ci_high - self.ci_low) / 2.0


def cell_stats(values: Sequence[float], confidence: float = CONFIDENCE) -> CellStats:
    """``values: (n,)`` per-seed values -> mean ± ``t_{n-1}·s/√n``."""
    x = _finite_array(values, "values")
    _check_level(confidence, "confidence")
    if x.size == 0:
        raise ValueError("values must hold at least one value, got an empty sequence")
    mean = float(x.mean())
    if x.size < 2:
        return CellStats(mean, math.nan, 1, math.nan, math.nan, confidence)
    std = float(x.std(ddof=1))
    half = t_quantile(confidence, x.size - 1) * std / math.sqrt(x.size)
    return CellStats(mean, std, int(x.size), mean - half, mean + half, confidence)


# ---- paired comparison with the baseline -------------------------------------------------
@dataclass(frozen=True)
class PairedTest:
    """Paired t-test of ``policy − baseline`` over the seeds both ran (``p_value`` NaN if n < 2)."""

    seeds: tuple[int, ...]
    delta: float
    std: float
    p_value: float
    note: str = ""

    @property
    def n_pairs(self) -> int:
        return len(self.seeds)


def paired_t_test(policy: Mapping[int, float], baseline: Mapping[int, float]) -> PairedTest:
    """``policy``, ``baseline``: seed -> value. Two-sided paired t-test on the common seeds.

    When every paired difference is the same number the spread is zero: the test is decided
    by that number alone (p = 1 if it is 0, else p = 0)."""
    seeds = tuple(sorted(set(policy) & set(baseline)))
    if not seeds:
        return PairedTest((), math.nan, math.nan, math.nan, "no seed was run by both")
    a = _finite_array([policy[s] for s in seeds], "policy")
    b = _finite_array([baseline[s] for s in seeds], "baseline")
    diffs = a - b
    delta = float(diffs.mean())
    if len(seeds) < 2:
        return PairedTest(seeds, delta, math.nan, math.nan, "1 paired seed; a test needs at least 2")
    std = float(diffs.std(ddof=1))
    tolerance = 1e-9 * max(1.0, float(np.abs(a).max()), float(np.abs(b).max()))
    if std <= tolerance:  # rounding noise of an exactly constant difference
        if abs(delta) <= tolerance:
            return PairedTest(seeds, 0.0, 0.0, 1.0, "identical on every paired seed")
        return PairedTest(seeds, delta, 0.0, 0.0, "the same difference on every paired seed")
    t_stat = delta / (std / math.sqrt(len(seeds)))
    p_value = float(2.0 * sps.t.sf(abs(t_stat), len(seeds) - 1))
    return PairedTest(seeds, delta, std, p_value)


def holm_adjust(p_values: Sequence[float]) -> np.ndarray:
    """Holm step-down adjusted p-values, ``(m,) -> (m,)``; NaN entries stay NaN and are not
    counted in the family. ``p_(i)`` (i-th smallest, from 1) becomes
    ``max_{j<=i} min(1, (m − j + 1)·p_(j))``."""
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1:
        raise ValueError(f"p_values must be one-dimensional, got shape {p.shape}")
    finite = np.flatnonzero(np.isfinite(p))
    if np.any((p[finite] < 0) | (p[finite] > 1)):
        raise ValueError(f"p_values must lie in [0, 1] (or be NaN), got {list(p_values)!r}")
    out = np.full(p.shape, math.nan)
    order = finite[np.argsort(p[finite], kind="stable")]
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p[index]))
        out[index] = running
    return out


@dataclass(frozen=True)
class Comparison:
    """One policy against the baseline on one table, paired by seed.

    ``delta`` = mean over the paired seeds of (policy − baseline) in the metric's units;
    ``delta_ci_*`` is the t-interval at ``delta_confidence`` (the Holm-matched level);
    ``verdict`` is one of :data:`VERDICTS` and ``reason`` says why."""

    policy: str
    baseline: str
    seeds: tuple[int, ...]
    delta: float
    delta_ci_low: float
    delta_ci_high: float
    delta_confidence: float
    p_value: float
    p_holm: float
    verdict: str
    reason: str
    prob_improvement: float = math.nan

    @property
    def n_pairs(self) -> int:
        return len(self.seeds)


def holm_matched_confidence(p_value: float, p_holm: float, alpha: float = ALPHA) -> float:
    """Confidence ``1 − α·p/p_holm`` whose two-sided t-interval excludes 0 exactly when
    ``p_holm < α`` (the interval at level 1 − a excludes 0 iff p < a)."""
    if not (p_value > 0 and p_holm > 0):
        return 1.0 - alpha  # zero spread: the interval is a single point at any level
    return 1.0 - alpha * p_value / p_holm


def decide(test: PairedTest, p_holm: float, higher_is_better: bool, alpha: float = ALPHA
           ) -> tuple[float, float, float, str, str]:
    """(interval low, high, its confidence, verdict, reason) of a tested comparison: the t-interval
    at the Holm-matched level, and the verdict read from it in the metric's direction."""
    level = holm_matched_confidence(test.p_value, p_holm, alpha)
    half = 0.0 if test.std == 0 else (
        t_quantile(level, test.n_pairs - 1) * test.std / math.sqrt(test.n_pairs))
    low, high = test.delta - half, test.delta + half
    if low > 0 or high < 0:
        improves = (test.delta > 0) == higher_is_better
        verdict = "better" if improves else "worse"
        reason = f"Holm-adjusted p = {p_holm:.3g} < {alpha:g}: the interval excludes 0"
    else:
        verdict = "not significant"
        reason = f"Holm-adjusted p = {p_holm:.3g} >= {alpha:g}: the interval covers 0"
    if test.note:
        reason = f"{test.note}; {reason}"
    return low, high, level, verdict, reason


def compare_to_baseline(
    values: Mapping[str, Mapping[int, float]],
    baseline: str,
    higher_is_better: bool,
    alpha: float = ALPHA,
) -> dict[str, Comparison]:
    """``values``: policy -> (seed -> value) for one table. Returns policy -> Comparison for
    every policy except the baseline; the Holm family is the policies that have a p-value."""
    _check_level(alpha, "alpha")
    others = [p for p in values if p != baseline]
    if baseline not in values:
        reason = f"no {baseline!r} runs in this table to compare with"
        return {p: _untested(p, baseline, PairedTest((), math.nan, math.nan, math.nan, reason))
                for p in others}
    tests = {p: paired_t_test(values[p], values[baseline]) for p in others}
    adjusted = holm_adjust([tests[p].p_value for p in others])
    out = {}
    for policy, p_holm in zip(others, adjusted):
        test = tests[policy]
        pi = prob_improvement(list(values[policy].values()), list(values[baseline].values()),
                              higher_is_better)
        if not math.isfinite(test.p_value):
            out[policy] = _untested(policy, baseline, test, pi)
            continue
        low, high, level, verdict, reason = decide(test, float(p_holm), higher_is_better, alpha)
        out[policy] = Comparison(policy, baseline, test.seeds, test.delta, low, high, level,
                                 test.p_value, float(p_holm), verdict, reason, pi)
    return out


def _untested(policy: str, baseline: str, test: PairedTest, pi: float = math.nan) -> Comparison:
    nan = math.nan
    return Comparison(policy, baseline, test.seeds, test.delta, nan, nan, nan, nan, nan,
                      "not significant", f"not tested: {test.note}", pi)


def prob_improvement(x: Sequence[float], y: Sequence[float], higher_is_better: bool = True) -> float:
    """rliable's ``P(X > Y)``: over all pairs of runs ``(x_i, y_j)``, the share where x is
    better, ties counting one half. ``x: (n,)``, ``y: (m,)``; NaN if either is empty."""
    a, b = _finite_array(x, "x"), _finite_array(y, "y")
    if a.size == 0 or b.size == 0:
        return math.nan
    sign = 1.0 if higher_is_better else -1.0
    diff = sign * (a[:, None] - b[None, :])
    return float(np.mean((diff > 0) + 0.5 * (diff == 0)))


def clear_winner(cells: Sequence[CellStats], higher_is_better: bool) -> int | None:
    """Index of the best mean if its interval clears the runner-up's (no overlap), else None."""
    if len(cells) < 2:
        return None
    sign = 1.0 if higher_is_better else -1.0
    order = sorted(range(len(cells)), key=lambda i: -sign * cells[i].mean)
    best, runner = cells[order[0]], cells[order[1]]
    if not all(math.isfinite(v) for v in (best.ci_low, best.ci_high, runner.ci_low, runner.ci_high)):
        return None
    clears = best.ci_low > runner.ci_high if higher_is_better else best.ci_high < runner.ci_low
    return order[0] if clears else None


def tied_with_best(cells: Sequence[CellStats], higher_is_better: bool) -> tuple[int, ...]:
    """Indices (best mean first) whose interval overlaps the best mean's interval; empty when
    there is a clear winner, fewer than 2 cells, or the best mean has no interval."""
    if len(cells) < 2 or clear_winner(cells, higher_is_better) is not None:
        return ()
    sign = 1.0 if higher_is_better else -1.0
    order = sorted(range(len(cells)), key=lambda i: -sign * cells[i].mean)
    best = cells[order[0]]
    if not (math.isfinite(best.ci_low) and math.isfinite(best.ci_high)):
        return ()
    return tuple(i for i in order if cells[i].ci_low <= best.ci_high and cells[i].ci_high >= best.ci_low)


# ---- across datasets ---------------------------------------------------------------------
def nemenyi_critical_difference(k: int, n: int, alpha: float = ALPHA) -> float:
    """Nemenyi CD for ``k`` policies on ``n`` datasets: ``q_α·sqrt(k(k+1)/(6n))`` (Demšar 2006)."""
    _check_level(alpha, "alpha")
    for name, value, least in (("k", k, 2), ("n", n, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    q_alpha = float(sps.studentized_range.ppf(1.0 - alpha, k, np.inf)) / math.sqrt(2.0)
    return q_alpha * math.sqrt(k * (k + 1) / (6.0 * n))


@dataclass(frozen=True)
class RankSummary:
    """Ranks of the policies run on every dataset of a group (e.g. one task).

    ``mean_ranks[j]`` belongs to ``policies[j]`` (1 = best). Friedman and CD fields are NaN and
    ``reason`` says why when the test could not be run; ``cliques`` are the maximal sets of
    policies whose mean ranks differ by less than the CD (only when Friedman rejects)."""

    group: str
    panels: tuple[str, ...]
    policies: tuple[str, ...]
    mean_ranks: tuple[float, ...]
    friedman_statistic: float
    friedman_p: float
    critical_difference: float
    cliques: tuple[tuple[str, ...], ...]
    alpha: float
    reason: str

    @property
    def n_datasets(self) -> int:
        return len(self.panels)

    def rank_of(self, policy: str) -> float | None:
        return self.mean_ranks[self.policies.index(policy)] if policy in self.policies else None


def rank_matrix(scores: np.ndarray, higher_is_better: Sequence[bool]) -> np.ndarray:
    """``scores: (N datasets, k policies)`` -> ranks ``(N, k)``, 1 = best, ties averaged."""
    signs = np.where(np.asarray(higher_is_better, dtype=bool), -1.0, 1.0)[:, None]
    return np.vstack([sps.rankdata(row) for row in signs * scores]) if len(scores) else scores


def rank_summary(
    scores: Sequence[Sequence[float]],
    policies: Sequence[str],
    higher_is_better: Sequence[bool],
    group: str = "",
    panels: Sequence[str] | None = None,
    alpha: float = ALPHA,
) -> RankSummary:
    """``scores: (N, k)`` cell means, one row per dataset, one column per policy."""
    _check_level(alpha, "alpha")
    s = np.asarray(scores, dtype=float)
    if s.ndim != 2 or s.shape[1] != len(policies) or s.shape[0] == 0:
        raise ValueError(f"scores must be (datasets, {len(policies)} policies), got shape {s.shape}")
    if len(higher_is_better) != s.shape[0] or not np.all(np.isfinite(s)):
        raise ValueError(f"higher_is_better must give one direction per dataset ({s.shape[0]}) and "
                         f"scores must be finite, got {list(higher_is_better)!r} and {s.tolist()!r}")
    panels = tuple(panels) if panels is not None else tuple(f"dataset {i}" for i in range(len(s)))
    n, k = s.shape
    mean_ranks = tuple(float(r) for r in rank_matrix(s, higher_is_better).mean(axis=0))
    nan = math.nan
    if k < 3 or n < 2:
        reason = (f"the Friedman test needs >= 3 policies run on >= 2 datasets, got {k} "
                  f"polic{'y' if k == 1 else 'ies'} on {n} dataset{'' if n == 1 else 's'}")
        return RankSummary(group, panels, tuple(policies), mean_ranks, nan, nan, nan, (), alpha, reason)
    signed = np.where(np.asarray(higher_is_better)[:, None], s, -s)
    if all(np.ptp(row) == 0 for row in signed):
        return RankSummary(group, panels, tuple(policies), mean_ranks, nan, nan, nan, (), alpha,
                           "every policy ties on every dataset")
    statistic, p_value = sps.friedmanchisquare(*signed.T)
    cd = nemenyi_critical_difference(k, n, alpha)
    cliques = nemenyi_cliques(policies, mean_ranks, cd) if p_value < alpha else ()
    return RankSummary(group, panels, tuple(policies), mean_ranks, float(statistic),
                       float(p_value), cd, cliques, alpha, "")


def nemenyi_cliques(policies: Sequence[str], mean_ranks: Sequence[float], cd: float
                    ) -> tuple[tuple[str, ...], ...]:
    """Maximal runs of policies (sorted by mean rank) whose ranks span less than ``cd``; pairs
    inside one run are not significantly different. Runs of one policy are left out."""
    order = sorted(range(len(policies)), key=lambda j: mean_ranks[j])
    cliques, reach = [], -1
    for start in range(len(order)):
        end = start
        while end + 1 < len(order) and mean_ranks[order[end + 1]] - mean_ranks[order[start]] < cd:
            end += 1
        if end > start and end > reach:
            cliques.append(tuple(policies[j] for j in order[start:end + 1]))
            reach = end
    return tuple(cliques)
