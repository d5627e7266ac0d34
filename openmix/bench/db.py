"""The results database: one SQLite row per benchmark run, plus run leases and tuning choices.

A run is identified by ``(suite, config_hash)`` (UNIQUE). Writers may be several processes at
once (parallel Hydra jobs, or several unsharded runners on one suite): every write is one
``BEGIN IMMEDIATE`` transaction on a connection in WAL mode with a busy timeout, and the insert
is an upsert on the unique key, so concurrent writers neither lose rows nor duplicate them. A
successful row is never overwritten unless the writer forces it; a failed row is replaced by the
next attempt of the same run.

Tables:
- ``runs``: the results; ``role`` is ``run`` (a result) or ``trial`` (a tuning run, left out of
  ``runs()`` by default so that leaderboards never see it); ``tuned`` holds the grid values a
  run used (a trial's values, or the values tuning chose), ``selected`` the trainer's selected
  epoch with its validation and test metrics.
- ``leases``: which runner is executing which run (``claim``), with a heartbeat; a lease whose
  heartbeat is older than ``stale_after_s``, or whose owner process on this host is gone, is
  taken over by the next claim.
- ``tuning``: for each suite cell (dataset/model/epochs/policy) the value tuning chose, the
  metric it was chosen on and every trial's value. Decided once; later runs read it.

Every value reaches SQL through ``?`` parameters; the only identifiers built into statements are
the fixed column names below. An unreadable file raises ``ResultsDBError`` naming the file and
how to rebuild it (``openmix-bench rebuild_db=true``).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import sqlite3
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

SCHEMA_VERSION = 2

STATUSES = ("ok", "failed")
ROLES = ("run", "trial")

# JSON-encoded columns (stored as TEXT, decoded on read).
_JSON_COLUMNS = ("policy_args", "loss_args", "final", "history", "versions", "config", "overrides",
                 "tuned", "selected", "reports")


class ResultsDBError(RuntimeError):
    """The results database cannot be used; the message names the file and the way out."""


@dataclass
class RunRecord:
    """One benchmark run as stored in the ``runs`` table.

    ``final`` holds every final metric of the trainer's summary; ``selected`` its selected epoch
    (``{"epoch", "rule", "metric", "val": {...}, "test": {...}}``); ``history`` the per-epoch
    curve (a list of dicts); ``headline`` the suite's headline metric of this run (e.g.
    ``selected.test.top1``) copied out so that it can be queried directly.
    """

    suite: str
    config_hash: str
    status: str
    dataset: str
    model: str
    policy: str
    seed: int
    task: str | None = None
    mix_name: str | None = None
    policy_args: dict = field(default_factory=dict)
    loss: str | None = None
    loss_args: dict = field(default_factory=dict)
    epochs: int | None = None
    headline_metric: str | None = None
    headline: float | None = None
    final: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    history_path: str | None = None
    seconds_per_epoch: float | None = None
    samples_per_second: float | None = None
    peak_memory_mb: float | None = None
    device: str | None = None
    versions: dict = field(default_factory=dict)
    hostname: str | None = None
    config: dict = field(default_factory=dict)
    overrides: list = field(default_factory=list)
    out_dir: str | None = None
    error: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    wall_seconds: float | None = None
    role: str = "run"
    tuned: dict = field(default_factory=dict)
    selected: dict = field(default_factory=dict)
    reports: dict = field(default_factory=dict)     # the trainer's end-of-run reports (calibration, robustness)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {self.role!r}")
        for name in ("suite", "config_hash", "dataset", "model", "policy"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty string, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"seed must be an int, got {self.seed!r} ({type(self.seed).__name__})")


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(RunRecord))

_SQL_TYPES = {
    "seed": "INTEGER NOT NULL",
    "epochs": "INTEGER",
    "headline": "REAL",
    "seconds_per_epoch": "REAL",
    "samples_per_second": "REAL",
    "peak_memory_mb": "REAL",
    "wall_seconds": "REAL",
    "suite": "TEXT NOT NULL",
    "config_hash": "TEXT NOT NULL",
    "status": "TEXT NOT NULL CHECK (status IN ('ok', 'failed'))",
    "dataset": "TEXT NOT NULL",
    "model": "TEXT NOT NULL",
    "policy": "TEXT NOT NULL",
    "role": "TEXT NOT NULL DEFAULT 'run'",
}

_CREATE_RUNS = (
    "CREATE TABLE IF NOT EXISTS runs (\n  id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
    + ",\n".join(f"  {c} {_SQL_TYPES.get(c, 'TEXT')}" for c in COLUMNS)
    + ",\n  UNIQUE (suite, config_hash)\n)"
)
_CREATE_LEASES = (
    "CREATE TABLE IF NOT EXISTS leases (suite TEXT NOT NULL, config_hash TEXT NOT NULL, "
    "owner TEXT NOT NULL, label TEXT, claimed_at REAL NOT NULL, heartbeat_at REAL NOT NULL, "
    "PRIMARY KEY (suite, config_hash))"
)
_CREATE_TUNING = (
    "CREATE TABLE IF NOT EXISTS tuning (suite TEXT NOT NULL, cell TEXT NOT NULL, "
    "dataset TEXT, model TEXT, epochs INTEGER, policy TEXT, task TEXT, metric TEXT, "
    "choice TEXT NOT NULL, value REAL, trials TEXT, decided_at TEXT, PRIMARY KEY (suite, cell))"
)
TUNING_COLUMNS = ("suite", "cell", "dataset", "model", "epochs", "policy", "task", "metric",
                  "choice", "value", "trials", "decided_at")

_UPSERT = (
    f"INSERT INTO runs ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})\n"
    "ON CONFLICT (suite, config_hash) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c not in ("suite", "config_hash"))
    + "\nWHERE runs.status <> 'ok' OR ?"
)


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _encode(record: RunRecord) -> list[Any]:
    row = asdict(record)
    values = []
    for name in COLUMNS:
        value = row[name]
        if name in _JSON_COLUMNS:
            value = json.dumps(value, sort_keys=True, default=str)
        values.append(_finite_or_none(value))
    return values


def _decode(row: sqlite3.Row) -> dict:
    item = dict(row)
    for name in _JSON_COLUMNS:
        if item.get(name) is not None:
            item[name] = json.loads(item[name])
    return item


def new_owner() -> str:
    """A lease owner id: ``host:pid:start-time`` (unique per runner process and start)."""
    return f"{socket.gethostname()}:{os.getpid()}:{time.time_ns()}"


def owner_alive(owner: str) -> bool:
    """False only when ``owner`` is a process on this host that no longer exists."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return True  # another machine: only its heartbeat can tell
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ResultsDB:
    """SQLite results database at ``path`` (created on first use).

    >>> db = ResultsDB("results.db")
    >>> db.record(run)                  # True if the row was written
    >>> db.completed_hashes("cpu-small")
    >>> db.runs(suite="cpu-small")      # list of dicts, JSON columns decoded (role "run")
    """

    def __init__(self, path: str | os.PathLike, *, timeout_s: float = 60.0, wal: bool = True):
        if not isinstance(path, (str, os.PathLike)) or not str(path):
            raise TypeError(f"path must be a file path (str or os.PathLike), got {path!r}")
        if not (isinstance(timeout_s, (int, float)) and timeout_s > 0):
            raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
        self.path = Path(path)
        self.timeout_s = float(timeout_s)
        self.wal = bool(wal)
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._transaction() as conn:
            self._check_integrity(conn)
            self._create(conn)

    def _check_integrity(self, conn: sqlite3.Connection) -> None:
        problems = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
        if problems != ["ok"]:
            raise ResultsDBError(_damaged(self.path, "; ".join(problems[:3])))

    def _create(self, conn: sqlite3.Connection) -> None:
        conn.execute(_CREATE_RUNS)
        have = {r[1] for r in conn.execute("PRAGMA table_info(runs)")}
        for column in COLUMNS:  # schema 1 databases lack the newer columns
            if column not in have:
                conn.execute(f"ALTER TABLE runs ADD COLUMN {column} "
                             f"{_SQL_TYPES.get(column, 'TEXT')}")
        conn.execute(_CREATE_LEASES)
        conn.execute(_CREATE_TUNING)
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (str(SCHEMA_VERSION),))

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """One autocommit connection; SQLite errors become ``ResultsDBError`` naming the file."""
        conn = None
        try:
            # ``timeout`` is SQLite's busy timeout: a writer waits for the lock instead of failing.
            conn = sqlite3.connect(str(self.path), timeout=self.timeout_s, isolation_level=None)
            conn.row_factory = sqlite3.Row
            if self.wal:
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            yield conn
        except sqlite3.DatabaseError as err:
            raise ResultsDBError(_explain(self.path, err, self.timeout_s)) from err
        finally:
            if conn is not None:
                conn.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):  # keep the original error
                    conn.execute("ROLLBACK")
                raise

    # ---- writing -------------------------------------------------------------------------
    def record(self, run: RunRecord, *, force: bool = False) -> bool:
        """Write one run in one transaction; returns True if a row was inserted or replaced.

        Without ``force`` an existing successful row with the same (suite, config_hash) is kept
        and nothing is written; an existing failed row is replaced.
        """
        if not isinstance(run, RunRecord):
            raise TypeError(f"run must be a RunRecord, got {type(run).__name__}")
        params = _encode(run) + [1 if force else 0]
        with self._transaction() as conn:
            cursor = conn.execute(_UPSERT, params)
        return cursor.rowcount > 0

    def promote(self, suite: str, config_hash: str, tuned: dict) -> bool:
        """Turn a successful trial into a run (a run at the tuning seed with the chosen values
        is the same experiment as that trial, so it is not trained twice)."""
        with self._transaction() as conn:
            cursor = conn.execute(
                "UPDATE runs SET role = 'run', tuned = ? WHERE suite = ? AND config_hash = ? "
                "AND role = 'trial' AND status = 'ok'",
                (json.dumps(tuned, sort_keys=True, default=str), suite, config_hash))
        return cursor.rowcount > 0

    # ---- leases --------------------------------------------------------------------------
    def claim(self, suite: str, config_hash: str, owner: str, *, label: str = "",
              stale_after_s: float = 300.0, force: bool = False) -> str:
        """Atomically take the lease on one run: ``"claimed"``, ``"done"`` (a successful row
        exists and ``force`` is off) or ``"taken"`` (another live runner holds it)."""
        now = time.time()
        with self._transaction() as conn:
            if not force and conn.execute(
                "SELECT 1 FROM runs WHERE suite = ? AND config_hash = ? AND status = 'ok'",
                (suite, config_hash),
            ).fetchone():
                return "done"
            held = conn.execute("SELECT owner, heartbeat_at FROM leases WHERE suite = ? AND "
                                "config_hash = ?", (suite, config_hash)).fetchone()
            if held is not None and held["owner"] != owner and now - held["heartbeat_at"] \
                    <= stale_after_s and owner_alive(held["owner"]):
                return "taken"
            conn.execute(
                "INSERT INTO leases (suite, config_hash, owner, label, claimed_at, heartbeat_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (suite, config_hash) DO UPDATE SET "
                "owner = excluded.owner, label = excluded.label, claimed_at = excluded.claimed_at,"
                " heartbeat_at = excluded.heartbeat_at",
                (suite, config_hash, owner, label, now, now))
        return "claimed"

    def heartbeat(self, suite: str, config_hash: str, owner: str) -> bool:
        """Refresh a lease; False if ``owner`` no longer holds it."""
        with self._transaction() as conn:
            cursor = conn.execute("UPDATE leases SET heartbeat_at = ? WHERE suite = ? AND "
                                  "config_hash = ? AND owner = ?",
                                  (time.time(), suite, config_hash, owner))
        return cursor.rowcount > 0

    def release(self, suite: str, config_hash: str, owner: str) -> None:
        with self._transaction() as conn:
            conn.execute("DELETE FROM leases WHERE suite = ? AND config_hash = ? AND owner = ?",
                         (suite, config_hash, owner))

    def lease(self, suite: str, config_hash: str) -> dict | None:
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM leases WHERE suite = ? AND config_hash = ?",
                               (suite, config_hash)).fetchone()
        return None if row is None else dict(row)

    def leased_by_other(self, suite: str, config_hash: str, owner: str,
                        stale_after_s: float = 300.0) -> bool:
        held = self.lease(suite, config_hash)
        return (held is not None and held["owner"] != owner
                and time.time() - held["heartbeat_at"] <= stale_after_s
                and owner_alive(held["owner"]))

    # ---- tuning --------------------------------------------------------------------------
    def record_tuning(self, decision: dict) -> dict:
        """Store a cell's tuning decision unless one exists; returns the stored one (so two
        runners deciding at once agree on the first)."""
        values = [decision.get(c) for c in TUNING_COLUMNS]
        for i, c in enumerate(TUNING_COLUMNS):
            if c in ("choice", "trials"):
                values[i] = json.dumps(values[i], sort_keys=True, default=str)
        with self._transaction() as conn:
            conn.execute(
                f"INSERT INTO tuning ({', '.join(TUNING_COLUMNS)}) VALUES "
                f"({', '.join('?' for _ in TUNING_COLUMNS)}) ON CONFLICT (suite, cell) DO NOTHING",
                values)
        return self.tuning(decision["suite"], decision["cell"])

    def tuning(self, suite: str, cell: str | None = None) -> Any:
        """The decision of one cell (dict or None), or all of a suite's (list) if no cell."""
        query, params = "SELECT * FROM tuning WHERE suite = ?", [suite]
        if cell is not None:
            query, params = query + " AND cell = ?", params + [cell]
        with self._connect() as conn:
            rows = conn.execute(query + " ORDER BY cell", params).fetchall()
        out = []
        for row in rows:
            item = dict(row)
            item["choice"] = json.loads(item["choice"])
            item["trials"] = json.loads(item["trials"]) if item["trials"] else []
            out.append(item)
        return out if cell is None else (out[0] if out else None)

    # ---- reading -------------------------------------------------------------------------
    def completed_hashes(self, suite: str) -> set[str]:
        """Config hashes of the successful runs and trials of ``suite``."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT config_hash FROM runs WHERE suite = ? AND status = 'ok'", (suite,)
            ).fetchall()
        return {r[0] for r in rows}

    def row(self, suite: str, config_hash: str) -> dict | None:
        """The row of one run or trial (JSON columns decoded), or None."""
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM runs WHERE suite = ? AND config_hash = ?",
                               (suite, config_hash)).fetchone()
        return None if row is None else _decode(row)

    def runs(self, suite: str | None = None, status: str | None = "ok",
             role: str | None = "run") -> list[dict]:
        """Rows as dicts (JSON columns decoded), ordered by id; filters are optional. Tuning
        trials are left out unless ``role="trial"`` or ``role=None``."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES} or None, got {status!r}")
        if role is not None and role not in ROLES:
            raise ValueError(f"role must be one of {ROLES} or None, got {role!r}")
        clauses, params = [], []
        for column, value in (("suite", suite), ("status", status), ("role", role)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        with self._connect() as conn:
            rows = conn.execute(f"SELECT * FROM runs{where} ORDER BY id", params).fetchall()
        return [_decode(row) for row in rows]

    def suites(self) -> list[str]:
        with self._connect() as conn:
            return [r[0] for r in conn.execute("SELECT DISTINCT suite FROM runs ORDER BY suite")]

    def count(self, suite: str | None = None, status: str | None = None,
              role: str | None = "run") -> int:
        return len(self.runs(suite=suite, status=status, role=role))


def _rebuild_hint(path: Path) -> str:
    return (f"move it aside and rebuild it from the run folders: mv {path} {path}.bad && "
            f"openmix-bench rebuild_db=true db={path} runs_dir=<the runs_dir the suites used>")


def _damaged(path: Path, detail: str) -> str:
    return (f"results database {path} is damaged ({detail}); to recover, {_rebuild_hint(path)}")


def _explain(path: Path, err: sqlite3.DatabaseError, timeout_s: float) -> str:
    text = str(err)
    if "locked" in text or "busy" in text:
        return (f"results database {path} stayed locked by another writer for {timeout_s:g} s "
                f"({text}); retry, or give each job its own db=... file")
    if "unable to open" in text or "readonly" in text:
        return (f"results database {path} cannot be opened for writing ({text}); check that "
                "its folder exists and is writable")
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return (f"results database {path} is not a readable SQLite database ({text}): the "
                f"file is damaged or is another kind of file; to recover, {_rebuild_hint(path)}")
    return f"results database {path}: {text}"
