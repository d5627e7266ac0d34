"""Suites and the runner, against a stand-in trainer and config dir (no training)."""
import json
import os
import signal
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from openmix.bench.app import options_from_config
from openmix.bench.db import ResultsDB
from openmix.bench.runner import (
    RunnerOptions, compose_train_config, config_hash, resolved_config, run_suite,
)
from openmix.bench.suite import load_suite, shard_runs

TRAIN_YAML = """
defaults:
  - mix: none
  - _self_
seed: 0
data: {name: fake, task: classification}
loss: {name: soft_ce}
trainer: {epochs: 1, out_dir: null, mode: ok}
"""


def fake_train(cfg):
    """Stand-in for openmix.train.app.train: a summary whose numbers depend on the config."""
    mode = cfg.trainer.mode
    if mode == "raise":
        raise RuntimeError("this run diverged")
    if mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "raise_big_alpha" and float(cfg.mix.get("alpha", 0.0)) > 1.5:
        raise RuntimeError("diverged at a large alpha")
    top1 = 50.0 + cfg.seed + (5.0 if cfg.mix.name == "mixup" else 0.0)
    alpha = float(cfg.mix.get("alpha", 0.0))
    # validation peaks at alpha = 0.5; the test metric grows with alpha (a poisoned signal:
    # tuning that read test metrics would pick the largest alpha)
    val_top1 = 70.0 - 10.0 * (alpha - 0.5) ** 2 + 0.1 * cfg.seed
    summary = {
        "task": "classification", "dataset": cfg.data.name, "model": "m",
        "policy": cfg.mix.name, "loss": cfg.loss.name, "seed": cfg.seed,
        "epochs": cfg.trainer.epochs,
        "final": {"top1": top1, "top5": 99.0, "nll": 1.0, "ece": 0.01 * (1 + cfg.seed),
                  "top1_median_last_k": top1},
        "selected": {"epoch": 0, "rule": "best_val", "metric": "top1",
                     "val": {"top1": val_top1, "nll": 1.0},
                     "test": {"top1": top1 + alpha, "nll": 1.0}},
        "history": [{"epoch": 0, "top1": top1}], "seconds_per_epoch": 0.5,
        "samples_per_second": 100.0, "peak_memory_mb": 10.0, "device": "cpu",
        "versions": {"torch": "x"},
    }
    out = Path(cfg.trainer.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))  # as the trainer does
    (out / "summary.json").write_text(json.dumps(summary))
    return summary


def _config_dir(tmp_path):
    d = tmp_path / "configs"
    (d / "mix").mkdir(parents=True, exist_ok=True)
    (d / "train.yaml").write_text(TRAIN_YAML)
    (d / "mix" / "none.yaml").write_text("name: none\n")
    (d / "mix" / "mixup.yaml").write_text("name: mixup\nalpha: 1.0\n")
    return d


def _suite(**extra):
    cfg = {
        "name": "tiny", "seeds": [0, 1], "baseline": "vanilla",
        "datasets": {"fake": {"task": "classification", "recipe": ["trainer.epochs=1"]}},
        "models": {"m": []},
        "policies": {"vanilla": {"overrides": ["mix=none"]},
                     "mixup": {"overrides": ["mix=mixup", "mix.alpha=0.2"]}},
    }
    cfg.update(extra)
    return load_suite(cfg)


def _options(tmp_path, **kw):
    base = dict(db_path=tmp_path / "r.db", runs_dir=tmp_path / "runs", train_fn=fake_train,
                config_dir=_config_dir(tmp_path))
    base.update(kw)
    return RunnerOptions(**base)


def test_suite_expansion_and_validation():
    suite = _suite()
    assert len(suite.runs) == 4
    spec = suite.runs[-1]
    assert (spec.policy, spec.seed) == ("mixup", 1)
    assert spec.overrides == ("trainer.epochs=1", "mix=mixup", "mix.alpha=0.2", "seed=1")
    reg = _suite(policies={"vanilla": {}, "c": {"tasks": ["regression"]}})
    assert {r.policy for r in reg.runs} == {"vanilla"}
    assert sorted(len(shard_runs(suite.runs, i, 3)) for i in range(3)) == [1, 1, 2]
    with pytest.raises(ValueError, match="suite.seeds"):
        _suite(seeds=[])
    with pytest.raises(ValueError, match="suite.baseline"):
        _suite(baseline="nope")
    with pytest.raises(ValueError, match="'mixup'"):
        _suite(policies={"vanilla": {"overrides": ["mixup"]}})
    with pytest.raises(ValueError, match="tasks"):
        _suite(policies={"vanilla": {"tasks": ["segmentation"]}})
    with pytest.raises(ValueError, match="shard"):
        shard_runs(suite.runs, 3, 3)


def test_hash_ignores_output_paths_but_not_settings(tmp_path):
    d = _config_dir(tmp_path)
    a = compose_train_config(["mix=mixup", "trainer.out_dir=/a"], d)
    b = compose_train_config(["mix=mixup", "trainer.out_dir=/b"], d)
    c = compose_train_config(["mix=mixup", "mix.alpha=0.5"], d)
    assert config_hash(resolved_config(a)) == config_hash(resolved_config(b))
    assert config_hash(resolved_config(a)) != config_hash(resolved_config(c))


def test_suite_runs_records_and_skips_on_rerun(tmp_path):
    suite = _suite()
    options = _options(tmp_path)
    report = run_suite(suite, list(suite.runs), options, log=lambda s: None)
    assert len(report.ran) == 4 and not report.failed
    rows = ResultsDB(options.db_path).runs(suite="tiny")
    assert len(rows) == 4
    row = next(r for r in rows if r["policy"] == "mixup" and r["seed"] == 1)
    assert row["headline"] == 56.2 and row["policy_args"] == {"alpha": 0.2}
    assert row["headline_metric"] == "selected.test.top1"
    assert row["selected"]["val"]["top1"] == pytest.approx(70.0 - 10.0 * 0.09 + 0.1)
    assert row["mix_name"] == "mixup" and row["loss"] == "soft_ce"
    assert row["seconds_per_epoch"] == 0.5 and row["device"] == "cpu"
    assert row["config"]["mix"]["alpha"] == 0.2 and "out_dir" not in row["config"]["trainer"]
    assert Path(row["history_path"]).is_file() and row["history"] == [{"epoch": 0, "top1": 56.0}]
    # re-run: everything skipped; forced: run again, still one row per run
    again = run_suite(suite, list(suite.runs), options, log=lambda s: None)
    assert len(again.skipped) == 4 and not again.ran
    forced = run_suite(suite, list(suite.runs[:1]), _options(tmp_path, force=True),
                       log=lambda s: None)
    assert len(forced.ran) == 1
    assert ResultsDB(options.db_path).count() == 4


def test_dry_run_lists_without_running(tmp_path):
    suite = _suite()
    report = run_suite(suite, list(suite.runs), _options(tmp_path, dry_run=True),
                       log=lambda s: None)
    assert len(report.planned) == 4 and not any(done for _, _, done in report.planned)
    assert len({h for _, h, _ in report.planned}) == 4
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("isolation", ["fork", "inprocess"])
def test_a_failing_run_is_recorded_and_the_suite_goes_on(tmp_path, isolation):
    policies = {"vanilla": {"overrides": ["mix=none"]},
                "broken": {"overrides": ["mix=mixup", "trainer.mode=raise"]},
                "mixup": {"overrides": ["mix=mixup"]}}
    suite = _suite(policies=policies, seeds=[0])
    options = _options(tmp_path, isolation=isolation)
    report = run_suite(suite, list(suite.runs), options, log=lambda s: None)
    assert report.ran == ["fake/m/vanilla/seed0", "fake/m/mixup/seed0"]
    assert report.failed == ["fake/m/broken/seed0"]
    db = ResultsDB(options.db_path)
    (failed,) = db.runs(status="failed")
    assert "this run diverged" in failed["error"]
    # a failed run is retried on the next invocation, not skipped
    report = run_suite(suite, list(suite.runs), options, log=lambda s: None)
    assert report.failed == ["fake/m/broken/seed0"] and len(report.skipped) == 2
    assert db.count() == 3


def test_a_killed_run_is_recorded_as_failed(tmp_path):
    policies = {"vanilla": {"overrides": ["mix=none", "trainer.mode=kill"]},
                "mixup": {"overrides": ["mix=mixup"]}}
    suite = _suite(policies=policies, seeds=[0])
    options = _options(tmp_path)
    report = run_suite(suite, list(suite.runs), options, log=lambda s: None)
    assert report.failed == ["fake/m/vanilla/seed0"] and report.ran == ["fake/m/mixup/seed0"]
    (row,) = ResultsDB(options.db_path).runs(status="failed")
    assert "signal 9" in row["error"]


def test_options_from_bench_config():
    bench = OmegaConf.load(Path(__file__).parents[1] / "configs" / "bench" / "bench.yaml")
    bench.pop("defaults")
    bench.pop("hydra")
    options = options_from_config(bench)
    assert options.isolation == "fork" and options.db_path.endswith("results.db")


def test_an_entry_that_does_not_compose_is_a_failed_run(tmp_path):
    policies = {"vanilla": {"overrides": ["mix=none"]},
                "missing": {"overrides": ["mix=no_such_policy"]}}
    suite = _suite(policies=policies, seeds=[0])
    options = _options(tmp_path)
    report = run_suite(suite, list(suite.runs), options, log=lambda s: None)
    assert report.ran == ["fake/m/vanilla/seed0"] and report.failed == ["fake/m/missing/seed0"]
    (row,) = ResultsDB(options.db_path).runs(status="failed")
    assert "no_such_policy" in row["error"]
    with pytest.raises(Exception, match="no_such_policy"):
        run_suite(suite, list(suite.runs), _options(tmp_path, dry_run=True), log=lambda s: None)


def _shard_job(options, shard, shards):
    suite = _suite(seeds=[0, 1, 2])
    run_suite(suite, shard_runs(suite.runs, shard, shards), options, log=lambda s: None)


def test_parallel_shards_share_one_database(tmp_path):
    """What a joblib or Slurm multirun does: one process per shard, one database."""
    import multiprocessing

    options = _options(tmp_path)
    ctx = multiprocessing.get_context("fork")
    jobs = [ctx.Process(target=_shard_job, args=(options, s, 3)) for s in range(3)]
    for j in jobs:
        j.start()
    for j in jobs:
        j.join(120)
    assert [j.exitcode for j in jobs] == [0, 0, 0]
    rows = ResultsDB(options.db_path).runs(suite="tiny")
    assert len(rows) == 6 and len({r["config_hash"] for r in rows}) == 6


@pytest.mark.parametrize("launcher, target", [
    ("local", "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"),
    ("slurm", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"),
])
def test_launcher_configs_compose(launcher, target):
    pytest.importorskip(target.rsplit(".", 2)[0])
    from hydra import compose, initialize_config_dir

    from openmix.bench.app import bench_config_dir

    with initialize_config_dir(str(bench_config_dir()), version_base=None):
        cfg = compose("bench", overrides=[f"hydra/launcher={launcher}", "shards=4"],
                      return_hydra_config=True)
    assert cfg.hydra.launcher._target_ == target
    assert cfg.hydra.sweeper.params.shard == "range(0,4)"
    if launcher == "local":
        assert cfg.hydra.launcher.n_jobs == 4


def test_only_selects_runs_by_label_parts():
    from openmix.bench.app import select_runs

    runs = _suite(seeds=[0, 1]).runs
    assert [r.label for r in select_runs(runs, ["mixup/seed1"])] == ["fake/m/mixup/seed1"]
    assert len(select_runs(runs, ["vanilla", "seed0"])) == 3
    assert len(select_runs(runs, None)) == 4
    with pytest.raises(ValueError, match="only must match .*got \\['cutmix'\\]"):
        select_runs(runs, ["cutmix"])


_CALLS = {"n": 0, "interrupt_at": None}


def counting_train(cfg):
    _CALLS["n"] += 1
    if _CALLS["n"] == _CALLS["interrupt_at"]:
        raise KeyboardInterrupt  # the user presses Ctrl-C during the third run
    return fake_train(cfg)


def test_an_interrupted_suite_resumes_where_it_stopped(tmp_path):
    suite = _suite(seeds=[0, 1])
    options = _options(tmp_path, train_fn=counting_train, isolation="inprocess")
    _CALLS.update(n=0, interrupt_at=3)
    with pytest.raises(KeyboardInterrupt):
        run_suite(suite, list(suite.runs), options, log=lambda s: None)
    db = ResultsDB(options.db_path)
    assert db.count() == 2  # the two finished runs were committed
    _CALLS.update(n=0, interrupt_at=None)
    report = run_suite(suite, list(suite.runs), options, log=lambda s: None)
    assert report.skipped == [r.label for r in suite.runs[:2]]
    assert report.ran == [r.label for r in suite.runs[2:]]
    assert db.count() == 4 and _CALLS["n"] == 2


def test_console_entry_point_dry_run(tmp_path):
    """`openmix-bench suite=tiny 'suite.seeds=[0,1,2]' dry_run=true` through Hydra's own entry
    (no training): the seeds given on the command line make the runs."""
    import subprocess
    import sys

    code = "import sys; from openmix.bench.app import main; sys.argv[0] = 'openmix-bench'; main()"
    proc = subprocess.run(
        [sys.executable, "-c", code, "suite=tiny", "suite.seeds=[0,1,2]", "dry_run=true",
         f"db={tmp_path / 'r.db'}", f"runs_dir={tmp_path / 'runs'}"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},  # this checkout
    )
    assert proc.returncode == 0, proc.stderr
    assert "suite tiny: 6 runs" in proc.stdout
    assert proc.stdout.count("to run") == 6
    for seed in (0, 1, 2):
        assert proc.stdout.count(f"/seed{seed} ") == 2  # vanilla and mixup
