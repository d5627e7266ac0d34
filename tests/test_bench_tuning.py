"""Equal-budget tuning (suite.tune): the grid runs with one seed, the value is chosen on the
validation metric (never on test), stored, shown in the rows, then run on every seed."""
import pytest

from openmix.bench.db import ResultsDB
from openmix.bench.runner import run_suite
from openmix.bench.suite import RunSpec, Suite, SuiteConfigError, TuneConfig, load_suite
from openmix.bench.tuning import decide
from test_bench_runner import _options, fake_train

GRID = {"mix.alpha": [0.2, 0.5, 1.0, 2.0]}
CALLS = []


def counting_train(cfg):
    CALLS.append((cfg.mix.name, cfg.mix.get("alpha"), cfg.seed))
    return fake_train(cfg)


def _tuned_suite(policies=None, **tune):
    cfg = {
        "name": "tuned", "seeds": [0, 1], "baseline": None if policies else "vanilla",
        "datasets": {"fake": {"task": "classification", "recipe": ["trainer.epochs=1"]}},
        "models": {"m": []},
        "policies": policies or {"vanilla": {"overrides": ["mix=none"]},
                                 "mixup": {"overrides": ["mix=mixup", "mix.alpha=1.0"]}},
        "tune": {"seed": 0, "grid": GRID, **tune},
    }
    return load_suite(cfg)


def test_the_grid_runs_once_and_the_validation_choice_runs_on_every_seed(tmp_path):
    suite = _tuned_suite()
    assert [t.label for t in suite.trials] == [
        f"fake/m/mixup/tune:mix.alpha={a}/seed0" for a in (0.2, 0.5, 1.0, 2.0)]
    assert [r.tune_keys for r in suite.runs] == [(), (), ("mix.alpha",), ("mix.alpha",)]
    options = _options(tmp_path, train_fn=counting_train, isolation="inprocess")
    CALLS.clear()
    report = run_suite(suite, list(suite.runs), options, log=lambda s: None)
    # fake_train's validation top-1 peaks at alpha 0.5 while its test top-1 grows with alpha:
    # a choice that read test metrics would be 2.0
    assert report.tuned == {"fake/m/mixup": {"mix.alpha": 0.5}}
    # 4 trials, vanilla x 2 seeds, mixup seed 1; mixup seed 0 with alpha 0.5 IS a trial: reused
    assert sorted(CALLS) == sorted([("mixup", a, 0) for a in (0.2, 0.5, 1.0, 2.0)]
                                   + [("none", None, 0), ("none", None, 1), ("mixup", 0.5, 1)])
    db = ResultsDB(options.db_path)
    rows = db.runs(suite="tuned")
    assert sorted((r["policy"], r["seed"]) for r in rows) == [
        ("mixup", 0), ("mixup", 1), ("vanilla", 0), ("vanilla", 1)]
    for r in rows:  # the chosen value is data in the rows the leaderboard reads
        if r["policy"] == "mixup":
            assert r["policy_args"]["alpha"] == 0.5 and r["tuned"] == {"mix.alpha": 0.5}
        else:
            assert r["tuned"] == {} and "alpha" not in r["policy_args"]
    trials = db.runs(suite="tuned", role="trial")
    assert sorted(t["tuned"]["mix.alpha"] for t in trials) == [0.2, 1.0, 2.0]
    decision = db.tuning("tuned", "fake/m/mixup")
    assert decision["choice"] == {"mix.alpha": 0.5} and decision["metric"] == "selected.val.top1"
    assert [t["values"]["mix.alpha"] for t in decision["trials"]] == [0.2, 0.5, 1.0, 2.0]
    assert decision["value"] == pytest.approx(70.0)

    # resumable: a rerun trains nothing
    CALLS.clear()
    again = run_suite(suite, list(suite.runs), options, log=lambda s: None)
    assert CALLS == [] and len(again.skipped) == 4 and not again.ran


def test_an_interrupted_tuning_resumes_without_repeating_trials(tmp_path):
    suite = _tuned_suite()
    options = _options(tmp_path, train_fn=counting_train, isolation="inprocess")
    CALLS.clear()
    interrupted = _options(tmp_path, train_fn=_interrupt_after(2), isolation="inprocess")
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C during the third trial
        run_suite(suite, list(suite.runs), interrupted, log=lambda s: None)
    assert len(CALLS) == 2
    run_suite(suite, list(suite.runs), options, log=lambda s: None)
    assert len(CALLS) == 7  # 2 + the 2 remaining trials + 3 runs; nothing trained twice
    assert len(set(CALLS)) == 7


def _interrupt_after(n):
    def train(cfg):
        if len(CALLS) == n:
            raise KeyboardInterrupt
        return counting_train(cfg)
    return train


def test_failed_trials_are_recorded_and_the_rest_decide(tmp_path):
    policies = {"mixup": {"overrides": ["mix=mixup", "mix.alpha=1.0",
                                        "trainer.mode=raise_big_alpha"]}}
    suite = _tuned_suite(policies, metric={"classification": "selected.val.top1"})
    options = _options(tmp_path, isolation="inprocess")
    report = run_suite(suite, list(suite.runs), options, log=lambda s: None)
    assert report.failed == ["fake/m/mixup/tune:mix.alpha=2.0/seed0"]
    decision = ResultsDB(options.db_path).tuning("tuned", "fake/m/mixup")
    assert decision["choice"] == {"mix.alpha": 0.5}
    assert [t["status"] for t in decision["trials"]] == ["ok", "ok", "ok", "failed"]


def test_when_every_trial_fails_the_runs_fail_and_nothing_is_decided(tmp_path):
    policies = {"mixup": {"overrides": ["mix=mixup", "mix.alpha=1.0",
                                        "trainer.mode=raise_big_alpha"]}}
    suite = _tuned_suite(policies, grid={"mix.alpha": [1.6, 2.0]})
    lines = []
    report = run_suite(suite, list(suite.runs), _options(tmp_path, isolation="inprocess"),
                       log=lines.append)
    assert report.failed == [t.label for t in suite.trials] + [r.label for r in suite.runs]
    assert any("no trial reported the validation metric 'selected.val.top1'" in l for l in lines)
    assert ResultsDB(tmp_path / "r.db").tuning("tuned", "fake/m/mixup") is None


def test_dry_run_lists_trials_and_runs_that_wait_for_tuning(tmp_path):
    suite = _tuned_suite()
    report = run_suite(suite, list(suite.runs), _options(tmp_path, dry_run=True),
                       log=lambda s: None)
    planned = {label: (digest, done) for label, digest, done in report.planned}
    assert len(planned) == 4 + 4
    assert planned["fake/m/mixup/seed1"] == ("", False)  # no hash before the choice
    assert all(d for label, (d, _) in planned.items() if "tune:" in label)


def test_per_policy_grids_opt_outs_and_the_equal_budget():
    policies = {
        "vanilla": {"overrides": ["mix=none"]},                      # sets no grid key
        "mixup": {"overrides": ["mix=mixup", "mix.alpha=1.0"]},      # suite grid
        "mixup-p": {"overrides": ["mix=mixup"], "tune": {"mix.p": [0.25, 0.5, 0.75, 1.0]}},
        "fixed": {"overrides": ["mix=mixup", "mix.alpha=1.0"], "tune": False},
    }
    suite = _tuned_suite(policies)
    tuned = {r.policy: r.tune_keys for r in suite.runs}
    assert tuned == {"vanilla": (), "mixup": ("mix.alpha",), "mixup-p": ("mix.p",), "fixed": ()}
    assert len(suite.trials) == 8
    policies["mixup-p"]["tune"] = {"mix.p": [0.5, 1.0]}
    with pytest.raises(SuiteConfigError,
                       match="same number of trials.*'mixup-p \\(classification\\)': 2"):
        _tuned_suite(policies)
    # nested grids (as a command line `+suite.tune.grid.mix.alpha=[...]` gives) are flattened
    nested = load_suite({**_raw(), "tune": {"grid": {"mix": {"alpha": [0.5, 1.0]}}}})
    assert [t.trial for t in nested.trials] == [(("mix.alpha", 0.5),), (("mix.alpha", 1.0),)]


def _raw():
    return {"name": "t", "datasets": {"fake": {"recipe": []}}, "models": {"m": []},
            "policies": {"mixup": {"overrides": ["mix=mixup", "mix.alpha=1.0"]}}}


@pytest.mark.parametrize("tune, match", [
    ({"grid": GRID, "metric": {"classification": "selected.test.top1"}},
     "suite.tune.metric.classification must be a validation metric"),
    ({"grid": GRID, "metric": {"classification": "top1"}}, "never reads test metrics"),
    ({"grid": {"mix.alpha": []}}, "suite.tune.grid.mix.alpha must be a non-empty list"),
    ({"grid": {"mix.alpha": [float("nan")]}}, "finite numbers"),
    ({"grid": {"mix.alpha": ["1; rm -rf"]}}, "simple words"),
    ({"grid": {"mix.alpha": [0.5, 0.5]}}, "distinct"),
    ({"grid": {"mix.alpha": list(range(65))}}, "at most 64 trials"),
    ({"grid": GRID, "seed": "0"}, "suite.tune.seed must be an int"),
    ({"grid": GRID, "budget": 3}, "suite.tune must have keys among"),
])
def test_bad_tuning_settings_name_the_key(tune, match):
    with pytest.raises(SuiteConfigError, match=match):
        load_suite({**_raw(), "tune": tune})


def test_a_policy_tune_entry_needs_the_suite_section():
    raw = _raw()
    raw["policies"]["mixup"]["tune"] = {"mix.alpha": [1.0]}
    with pytest.raises(SuiteConfigError, match="suite.policies.mixup.tune needs a suite.tune"):
        load_suite(raw)


def test_the_direction_follows_the_metric_name():
    """RMSE: the smallest validation value wins; ties go to the earlier grid point."""
    suite = Suite("s", (), None, {}, tune=TuneConfig(0, {}, {"regression": "selected.val.rmse"}))
    spec = RunSpec("s", "d", "m", "mixup", 0, "regression", ("seed=0",), tune_keys=("mix.alpha",))
    results = []
    for i, (alpha, rmse) in enumerate([(0.2, 3.0), (0.5, 1.0), (1.0, 1.0), (2.0, 0.5)]):
        trial = RunSpec("s", "d", "m", "mixup", 0, "regression", (), role="trial",
                        trial=(("mix.alpha", alpha),))
        row = {"status": "ok", "selected": {"val": {"rmse": rmse}, "test": {"rmse": 9 - rmse}}}
        results.append((trial, f"h{i}", row))
    assert decide(suite, spec, results)["choice"] == {"mix.alpha": 2.0}
    results[3] = (results[3][0], "h3", {"status": "failed"})
    assert decide(suite, spec, results)["choice"] == {"mix.alpha": 0.5}  # tie 0.5 vs 1.0


def test_a_suite_states_claims_that_are_checked_when_it_loads():
    """`claims:` (openmix.bench.claims) pass through load_suite, validated against the suite."""
    raw = {**_raw(), "baseline": "vanilla"}
    raw["policies"] = {"vanilla": {}, **raw["policies"]}
    claim = {"id": "c1", "text": "mixup helps", "source": "Zhang et al. 2018", "policy": "mixup",
             "datasets": ["fake"], "expect": "better"}
    suite = load_suite({**raw, "claims": [claim]})
    assert [c.id for c in suite.claims] == ["c1"]
    with pytest.raises(SuiteConfigError, match="suite.claims"):
        load_suite({**raw, "claims": [{**claim, "datasets": ["elsewhere"]}]})
