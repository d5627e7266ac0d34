"""Leaderboard statistics against hand-computed cases and textbook tables."""
import math

import numpy as np
import pytest
from scipy import stats as sps

from openmix.bench import stats
from openmix.bench.suite import lower_is_better as suite_lower_is_better
from openmix.metrics_direction import Metric, lower_is_better, metric_direction


# ---- metric direction --------------------------------------------------------------------
@pytest.mark.parametrize("name, mode", [
    ("selected.test.rmse", "min"), ("selected.test.top1", "max"), ("rmse_median_last_k", "min"),
    ("top1_median_last_k", "max"), ("nll", "min"), ("ece", "min"), ("brier", "min"),
    ("mae", "min"), ("mse", "min"), ("mape", "min"), ("selected.val.ece", "min"), ("top5", "max"),
    ("msec_per_batch", "max"),  # 'mse' must be the whole word, not a prefix of another one
])
def test_metric_direction_reads_the_last_component(name, mode):
    assert metric_direction(name) == Metric(name, mode)
    assert lower_is_better(name) is (mode == "min") is suite_lower_is_better(name)


def test_metric_better_follows_the_mode_and_never_prefers_nan():
    top1, rmse, nan = metric_direction("top1"), metric_direction("selected.test.rmse"), float("nan")
    assert top1.better(0.9, 0.8) and not top1.better(0.8, 0.9) and not top1.better(0.8, 0.8)
    assert rmse.better(0.8, 0.9) and not rmse.better(0.9, 0.8)
    assert top1.better(0.1, nan) and not top1.better(nan, 0.1) and not rmse.better(nan, nan)


def test_metric_direction_rejects_bad_names():
    with pytest.raises(ValueError, match="name must be a non-empty metric name, got ''"):
        metric_direction("")
    with pytest.raises(ValueError, match="mode must be one of"):
        Metric("top1", "up")


# ---- one cell ----------------------------------------------------------------------------
def test_t_quantile_matches_the_textbook_table():
    # two-sided 95% Student-t critical values from any statistics table
    for df, table in ((1, 12.706), (2, 4.303), (4, 2.776), (9, 2.262), (30, 2.042)):
        assert stats.t_quantile(0.95, df) == pytest.approx(table, abs=5e-4)


def test_cell_interval_by_hand():
    cell = stats.cell_stats([1.0, 2.0, 3.0, 4.0, 5.0])
    # mean 3, s = sqrt(2.5), half-width = t_{0.975,4} * s / sqrt(5) = 2.776 * 0.70711
    assert (cell.mean, cell.n) == (3.0, 5)
    assert cell.std == pytest.approx(math.sqrt(2.5))
    assert cell.half_width == pytest.approx(2.776 * math.sqrt(2.5) / math.sqrt(5), abs=1e-3)
    assert (cell.ci_low, cell.ci_high) == pytest.approx((3 - 1.9630, 3 + 1.9630), abs=1e-3)
    assert cell.method == "t" and cell.confidence == 0.95


def test_one_value_has_no_interval_and_bad_input_is_named():
    cell = stats.cell_stats([7.5])
    assert cell.mean == 7.5 and cell.n == 1 and math.isnan(cell.std) and math.isnan(cell.half_width)
    with pytest.raises(ValueError, match="values must hold at least one value"):
        stats.cell_stats([])
    with pytest.raises(ValueError, match="values must be finite numbers, got"):
        stats.cell_stats([1.0, float("nan")])
    with pytest.raises(ValueError, match=r"confidence must be a number in \(0, 1\), got 95"):
        stats.cell_stats([1.0, 2.0], confidence=95)


# ---- paired comparison -------------------------------------------------------------------
def _t4_cdf(t):
    """Closed-form CDF of Student's t with 4 degrees of freedom."""
    x = t / math.sqrt(t * t + 4)
    return 0.5 + 0.75 * x * (1 - x * x / 3)


def test_paired_comparison_by_hand():
    baseline = {0: 10.0, 1: 11.0, 2: 12.0, 3: 13.0, 4: 14.0, 9: 50.0}  # seed 9: no partner
    policy = {0: 11.0, 1: 13.0, 2: 15.0, 3: 17.0, 4: 19.0, 7: 0.0}     # differences 1..5
    out = stats.compare_to_baseline({"base": baseline, "new": policy}, "base", higher_is_better=True)
    c = out["new"]
    assert c.seeds == (0, 1, 2, 3, 4) and c.n_pairs == 5
    # delta = 3, s_d = sqrt(2.5), t = 3 / (s_d / sqrt 5) = 4.2426 on 4 degrees of freedom
    t_stat = 3 / math.sqrt(2.5 / 5)
    assert c.delta == pytest.approx(3.0)
    assert c.p_value == pytest.approx(2 * (1 - _t4_cdf(t_stat)), rel=1e-9)
    assert c.p_value == pytest.approx(0.01324, abs=5e-5)
    keep = list(range(5))
    assert c.p_value == pytest.approx(sps.ttest_rel([policy[s] for s in keep],
                                                    [baseline[s] for s in keep]).pvalue)
    # one comparison: Holm changes nothing, the interval is the plain 95% t-interval
    assert c.p_holm == pytest.approx(c.p_value) and c.delta_confidence == pytest.approx(0.95)
    assert (c.delta_ci_low, c.delta_ci_high) == pytest.approx((3 - 1.963, 3 + 1.963), abs=1e-3)
    assert c.verdict == "better" and "base" not in out
    # the same numbers read as an error metric: the policy is worse
    assert stats.compare_to_baseline({"base": baseline, "new": policy}, "base",
                                     higher_is_better=False)["new"].verdict == "worse"


@pytest.mark.parametrize("offset, higher_is_better, verdict", [
    (0.5, True, "better"), (-0.5, True, "worse"), (0.5, False, "worse"), (-0.02, False, "better"),
])
def test_constant_offset_per_seed_is_significant(offset, higher_is_better, verdict):
    baseline = {0: 91.3, 1: 94.1, 2: 92.7, 3: 90.2, 4: 93.3}
    policy = {seed: value + offset for seed, value in baseline.items()}
    c = stats.compare_to_baseline({"vanilla": baseline, "p": policy}, "vanilla", higher_is_better)["p"]
    assert c.verdict == verdict and c.p_value == 0.0
    assert c.delta == pytest.approx(offset) and c.delta_ci_low == c.delta_ci_high == c.delta
    assert "same difference on every paired seed" in c.reason


def test_identical_policies_are_not_significant():
    baseline = {0: 91.3, 1: 94.1, 2: 92.7}
    for higher in (True, False):
        c = stats.compare_to_baseline({"vanilla": baseline, "copy": dict(baseline)}, "vanilla",
                                      higher)["copy"]
        assert c.verdict == "not significant" and c.delta == 0.0 and c.p_value == 1.0
        assert c.delta_ci_low == c.delta_ci_high == 0.0


def test_too_few_pairs_or_no_baseline_is_not_significant_with_a_reason():
    values = {"vanilla": {0: 1.0, 1: 2.0}, "one": {1: 5.0, 3: 6.0}, "none": {7: 1.0}}
    out = stats.compare_to_baseline(values, "vanilla", True)
    assert out["one"].verdict == "not significant" and out["one"].n_pairs == 1
    assert out["one"].delta == 3.0 and math.isnan(out["one"].p_value)
    assert "1 paired seed" in out["one"].reason and "no seed was run by both" in out["none"].reason
    missing = stats.compare_to_baseline({"mixup": {0: 1.0, 1: 2.0}}, "vanilla", True)
    assert missing["mixup"].verdict == "not significant" and "no 'vanilla' runs" in missing["mixup"].reason


def test_holm_by_hand():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, max(0.06, 0.04*1) = 0.06; NaN ignored
    adjusted = stats.holm_adjust([0.01, 0.04, float("nan"), 0.03, 0.005])
    assert adjusted[[0, 1, 3, 4]] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert math.isnan(adjusted[2])
    assert stats.holm_adjust([0.6, 0.5]) == pytest.approx([1.0, 1.0])  # capped at 1
    with pytest.raises(ValueError, match=r"p_values must lie in \[0, 1\]"):
        stats.holm_adjust([1.5])


def test_holm_decides_and_the_interval_agrees():
    """Raw p < 0.05 but Holm-adjusted p >= 0.05 -> not significant, and the reported interval
    covers 0; over many seeded random tables the verdict is better/worse exactly when
    p_holm < 0.05, which is exactly when the interval excludes 0."""
    rng = np.random.default_rng(0)
    saw_rescued = False
    for trial in range(300):
        base = rng.normal(90, 1, 5)
        values = {"vanilla": dict(enumerate(base))}
        for j in range(4):
            values[f"p{j}"] = dict(enumerate(base + rng.normal(rng.normal(0, 0.6), 0.5, 5)))
        higher = bool(trial % 2)
        for c in stats.compare_to_baseline(values, "vanilla", higher).values():
            excludes = c.delta_ci_low > 0 or c.delta_ci_high < 0
            assert excludes == (c.p_holm < 0.05)
            assert (c.verdict != "not significant") == excludes
            if excludes:
                assert c.verdict == ("better" if (c.delta > 0) == higher else "worse")
            half = stats.t_quantile(c.delta_confidence, 4) * np.std(
                [values[c.policy][s] - values["vanilla"][s] for s in c.seeds], ddof=1) / math.sqrt(5)
            assert c.delta_ci_high - c.delta == pytest.approx(half)
            saw_rescued |= c.p_value < 0.05 <= c.p_holm
    assert saw_rescued  # the case Holm exists for did occur


def test_prob_improvement_by_hand():
    # pairs (3,1) (3,3) (4,1) (4,3): x better in 3, tied in 1 -> 3.5 / 4
    assert stats.prob_improvement([3, 4], [1, 3]) == pytest.approx(0.875)
    assert stats.prob_improvement([3, 4], [1, 3], higher_is_better=False) == pytest.approx(0.125)


def test_clear_winner_only_when_the_interval_clears_the_runner_up():
    def cell(mean, half):
        return stats.CellStats(mean, 1.0, 3, mean - half, mean + half)

    cells = [cell(90.0, 0.5), cell(92.0, 0.5), cell(90.9, 0.5)]  # 91.5 > 91.4: clears
    assert stats.clear_winner(cells, True) == 1 and stats.tied_with_best(cells, True) == ()
    overlapping = [cell(90.0, 0.5), cell(92.0, 0.5), cell(91.4, 0.5)]
    assert stats.clear_winner(overlapping, True) is None
    assert stats.tied_with_best(overlapping, True) == (1, 2)
    lower = [cell(91.2, 0.5), cell(90.0, 0.5)]
    assert stats.clear_winner(lower, False) == 1  # lower is better: 90.5 < 90.7
    assert stats.clear_winner([cell(1.0, 0.1)], True) is None


# ---- across datasets ---------------------------------------------------------------------
def test_mean_rank_and_friedman_by_hand():
    scores = [[0.90, 0.80, 0.70],   # ranks 1 2 3
              [0.85, 0.86, 0.60],   # ranks 2 1 3
              [0.70, 0.60, 0.65]]   # ranks 1 3 2
    summary = stats.rank_summary(scores, ["A", "B", "C"], [True] * 3, group="cls")
    assert summary.mean_ranks == pytest.approx((4 / 3, 2.0, 8 / 3))
    # chi2_F = 12N/(k(k+1)) * sum(R_j^2) - 3N(k+1) = 3 * 116/9 - 36 = 8/3, df 2: p = exp(-4/3)
    assert summary.friedman_statistic == pytest.approx(8 / 3)
    assert summary.friedman_p == pytest.approx(math.exp(-4 / 3))
    assert summary.critical_difference == pytest.approx(2.343 * math.sqrt(12 / 18), abs=1e-3)
    assert summary.cliques == () and summary.reason == ""  # p = 0.26: no post-hoc groups


def test_ranks_average_ties_and_follow_the_direction():
    ranks = stats.rank_matrix(np.array([[0.9, 0.9, 0.5], [1.0, 2.0, 3.0]]), [True, False])
    assert ranks.tolist() == [[1.5, 1.5, 3.0], [1.0, 2.0, 3.0]]


def test_friedman_needs_three_policies_and_two_datasets():
    one = stats.rank_summary([[1.0, 2.0, 3.0]], ["a", "b", "c"], [True])
    assert math.isnan(one.friedman_p) and "got 3 policies on 1 dataset" in one.reason
    assert one.mean_ranks == (3.0, 2.0, 1.0)
    two = stats.rank_summary([[1.0, 2.0], [3.0, 1.0]], ["a", "b"], [True, True])
    assert "got 2 policies on 2 datasets" in two.reason


def test_nemenyi_critical_difference_matches_demsar_table():
    # Demsar (2006), Table 5(a): q_0.05 for k = 2, 3, 4, 5, 10
    for k, q in ((2, 1.960), (3, 2.343), (4, 2.569), (5, 2.728), (10, 3.164)):
        assert stats.nemenyi_critical_difference(k, 6) == pytest.approx(
            q * math.sqrt(k * (k + 1) / 36), abs=2e-3)
    with pytest.raises(ValueError, match="k must be an integer >= 2, got 1"):
        stats.nemenyi_critical_difference(1, 3)


def test_nemenyi_cliques_by_hand():
    cliques = stats.nemenyi_cliques(["a", "b", "c", "d"], [1.0, 1.5, 3.0, 3.9], cd=1.6)
    # a-b (0.5), b-c (1.5) within CD; a-c (2.0) not; c-d (0.9) within
    assert cliques == (("a", "b"), ("b", "c"), ("c", "d"))
    assert stats.nemenyi_cliques(["a", "b"], [1.0, 2.0], cd=0.5) == ()


def test_a_significant_friedman_gives_groups():
    rng = np.random.default_rng(3)
    # 8 datasets, policy 'good' always best, 'bad' always worst
    scores = np.column_stack([rng.normal(90, 0.1, 8), rng.normal(80, 0.1, 8), rng.normal(85, 0.1, 8)])
    summary = stats.rank_summary(scores, ["good", "bad", "mid"], [True] * 8)
    assert summary.friedman_p < 0.05
    assert summary.mean_ranks == pytest.approx((1.0, 3.0, 2.0))
    # CD = 2.343 * sqrt(12 / 48) = 1.17: good-mid and mid-bad together, good-bad apart
    assert summary.cliques == (("good", "mid"), ("mid", "bad"))
