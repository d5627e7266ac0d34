"""End to end with the real trainer: a tiny suite (2 policies x 1 dataset x 2 seeds, one epoch
each) through the Hydra app, the database, the skip-on-rerun and the leaderboard files."""
import csv
import math
import statistics

import pytest
from hydra import compose, initialize_config_dir
from scipy.stats import t as t_dist

from openmix.bench.app import bench_config_dir, run
from openmix.bench.db import ResultsDB

TINY = ["suite=tiny"]


def _cfg(tmp_path, *extra):
    with initialize_config_dir(str(bench_config_dir()), version_base=None):
        return compose("bench", overrides=[
            f"db={tmp_path / 'results.db'}", f"runs_dir={tmp_path / 'runs'}",
            f"leaderboard_dir={tmp_path / 'board'}", *TINY, *extra,
        ])


def test_tiny_suite_end_to_end(tmp_path, capsys):
    pytest.importorskip("openmix.train.app")
    report = run(_cfg(tmp_path))
    assert not report.failed, capsys.readouterr().out
    assert len(report.ran) == 4
    db = ResultsDB(tmp_path / "results.db")
    rows = db.runs(suite="tiny")
    assert len(rows) == 4 and {r["policy"] for r in rows} == {"vanilla", "mixup"}
    for r in rows:
        assert r["status"] == "ok" and r["epochs"] == 1 and len(r["history"]) == 1
        # the suite default headline: the test top-1 of the epoch selected on validation
        assert r["headline_metric"] == "selected.test.top1" and r["selected"]["rule"] == "best_val"
        assert 0 <= r["headline"] <= 100 and r["headline"] == r["selected"]["test"]["top1"]
        assert r["seconds_per_epoch"] > 0 and r["samples_per_second"] > 0
        assert r["peak_memory_mb"] > 0 and r["device"] == "cpu" and "torch" in r["versions"]
    assert rows[0]["config"]["mix"]["name"] == "vanilla"
    assert next(r for r in rows if r["policy"] == "mixup")["policy_args"]["alpha"] == 1.0

    # the leaderboard was rendered after the suite, with the database's numbers
    board = tmp_path / "board"
    for ext in ("md", "csv", "png", "html"):
        assert (board / f"tiny.{ext}").stat().st_size > 0
    assert (board / "tiny-cd.png").stat().st_size > 0  # the critical-difference diagram
    with open(board / "tiny.csv") as f:
        table = {r["policy"]: r for r in csv.DictReader(f)}
    assert table["mixup"]["verdict"] in ("better", "worse", "not significant")
    for policy in ("vanilla", "mixup"):
        values = [r["headline"] for r in rows if r["policy"] == policy]
        assert float(table[policy]["mean"]) == pytest.approx(statistics.mean(values))
        assert float(table[policy]["std"]) == pytest.approx(statistics.stdev(values))
        # Markdown: mean ± half-width of the 95% t-interval (t_{0.975,1} = 12.706 for 2 seeds)
        mean = statistics.mean(values)
        half = float(t_dist.ppf(0.975, 1)) * statistics.stdev(values) / math.sqrt(2)
        assert float(table[policy]["ci_high"]) - mean == pytest.approx(half)
        assert t_dist.ppf(0.975, 1) == pytest.approx(12.706, abs=5e-4)
        top = max(statistics.mean([r["headline"] for r in rows if r["policy"] == p]) for p in table)
        decimals = min(4, max(0, 3 - math.floor(math.log10(top))))
        md_cell = f"{mean:.{decimals}f} ± {half:.{decimals}f} (n=2)"
        assert md_cell in (board / "tiny.md").read_text()

    # re-running skips everything; force re-runs
    again = run(_cfg(tmp_path))
    assert len(again.skipped) == 4 and not again.ran
    assert db.count(suite="tiny") == 4

    # the database can be rebuilt from the run folders: from each folder's bench_record.json,
    # and, for folders written before those existed, from the real trainer's summary.json and
    # config.yaml (whose hash must equal the folder's)
    from openmix.bench.rebuild import rebuild_db
    from openmix.bench.runner import RECORD_FILE

    hashes = {r["config_hash"] for r in rows}
    report = rebuild_db(tmp_path / "rebuilt.db", tmp_path / "runs", log=lambda s: None)
    assert (report.imported, report.skipped) == (4, [])
    assert {r["config_hash"] for r in ResultsDB(tmp_path / "rebuilt.db").runs()} == hashes
    for record in (tmp_path / "runs").rglob(RECORD_FILE):
        record.unlink()
    legacy = rebuild_db(tmp_path / "legacy.db", tmp_path / "runs",
                        hash_exclude=tuple(_cfg(tmp_path).hash_exclude), log=lambda s: None)
    assert (legacy.imported_legacy, legacy.skipped) == (4, [])
    assert {r["config_hash"] for r in ResultsDB(tmp_path / "legacy.db").runs()} == hashes


def test_tiny_suite_tuned_on_the_trainers_validation_metric(tmp_path, capsys):
    """suite.tune with the real trainer: the trials' selected.val.top1 decides alpha."""
    pytest.importorskip("openmix.train.app")
    report = run(_cfg(tmp_path, "+suite.tune={seed: 0, grid: {mix.alpha: [0.2, 1.0]}}"))
    assert not report.failed, capsys.readouterr().out
    db = ResultsDB(tmp_path / "results.db")
    decision = db.tuning("tiny", "digits/small_cnn/1ep/mixup")
    values = {t["values"]["mix.alpha"]: t["value"] for t in decision["trials"]}
    trials = {r["tuned"]["mix.alpha"]: r for r in db.runs(suite="tiny", role=None)
              if r["policy"] == "mixup" and r["seed"] == 0}
    assert set(values) == set(trials) == {0.2, 1.0}
    for alpha, value in values.items():  # the trials' validation top-1, as the trainer wrote it
        assert value == trials[alpha]["selected"]["val"]["top1"]
    best = max(values, key=lambda a: (values[a], -a))
    assert decision["choice"] == {"mix.alpha": best} == report.tuned["digits/small_cnn/1ep/mixup"]
    rows = db.runs(suite="tiny")
    assert sorted((r["policy"], r["seed"]) for r in rows) == [
        ("mixup", 0), ("mixup", 1), ("vanilla", 0), ("vanilla", 1)]
    assert {r["policy_args"]["alpha"] for r in rows if r["policy"] == "mixup"} == {best}
