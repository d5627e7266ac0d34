"""The results database: upsert semantics, parameterised SQL, concurrent writers."""
import multiprocessing
import sqlite3

import pytest

from openmix.bench.db import ResultsDB, RunRecord


def _record(h, status="ok", policy="mixup", seed=0, headline=90.0, suite="t"):
    return RunRecord(
        suite=suite, config_hash=h, status=status, dataset="digits", model="mlp", policy=policy,
        seed=seed, task="classification", headline_metric="top1_median_last_k",
        headline=headline, final={"top1": headline, "ece": 0.05}, history=[{"epoch": 0}],
        policy_args={"alpha": 1.0}, error=None if status == "ok" else "boom",
    )


def test_record_skips_existing_ok_and_replaces_failed(tmp_path):
    db = ResultsDB(tmp_path / "r.db")
    assert db.record(_record("a", headline=1.0))
    assert not db.record(_record("a", headline=2.0))          # ok row kept
    assert db.runs()[0]["headline"] == 1.0
    assert db.record(_record("a", headline=3.0), force=True)  # unless forced
    assert db.runs()[0]["headline"] == 3.0
    assert db.record(_record("b", status="failed"))
    assert db.completed_hashes("t") == {"a"}
    assert db.record(_record("b", headline=5.0))              # a failed run is retried
    assert db.completed_hashes("t") == {"a", "b"}
    assert db.count() == 2
    # same hash in another suite is another run
    assert db.record(_record("a", suite="other"))
    assert db.count() == 3 and db.suites() == ["other", "t"]


def test_json_columns_round_trip_and_hostile_strings_are_data(tmp_path):
    db = ResultsDB(tmp_path / "r.db")
    evil = "x'); DROP TABLE runs; --"
    rec = _record("h", policy=evil)
    rec.policy_args = {"alpha": 0.2, "note": "<script>alert(1)</script>"}
    db.record(rec)
    (row,) = db.runs(suite="t")
    assert row["policy"] == evil
    assert row["policy_args"] == {"alpha": 0.2, "note": "<script>alert(1)</script>"}
    assert row["final"] == {"top1": 90.0, "ece": 0.05} and row["history"] == [{"epoch": 0}]
    with sqlite3.connect(tmp_path / "r.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="status"):
        _record("a", status="done")
    with pytest.raises(TypeError, match="seed"):
        RunRecord(suite="s", config_hash="h", status="ok", dataset="d", model="m", policy="p",
                  seed="0")
    with pytest.raises(ValueError, match="status"):
        ResultsDB(tmp_path / "r.db").runs(status="done")


def _writer(path, worker, n, barrier):
    db = ResultsDB(path, timeout_s=60)
    barrier.wait()
    for i in range(n):
        # half the hashes are shared by all writers, half are the writer's own
        h = f"shared-{i}" if i % 2 == 0 else f"w{worker}-{i}"
        db.record(_record(h, seed=worker))


def test_concurrent_writers_lose_nothing_and_duplicate_nothing(tmp_path):
    path = tmp_path / "r.db"
    ResultsDB(path)
    writers, n = 4, 30
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(writers)
    procs = [ctx.Process(target=_writer, args=(path, w, n, barrier)) for w in range(writers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    db = ResultsDB(path)
    hashes = [r["config_hash"] for r in db.runs()]
    expected = {f"shared-{i}" for i in range(0, n, 2)} | {
        f"w{w}-{i}" for w in range(writers) for i in range(1, n, 2)
    }
    assert len(hashes) == len(expected) == len(set(hashes))
    assert set(hashes) == expected
