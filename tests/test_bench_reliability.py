"""Faults the benchmark survives or refuses (issue 16 items 6-9): a SIGKILLed runner leaves no
child training, N runners share one suite through leases, a damaged database says which file
and how to rebuild it, imports by dotted path are restricted, and oversized configs are refused."""
import json
import multiprocessing
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from openmix.bench.app import _main, bench_config_dir, check_launcher
from openmix.bench.db import ResultsDB, ResultsDBError, RunRecord
from openmix.bench.rebuild import rebuild_db
from openmix.bench.runner import (
    RECORD_FILE, RunnerOptions, SuiteRunner, load_train_fn, preload, run_suite,
)
from openmix.bench.suite import (
    SuiteConfigError, check_yaml_files, load_suite, yaml_value_count,
)
from test_bench_runner import _options, _suite, fake_train

TESTS = Path(__file__).parent
APP = "import sys; from openmix.bench.app import main; sys.argv[0] = 'openmix-bench'; main()"


def _gone(pid: int) -> bool:
    """True once ``pid`` no longer runs (absent, or a zombie waiting for its new parent)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "State:\tZ" in status


# ---- item 7: children die with the runner; leases ----------------------------------------
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_sigkilled_runner_leaves_no_run_training(tmp_path):
    pid_file = tmp_path / "child.pid"
    script = f"""
import os, sys, time
from pathlib import Path
sys.path.insert(0, {str(TESTS)!r})
from test_bench_runner import _options, _suite
from openmix.bench.runner import run_suite

def slow_train(cfg):
    Path({str(pid_file)!r}).write_text(str(os.getpid()))
    time.sleep(120)

suite = _suite(seeds=[0])
run_suite(suite, list(suite.runs), _options(Path({str(tmp_path)!r}), train_fn=slow_train))
"""
    runner = subprocess.Popen([sys.executable, "-c", script], cwd=TESTS.parent,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    child = None
    try:
        deadline = time.monotonic() + 60
        while not pid_file.is_file() or not pid_file.read_text():
            assert runner.poll() is None and time.monotonic() < deadline, "no run started"
            time.sleep(0.05)
        child = int(pid_file.read_text())
        assert not _gone(child)
        runner.send_signal(signal.SIGKILL)
        runner.wait(10)
        deadline = time.monotonic() + 5
        while not _gone(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(child), "the run kept training after its runner was SIGKILLed"
    finally:
        runner.kill()
        runner.wait()
        if child is not None and not _gone(child):
            os.kill(child, signal.SIGKILL)


def _train_logging_to(log_path):
    def train(cfg):
        with open(log_path, "a") as f:  # O_APPEND: one whole line per write
            f.write(f"{cfg.mix.name} {cfg.mix.get('alpha')} {cfg.seed}\n")
        time.sleep(0.1)
        return fake_train(cfg)
    return train


def _runner_job(tmp_path, log_path):
    suite = load_suite(_two_runner_suite())
    options = _options(tmp_path, train_fn=_train_logging_to(log_path), poll_s=0.05)
    run_suite(suite, list(suite.runs), options, log=lambda s: None)


def _two_runner_suite():
    return {"name": "shared", "seeds": [0, 1, 2],
            "datasets": {"fake": {"recipe": ["trainer.epochs=1"]}}, "models": {"m": []},
            "policies": {"vanilla": {"overrides": ["mix=none"]},
                         "mixup": {"overrides": ["mix=mixup", "mix.alpha=1.0"]}},
            "tune": {"seed": 0, "grid": {"mix.alpha": [0.5, 2.0]}}}


def test_two_unsharded_runners_on_one_database_train_every_run_once(tmp_path):
    """Two runners over the same whole list (no shards), forked runs, tuning included: every
    run and trial is trained exactly once, by one of them, and neither crashes."""
    log_path = tmp_path / "calls.log"
    ctx = multiprocessing.get_context("fork")
    jobs = [ctx.Process(target=_runner_job, args=(tmp_path, log_path)) for _ in range(2)]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(120)
    assert [job.exitcode for job in jobs] == [0, 0]
    calls = log_path.read_text().splitlines()
    # 2 trials, vanilla x 3 seeds, mixup seeds 1 and 2 (seed 0 with the chosen alpha is a trial)
    assert sorted(calls) == sorted(["mixup 0.5 0", "mixup 2.0 0", "none None 0", "none None 1",
                                    "none None 2", "mixup 0.5 1", "mixup 0.5 2"])
    db = ResultsDB(tmp_path / "r.db")
    assert db.count(suite="shared", status="ok") == 6
    assert db.count(suite="shared", status=None, role=None) == 7
    assert not db.runs(suite="shared", status="failed", role=None)


def _digest(tmp_path, spec, **kw):
    suite = _suite(seeds=[0])
    return SuiteRunner(suite, _options(tmp_path, **kw), lambda s: None).prepare(spec)[2]


def test_a_live_lease_is_left_alone_and_a_stale_or_dead_one_is_taken_over(tmp_path):
    suite = _suite(seeds=[0])
    runs = list(suite.runs)
    db = ResultsDB(tmp_path / "r.db")
    digests = [_digest(tmp_path, r) for r in runs]
    other_host = "elsewhere:4242:1"
    assert db.claim("tiny", digests[0], other_host) == "claimed"   # live, fresh heartbeat
    assert db.claim("tiny", digests[1], other_host) == "claimed"   # will be made stale
    with sqlite3.connect(tmp_path / "r.db") as conn:
        conn.execute("UPDATE leases SET heartbeat_at = heartbeat_at - 1000 WHERE config_hash = ?",
                     (digests[1],))
    report = run_suite(suite, runs, _options(tmp_path, lease_timeout_s=60), log=lambda s: None)
    assert report.taken == [runs[0].label] and report.ran == [runs[1].label]
    assert db.lease("tiny", digests[0])["owner"] == other_host     # still theirs
    assert db.lease("tiny", digests[1]) is None                    # released after the run

    # a lease held by a process of this host that no longer exists is taken over at once
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    with sqlite3.connect(tmp_path / "r.db") as conn:
        conn.execute("UPDATE leases SET owner = ? WHERE config_hash = ?",
                     (f"{os.uname().nodename}:{dead}:1", digests[0]))
    report = run_suite(suite, runs, _options(tmp_path), log=lambda s: None)
    assert report.ran == [runs[0].label] and report.skipped == [runs[1].label]


def _train_watching_the_lease(cfg):
    db = ResultsDB(Path(cfg.trainer.out_dir).parents[5] / "r.db")
    (lease,) = [dict(r) for r in _all_leases(db)]
    first = lease["heartbeat_at"]
    time.sleep(0.5)
    (lease,) = [dict(r) for r in _all_leases(db)]
    Path(cfg.trainer.out_dir, "beat").write_text(str(lease["heartbeat_at"] - first))
    return fake_train(cfg)


def _all_leases(db):
    with sqlite3.connect(db.path) as conn:
        conn.row_factory = sqlite3.Row
        return conn.execute("SELECT * FROM leases").fetchall()


@pytest.mark.parametrize("isolation", ["fork", "inprocess"])
def test_the_lease_heartbeat_runs_while_a_run_trains(tmp_path, isolation):
    suite = _suite(seeds=[0], policies={"vanilla": {"overrides": ["mix=none"]}})
    options = _options(tmp_path, train_fn=_train_watching_the_lease, isolation=isolation,
                       heartbeat_s=0.05, lease_timeout_s=10)
    report = run_suite(suite, list(suite.runs), options, log=lambda s: None)
    assert report.ran == ["fake/m/vanilla/seed0"]
    (beat,) = list((tmp_path / "runs").rglob("beat"))
    assert float(beat.read_text()) > 0


# ---- item 8: a damaged database; rebuild_db ------------------------------------------------
def _filled_db(tmp_path):
    suite = _suite(seeds=[0, 1])
    options = _options(tmp_path, isolation="inprocess")
    run_suite(suite, list(suite.runs), options, log=lambda s: None)
    return Path(options.db_path), options


def test_a_garbage_database_names_the_file_and_the_way_out(tmp_path):
    path = tmp_path / "results.db"
    path.write_bytes(bytes(range(256)) * 16)
    with pytest.raises(ResultsDBError) as err:
        ResultsDB(path)
    text = str(err.value)
    assert str(path) in text and "not a readable SQLite database" in text
    assert f"mv {path} {path}.bad" in text and "openmix-bench rebuild_db=true" in text


def test_a_truncated_database_names_the_file_and_the_way_out(tmp_path):
    path, _ = _filled_db(tmp_path)
    size = path.stat().st_size
    assert size > 8192  # the last connection closed: the WAL is checkpointed into the file
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(ResultsDBError, match=f"results database {path} is") as err:
        ResultsDB(path).runs()
    assert "rebuild_db=true" in str(err.value)


def _bench_cfg(tmp_path, *overrides):
    with initialize_config_dir(str(bench_config_dir()), version_base=None):
        return compose("bench", overrides=["suite=tiny", f"db={tmp_path / 'results.db'}",
                                           f"runs_dir={tmp_path / 'runs'}", *overrides])


def test_the_app_reports_a_damaged_database_in_one_line(tmp_path, capsys):
    (tmp_path / "results.db").write_bytes(b"not sqlite" * 100)
    with pytest.raises(SystemExit) as stop:
        _main(_bench_cfg(tmp_path, "dry_run=true"))
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "results.db" in err and "rebuild_db=true" in err


def test_rebuild_restores_every_row_from_the_run_folders(tmp_path):
    path, options = _filled_db(tmp_path)
    before = {r["config_hash"]: r for r in ResultsDB(path).runs(status=None)}
    assert len(before) == 4
    assert all(Path(r["out_dir"], RECORD_FILE).is_file() for r in before.values())
    path.rename(tmp_path / "old.db")
    report = rebuild_db(tmp_path / "new.db", options.runs_dir, log=lambda s: None)
    assert (report.imported, report.imported_legacy, report.skipped) == (4, 0, [])
    after = {r["config_hash"]: r for r in ResultsDB(tmp_path / "new.db").runs(status=None)}
    assert after.keys() == before.keys()
    for digest, row in before.items():
        for key in ("policy", "seed", "headline", "headline_metric", "policy_args", "final",
                    "selected", "status", "out_dir", "config"):
            assert after[digest][key] == row[key], key
    again = rebuild_db(tmp_path / "new.db", options.runs_dir, log=lambda s: None)
    assert (again.imported, again.kept) == (0, 4)


def test_rebuild_reads_folders_written_before_run_records_existed(tmp_path):
    path, options = _filled_db(tmp_path)
    before = {r["config_hash"]: r for r in ResultsDB(path).runs()}
    for record in Path(options.runs_dir).rglob(RECORD_FILE):
        record.unlink()
    odd = Path(options.runs_dir) / "tiny" / "fake" / "m" / "vanilla" / "seed9-0123456789ab"
    odd.mkdir()
    shutil.copy(next(iter(Path(options.runs_dir).rglob("summary.json"))), odd)
    shutil.copy(next(iter(Path(options.runs_dir).rglob("config.yaml"))), odd)
    report = rebuild_db(tmp_path / "legacy.db", options.runs_dir,
                        hash_exclude=options.hash_exclude,
                        headlines={"tiny": {"classification": "selected.test.top1"}},
                        log=lambda s: None)
    assert report.imported_legacy == 4
    assert report.skipped == [(str(odd), "config.yaml does not hash to the folder's hash "
                                         "(another hash_exclude or openmix version)")]
    after = {r["config_hash"]: r for r in ResultsDB(tmp_path / "legacy.db").runs()}
    assert after.keys() == before.keys()
    for digest, row in before.items():
        assert (after[digest]["policy"], after[digest]["seed"], after[digest]["headline"]) == (
            row["policy"], row["seed"], row["headline"])


def test_rebuild_through_the_app_restores_tuning_decisions(tmp_path, capsys):
    from test_bench_tuning import _tuned_suite

    suite = _tuned_suite()
    options = _options(tmp_path, isolation="inprocess")
    run_suite(suite, list(suite.runs), options, log=lambda s: None)
    decision = ResultsDB(options.db_path).tuning("tuned", "fake/m/mixup")
    cfg = _bench_cfg(tmp_path, "rebuild_db=true", f"db={tmp_path / 'rebuilt.db'}")
    _main(cfg)
    assert "rebuilt: 7 runs from bench_record.json" in capsys.readouterr().out
    rebuilt = ResultsDB(tmp_path / "rebuilt.db")
    assert rebuilt.tuning("tuned", "fake/m/mixup") == decision
    assert rebuilt.count(suite="tuned") == 4 and rebuilt.count(suite="tuned", role="trial") == 3


def test_a_schema_1_database_is_upgraded_in_place(tmp_path):
    path = tmp_path / "v1.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, suite TEXT NOT NULL,"
                     " config_hash TEXT NOT NULL, status TEXT NOT NULL, dataset TEXT NOT NULL, "
                     "model TEXT NOT NULL, policy TEXT NOT NULL, seed INTEGER NOT NULL, "
                     "headline REAL, final TEXT, UNIQUE (suite, config_hash))")
        conn.execute("INSERT INTO runs (suite, config_hash, status, dataset, model, policy, seed, "
                     "headline, final) VALUES ('s', 'h', 'ok', 'd', 'm', 'p', 0, 1.5, '{}')")
    db = ResultsDB(path)
    (row,) = db.runs()
    assert (row["role"], row["headline"], row["tuned"]) == ("run", 1.5, None)
    assert db.record(RunRecord(suite="s", config_hash="h2", status="ok", dataset="d", model="m",
                               policy="p", seed=1, selected={"val": {"top1": 1.0}}))
    assert db.count() == 2


# ---- item 9: imports by dotted path; oversized configs -------------------------------------
def test_train_fn_and_preload_import_only_openmix_or_allowed_modules():
    with pytest.raises(SuiteConfigError, match="train_fn must name a module under 'openmix'.*"
                                               "allow_modules=\\[os\\]"):
        load_train_fn("os:system")
    with pytest.raises(SuiteConfigError, match="train_fn must name a module"):
        RunnerOptions(train_fn="subprocess:run").validate()
    with pytest.raises(SuiteConfigError, match="train_fn must be 'package.module:function'"):
        load_train_fn("os.system")
    with pytest.raises(SuiteConfigError, match="preload must name a module"):
        preload(["ctypes"])
    with pytest.raises(SuiteConfigError, match="preload must name a module"):
        RunnerOptions(preload=("openmixer.evil",)).validate()
    assert load_train_fn("json:dumps", allow_modules=("json",)) is json.dumps
    assert load_train_fn(fake_train) is fake_train
    assert callable(load_train_fn("openmix.train.app:train"))
    RunnerOptions(train_fn="mypkg.train:train", allow_modules=("mypkg",)).validate()


def test_a_suite_with_aliased_parts_is_refused_before_it_is_expanded():
    bomb = ["x"] * 10
    for _ in range(8):
        bomb = [bomb] * 10          # 10**9 leaves through shared references
    suite = {"name": "t", "description": bomb, "datasets": {"d": {}}, "models": {"m": []},
             "policies": {"vanilla": {}}}
    t0 = time.perf_counter()
    with pytest.raises(SuiteConfigError, match="suite must hold at most 50000 values"):
        load_suite(suite)
    assert time.perf_counter() - t0 < 5


def test_a_suite_that_expands_to_too_many_runs_is_refused():
    suite = {"name": "t", "seeds": list(range(100)), "models": {f"m{i}": [] for i in range(15)},
             "datasets": {f"d{i}": {"epochs": list(range(1, 5))} for i in range(4)},
             "policies": {f"p{i}": {} for i in range(4)}}
    with pytest.raises(SuiteConfigError, match="must expand to at most 20000 runs.*got 96000"):
        load_suite(suite)


BOMB = ("name: bomb\nx0: &x0 [a, a, a, a, a, a, a, a, a, a]\n"
        + "".join(f"x{i + 1}: &x{i + 1} [{', '.join(['*x' + str(i)] * 10)}]\n" for i in range(8))
        + "description: *x8\n")


def test_yaml_alias_bombs_are_counted_without_expanding_them(tmp_path):
    # root, key a, [1, 2] (3), key b, [*a, *a] (1 + 3 + 3)
    assert yaml_value_count("a: &a [1, 2]\nb: [*a, *a]\n") == 1 + 1 + 3 + 1 + 7
    assert yaml_value_count("a: &a [1, *a]\n", limit=100) == 101     # recursive alias
    assert yaml_value_count(BOMB) > 10 ** 9
    (tmp_path / "bomb.yaml").write_text(BOMB)
    with pytest.raises(SuiteConfigError, match="bomb.yaml must expand to at most 50000 values"):
        check_yaml_files(tmp_path)


def _limit_memory():
    resource.setrlimit(resource.RLIMIT_DATA, (3 << 30, 3 << 30))  # a safety net for old code


def test_the_app_refuses_a_yaml_alias_bomb_before_hydra_composes_it(tmp_path):
    configs = tmp_path / "configs"
    shutil.copytree(bench_config_dir().parent, configs)
    (configs / "bench" / "suite" / "bomb.yaml").write_text(BOMB)
    proc = subprocess.run(
        [sys.executable, "-c", APP, "suite=bomb", "dry_run=true", f"db={tmp_path / 'r.db'}"],
        capture_output=True, text=True, timeout=60, cwd=TESTS.parent, preexec_fn=_limit_memory,
        env={**os.environ, "OPENMIX_CONFIG_DIR": str(configs)},
    )
    assert proc.returncode != 0
    assert f"{configs / 'bench' / 'suite' / 'bomb.yaml'} must expand to at most" in proc.stderr
    assert "Traceback" not in proc.stderr


# ---- item 6: names; issue 15 items 6 and 9: one-line errors -------------------------------
@pytest.mark.parametrize("where", ["name", "dataset", "model", "policy"])
@pytest.mark.parametrize("bad", ["../x", "a/b", "x\r", "x\ny", "..", "", "a" * 65, "| x |"])
def test_names_that_would_leave_runs_dir_or_break_tables_are_refused(where, bad):
    suite = {"name": "ok", "datasets": {"d": {}}, "models": {"m": []}, "policies": {"p": {}}}
    if where == "name":
        suite["name"] = bad
        key = "suite.name"
    else:
        group = {"dataset": "datasets", "model": "models", "policy": "policies"}[where]
        suite[group] = {bad: suite[group].popitem()[1]}
        key = f"suite.{group} key"
    with pytest.raises(SuiteConfigError, match=f"{key} must be a name of 1 to 64 letters"):
        load_suite(suite)


@pytest.mark.parametrize("override, message", [
    ("shard=abc", "shard must be an int, got 'abc'"),
    ("shards=0", "shards must be an int >= 1, got 0"),
    ("shard=2", "shard must be an int in [0, 1) (shards=1), got 2"),
    ("only=[]", "only must be a label pattern or a non-empty list of them"),
    ("only={a: 1}", "only must be a label pattern or a non-empty list of them"),
    ("only=[digits/cutmix]", "only must match some of the suite's runs"),
    ("suite.name=../../etc", "suite.name must be a name of 1 to 64 letters"),
    ("train_fn=os:system", "train_fn must name a module under 'openmix'"),
    ("lease_timeout_s=0", "lease_timeout_s must be a positive number of seconds, got 0"),
])
def test_bad_bench_settings_end_in_one_line_naming_the_key(tmp_path, capsys, override, message):
    with pytest.raises(SystemExit) as stop:
        _main(_bench_cfg(tmp_path, "dry_run=true", override))
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("openmix-bench: error: ") and message in err
    assert len(err.splitlines()) == 1


def test_the_console_prints_one_line_not_a_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-c", APP, "suite=tiny", "shard=abc", "dry_run=true",
                           f"db={tmp_path / 'r.db'}"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(TESTS.parent)})
    assert proc.returncode == 2
    assert proc.stderr.strip() == "openmix-bench: error: shard must be an int, got 'abc'"


@pytest.mark.parametrize("launcher, package", [("local", "hydra-joblib-launcher"),
                                               ("slurm", "hydra-submitit-launcher")])
def test_a_missing_launcher_plugin_names_the_bench_extra(monkeypatch, launcher, package):
    for module in ("hydra_plugins.hydra_joblib_launcher", "hydra_plugins.hydra_submitit_launcher"):
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    with pytest.raises(SystemExit) as stop:
        check_launcher(["-m", f"hydra/launcher={launcher}", "shards=2"])
    assert str(stop.value) == (f"openmix-bench: error: hydra/launcher={launcher} needs the "
                               f"{package} package, which comes with the bench extra: "
                               "pip install 'openmix[bench]'")
    check_launcher(["hydra/launcher=basic"])  # Hydra's own launcher needs nothing
