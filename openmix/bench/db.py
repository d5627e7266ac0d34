"""The results database: one SQLite row per benchmark run.

A run is identified by ``(suite, config_hash)`` (UNIQUE). Writers may be several processes at
once (parallel Hydra jobs): every write is one ``BEGIN IMMEDIATE`` transaction on a connection in
WAL mode with a busy timeout, and the insert is an upsert on the unique key, so concurrent
writers neither lose rows nor duplicate them. A successful row is never overwritten unless the
writer forces it; a failed row is replaced by the next attempt of the same run.

Every value reaches SQL through ``?`` parameters; the only identifiers built into statements are
the fixed column names below.
"""
from __future__ import annotations

import json
import math
import os
import sqlite3
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1

STATUSES = ("ok", "failed")

# JSON-encoded columns (stored as TEXT, decoded on read).
_JSON_COLUMNS = ("policy_args", "loss_args", "final", "history", "versions", "config", "overrides")


@dataclass
class RunRecord:
    """One benchmark run as stored in the ``runs`` table.

    ``final`` holds every final metric of the trainer's summary; ``history`` the per-epoch curve
    (a list of dicts); ``headline`` the suite's headline metric (e.g. median top-1 of the last k
    epochs, or RMSE) copied out of ``final`` so that it can be queried directly.
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

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status: got {self.status!r}, expected one of {STATUSES}")
        for name in ("suite", "config_hash", "dataset", "model", "policy"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name}: got {value!r}, expected a non-empty string")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"seed: got {self.seed!r} ({type(self.seed).__name__}), expected an int")


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
}

_CREATE_RUNS = (
    "CREATE TABLE IF NOT EXISTS runs (\n  id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
    + ",\n".join(f"  {c} {_SQL_TYPES.get(c, 'TEXT')}" for c in COLUMNS)
    + ",\n  UNIQUE (suite, config_hash)\n)"
)

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


class ResultsDB:
    """SQLite results database at ``path`` (created on first use).

    >>> db = ResultsDB("results.db")
    >>> db.record(run)                  # True if the row was written
    >>> db.completed_hashes("cpu-small")
    >>> db.runs(suite="cpu-small")      # list of dicts, JSON columns decoded
    """

    def __init__(self, path: str | os.PathLike, *, timeout_s: float = 60.0, wal: bool = True):
        if not isinstance(path, (str, os.PathLike)) or not str(path):
            raise TypeError(f"path: got {path!r}, expected a file path (str or os.PathLike)")
        if not (isinstance(timeout_s, (int, float)) and timeout_s > 0):
            raise ValueError(f"timeout_s: got {timeout_s!r}, expected a positive number of seconds")
        self.path = Path(path)
        self.timeout_s = float(timeout_s)
        self.wal = bool(wal)
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(_CREATE_RUNS)
                conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                    ("schema_version", str(SCHEMA_VERSION)),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def _connect(self) -> "_Connection":
        return _Connection(self.path, self.timeout_s, self.wal)

    # ---- writing -------------------------------------------------------------------------
    def record(self, run: RunRecord, *, force: bool = False) -> bool:
        """Write one run in one transaction; returns True if a row was inserted or replaced.

        Without ``force`` an existing successful row with the same (suite, config_hash) is kept
        and nothing is written; an existing failed row is replaced.
        """
        if not isinstance(run, RunRecord):
            raise TypeError(f"run: got {type(run).__name__}, expected a RunRecord")
        params = _encode(run) + [1 if force else 0]
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                cursor = conn.execute(_UPSERT, params)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return cursor.rowcount > 0

    # ---- reading -------------------------------------------------------------------------
    def completed_hashes(self, suite: str) -> set[str]:
        """Config hashes of the successful runs of ``suite``."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT config_hash FROM runs WHERE suite = ? AND status = 'ok'", (suite,)
            ).fetchall()
        return {r[0] for r in rows}

    def runs(self, suite: str | None = None, status: str | None = "ok") -> list[dict]:
        """Rows as dicts (JSON columns decoded), ordered by id; filters are optional."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"status: got {status!r}, expected one of {STATUSES} or None")
        clauses, params = [], []
        if suite is not None:
            clauses.append("suite = ?")
            params.append(suite)
        if status is not None:
            clauses.append("status = ?")
            params.append(status)
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        with self._connect() as conn:
            conn.row_factory = sqlite3.Row
            rows = conn.execute(f"SELECT * FROM runs{where} ORDER BY id", params).fetchall()
        out = []
        for row in rows:
            item = dict(row)
            for name in _JSON_COLUMNS:
                if item.get(name) is not None:
                    item[name] = json.loads(item[name])
            out.append(item)
        return out

    def suites(self) -> list[str]:
        with self._connect() as conn:
            return [r[0] for r in conn.execute("SELECT DISTINCT suite FROM runs ORDER BY suite")]

    def count(self, suite: str | None = None, status: str | None = None) -> int:
        return len(self.runs(suite=suite, status=status))


class _Connection:
    """Context manager around one autocommit sqlite3 connection (explicit transactions)."""

    def __init__(self, path: Path, timeout_s: float, wal: bool):
        self._conn = sqlite3.connect(str(path), timeout=timeout_s, isolation_level=None)
        # ``timeout`` is SQLite's busy timeout: a writer waits for the lock instead of failing.
        if wal:
            self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")

    def __enter__(self) -> sqlite3.Connection:
        return self._conn

    def __exit__(self, *exc: Any) -> None:
        self._conn.close()

