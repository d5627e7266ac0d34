"""Claim verdicts from per-seed rows: reproduced / not reproduced / inconclusive, by hand-built cases."""
import pytest

from openmix.bench.claims import evaluate_claims, parse_claims

SEEDS = range(5)
NOISE = [0.3, -0.2, 0.1, -0.4, 0.2]     # per-seed wiggle shared by both policies (paired design)


def _rows(dataset, policy, offset, metric_value=80.0, extra=0.0, metric="top1"):
    return [{"dataset": dataset, "policy": policy, "seed": s, "status": "ok", "task": "classification",
             "headline_metric": "selected.test.top1",
             "selected": {"test": {metric: metric_value + offset + NOISE[s] + extra * s}}}
            for s in SEEDS]


def _claim(**kw):
    base = {"id": "c", "text": "mixup beats ERM", "source": "Zhang et al. 2018", "policy": "mixup",
            "datasets": ["a", "b"], "expect": "better"}
    base.update(kw)
    return parse_claims([base], "vanilla", ["a", "b", "ref"], ["vanilla", "mixup", "cutmix"])


HEADLINE = {"classification": "selected.test.top1"}


def test_better_everywhere_is_reproduced():
    rows = _rows("a", "vanilla", 0) + _rows("a", "mixup", 2.0) + _rows("b", "vanilla", 0) + _rows("b", "mixup", 1.5)
    (result,) = evaluate_claims(rows, _claim(), HEADLINE)
    assert result.verdict == "reproduced" and [r.comparison.verdict for r in result.results] == ["better"] * 2
    assert result.results[0].comparison.delta == pytest.approx(2.0)
    assert result.results[0].policy_mean - result.results[0].baseline_mean == pytest.approx(2.0)


def test_worse_somewhere_is_not_reproduced_and_ties_are_inconclusive():
    rows = _rows("a", "vanilla", 0) + _rows("a", "mixup", 2.0) + _rows("b", "vanilla", 0) + _rows("b", "mixup", -1.0)
    assert evaluate_claims(rows, _claim(), HEADLINE)[0].verdict == "not reproduced"
    # mixup = vanilla + a per-seed wiggle of zero mean: no difference
    wiggle = [0.5, -0.5, 0.3, -0.3, 0.0]
    rows = _rows("a", "vanilla", 0) + _rows("b", "vanilla", 0) + [
        {**r, "policy": "mixup", "selected": {"test": {"top1": r["selected"]["test"]["top1"] + w}}}
        for r, w in zip(_rows("a", "vanilla", 0) + _rows("b", "vanilla", 0), wiggle * 2)]
    result = evaluate_claims(rows, _claim(), HEADLINE)[0]
    assert result.verdict == "inconclusive" and {r.comparison.verdict for r in result.results} == {"not significant"}


def test_lower_is_better_metrics_and_not_better_claims():
    rows = (_rows("a", "vanilla", 0.05, 0.1, metric="ece") + _rows("a", "mixup", 0.0, 0.1, metric="ece"))
    claim = _claim(datasets=["a"], metric="selected.test.ece")
    assert evaluate_claims(rows, claim, HEADLINE)[0].verdict == "reproduced"        # lower ECE is better
    claim = _claim(datasets=["a"], metric="selected.test.ece", expect="not_better")
    assert evaluate_claims(rows, claim, HEADLINE)[0].verdict == "not reproduced"


def test_larger_gain_than_a_reference():
    rows = (_rows("a", "vanilla", 0) + _rows("a", "mixup", 5.0, extra=0.1)
            + _rows("ref", "vanilla", 0) + _rows("ref", "mixup", 1.0))
    claim = _claim(datasets=["a"], expect="larger_gain_than", reference="ref")
    result = evaluate_claims(rows, claim, HEADLINE)[0]
    assert result.verdict == "reproduced" and result.results[0].comparison.delta == pytest.approx(4.2)


def test_claim_specs_are_validated():
    with pytest.raises(ValueError, match=r"suite.claims\[0\].expect must be one of"):
        _claim(expect="beats")
    with pytest.raises(ValueError, match=r"dataset 'zz' is not one of the suite's datasets"):
        _claim(datasets=["zz"])
    with pytest.raises(ValueError, match=r"reference is needed with expect=larger_gain_than"):
        _claim(expect="larger_gain_than")
    with pytest.raises(ValueError, match=r"suite.claims\[0\].colour is not a claim key"):
        _claim(colour="red")
    with pytest.raises(ValueError, match=r"policy must be one of the suite's policies"):
        _claim(policy="automix")


def test_claims_reach_the_leaderboard_page_and_csv(tmp_path):
    import csv
    from openmix.bench.db import ResultsDB, RunRecord
    from openmix.bench.leaderboard import render_leaderboard
    db = ResultsDB(tmp_path / "r.db")
    for row in _rows("a", "vanilla", 0) + _rows("a", "mixup", 2.0) + _rows("b", "vanilla", 0) + _rows("b", "mixup", 1.5):
        value = row["selected"]["test"]["top1"]
        db.record(RunRecord(suite="t", config_hash=f"{row['dataset']}-{row['policy']}-{row['seed']}", status="ok",
                            dataset=row["dataset"], model="m", policy=row["policy"], seed=row["seed"],
                            task="classification", headline_metric="selected.test.top1", headline=value,
                            selected=row["selected"], final={"top1": value}, seconds_per_epoch=1.0))
    why = "Digits is near-saturated, so the margin is small."
    written = render_leaderboard(tmp_path / "r.db", "t", tmp_path / "out", headline=HEADLINE, claims=_claim(note=why))
    md = (tmp_path / "out" / "t.md").read_text()
    assert "## Claims" in md and "mixup beats ERM (mixup vs vanilla)" in md and "✓ reproduced" in md
    assert why in md and why in (tmp_path / "out" / "t.html").read_text()
    assert "Zhang et al. 2018" in (tmp_path / "out" / "t.html").read_text()
    rows = list(csv.DictReader(open(tmp_path / "out" / "t-claims.csv")))
    assert [r["dataset"] for r in rows] == ["a", "b"] and {r["verdict"] for r in rows} == {"reproduced"}
    assert rows[0]["note"] == why
    assert float(rows[0]["delta"]) == pytest.approx(2.0) and tmp_path / "out" / "t-claims.csv" in written


def test_metric_paths_may_cross_keys_that_hold_dots():
    from openmix.bench.suite import summary_value
    row = {"final": {"top1": 1.0}, "reports": {"robustness": {"occlusion_0.5": {"top1": 70.0},
                                                              "occlusion_0.25": {"top1": 80.0}}}}
    assert summary_value(row, "reports.robustness.occlusion_0.5.top1") == 70.0
    assert summary_value(row, "reports.robustness.occlusion_0.25.top1") == 80.0
    assert summary_value(row, "top1") == 1.0 and summary_value(row, "reports.robustness.gaussian_1.top1") is None
