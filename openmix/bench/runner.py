"""The runner: compose each run's trainer config, skip what the database has, train, record.

The sweep logic lives here and knows nothing about launchers: a job receives ``shard`` and
``shards`` and runs its stride of the suite, sequentially. Hydra's basic launcher (one job),
joblib launcher (local processes) and submitit launcher (Slurm) all just start jobs. Runners
may also share one list without shards: each run is leased in the database while it trains
(claimed atomically, kept alive by a heartbeat, taken over when stale), so no run is trained
twice at once and a killed runner's run is picked up by the next one.

Each run is executed in a forked child process by default (``isolation="fork"``): a crash,
even a hard one, is recorded as a failed run and the suite goes on, and the child's peak memory
is its own. On Linux the child is killed when the runner dies (``PR_SET_PDEATHSIG``), so a
SIGKILLed runner leaves nothing training. ``isolation="inprocess"`` runs in the calling process
(Python exceptions are still caught).

The trainer (``train_fn``) and ``preload`` modules are imported by dotted path only from the
``openmix`` package or from packages listed in ``allow_modules``.
"""
from __future__ import annotations

import contextlib
import ctypes
import datetime as _dt
import hashlib
import importlib
import json
import math
import multiprocessing
import os
import platform
import re
import signal
import socket
import sys
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from omegaconf import DictConfig, OmegaConf, open_dict

from ..files import write_json_atomic
from ..paths import config_dir
from .db import COLUMNS, ResultsDB, ResultsDBError, RunRecord, new_owner
from .suite import RunSpec, Suite, SuiteConfigError, summary_value
from .tuning import decide, describe, write_decision

ISOLATIONS = ("fork", "inprocess")
DEFAULT_TRAIN_FN = "openmix.train.app:train"
DEFAULT_HASH_EXCLUDE = ("trainer.out_dir", "hydra")
RECORD_FILE = "bench_record.json"   # the run's database row, beside its outputs (rebuild_db)
_CALLABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*")
_PR_SET_PDEATHSIG = 1


def default_config_dir() -> Path:
    """The trainer's configs: ``OPENMIX_CONFIG_DIR``, the repository's ``configs/`` or the copy
    inside the installed package (see ``openmix.paths``)."""
    return config_dir()


# ---- the trainer's config ----------------------------------------------------------------
@contextlib.contextmanager
def _fresh_global_hydra():
    """Let ``hydra.compose`` run with its own search path, even inside a ``@hydra.main`` app."""
    from hydra.core.global_hydra import GlobalHydra

    gh = GlobalHydra.instance()
    saved = gh.hydra if gh.is_initialized() else None
    gh.clear()
    try:
        yield
    finally:
        GlobalHydra.instance().clear()
        if saved is not None:
            GlobalHydra.instance().initialize(saved)


def compose_train_config(
    overrides: Iterable[str], config_dir: str | os.PathLike | None = None, config_name: str = "train"
) -> DictConfig:
    """The trainer's config for ``overrides`` (``hydra.compose`` on the trainer's config dir)."""
    from hydra import compose, initialize_config_dir

    config_dir = Path(config_dir) if config_dir else default_config_dir()
    if not (config_dir / f"{config_name}.yaml").is_file():
        raise ValueError(
            f"config_name: got {config_name!r}, but {config_dir / (config_name + '.yaml')} does "
            "not exist; expected the trainer's root config in the config dir"
        )
    with _fresh_global_hydra():
        with initialize_config_dir(config_dir=str(config_dir.resolve()), version_base=None):
            return compose(config_name=config_name, overrides=list(overrides))


def _drop_path(tree: dict, dotted: str) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
        if node is None:
            return
    if isinstance(node, dict):
        node.pop(keys[-1], None)


def resolved_config(cfg: DictConfig, exclude: Iterable[str] = DEFAULT_HASH_EXCLUDE) -> dict:
    """The resolved config as plain data, without the ``exclude`` dotted keys (output paths)."""
    tree = OmegaConf.to_container(cfg, resolve=False)
    for key in exclude:
        _drop_path(tree, key)
    # resolve what is left; excluded keys (e.g. ${hydra:...} paths) never need resolving
    return OmegaConf.to_container(OmegaConf.create(tree), resolve=True)


def config_hash(resolved: dict) -> str:
    """SHA-256 of the canonical JSON of a resolved config (see ``resolved_config``)."""
    if not isinstance(resolved, dict):
        raise TypeError(f"resolved: got {type(resolved).__name__}, expected a plain dict")
    blob = json.dumps(resolved, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


# ---- calling the trainer -----------------------------------------------------------------
TRUSTED_PACKAGE = "openmix"


def check_module_allowed(module: str, allow_modules: Iterable[str], key: str) -> None:
    """Refuse importing ``module`` unless it is ``openmix`` (or under it) or under one of
    ``allow_modules`` (an explicit list of trusted packages or modules)."""
    allowed = (TRUSTED_PACKAGE, *allow_modules)
    if not any(module == a or module.startswith(a + ".") for a in allowed):
        raise SuiteConfigError(
            f"{key} must name a module under 'openmix' or under allow_modules "
            f"{list(allow_modules)}, got {module!r}; to trust your own package, add it: "
            f"'allow_modules=[{module.split('.')[0]}]' (in Python: RunnerOptions(allow_modules="
            f"('{module.split('.')[0]}',)), or pass the function itself as train_fn)")


def check_train_fn(spec: str | Callable, allow_modules: Iterable[str] = ()) -> None:
    """Refuse a ``train_fn`` that is not a callable nor ``'package.module:function'`` in an
    allowed module (nothing is imported)."""
    if callable(spec):
        return
    if not isinstance(spec, str) or not _CALLABLE.fullmatch(spec):
        raise SuiteConfigError(f"train_fn must be 'package.module:function', got {spec!r}")
    check_module_allowed(spec.partition(":")[0], tuple(allow_modules), "train_fn")


def load_train_fn(spec: str | Callable,
                  allow_modules: Iterable[str] = ()) -> Callable[[DictConfig], dict]:
    """``"package.module:function"`` -> the function (callables pass through). Only modules
    under ``openmix`` or under ``allow_modules`` are imported."""
    check_train_fn(spec, allow_modules)
    if callable(spec):
        return spec
    module, _, attr = spec.partition(":")
    fn = getattr(importlib.import_module(module), attr, None)
    if not callable(fn):
        raise SuiteConfigError(f"train_fn must name a callable, got {spec!r} ({module} has no "
                               f"callable {attr!r})")
    return fn


def call_trainer(train_fn: Callable[[DictConfig], dict], cfg: DictConfig, out_dir: Path) -> dict:
    """The one place that calls into the trainer: run it, return its summary dict."""
    summary = train_fn(cfg)
    path = out_dir / "summary.json"
    if (summary is None or not isinstance(summary, dict)) and path.is_file():
        summary = json.loads(path.read_text())
    if not isinstance(summary, dict):
        raise TypeError(f"the trainer returned {type(summary).__name__}, expected a summary dict")
    return summary


def preload(modules: Iterable[str] = (), allow_modules: Iterable[str] = (),
            log: Callable[[str], None] = print) -> None:
    """Import ``modules`` once in this process, so that forked runs start without paying for
    the imports (torch, timm, scikit-learn take seconds each). Same trust rule as train_fn."""
    for name in modules:
        check_module_allowed(str(name), tuple(allow_modules), "preload")
        try:
            importlib.import_module(name)
        except ImportError as err:
            log(f"note: preload of {name!r} failed: {err}")


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this process when its parent dies (prctl PR_SET_PDEATHSIG), so a
    killed runner leaves no run training; elsewhere nothing is set."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no prctl in this libc
            pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _child(train_fn: Callable, cfg: DictConfig, out_dir: str, threads: int | None,
           parent_pid: int) -> None:
    """The forked run: output to <out_dir>/train.log, result to <out_dir>/bench_result.json."""
    _die_with_parent(parent_pid)
    out = Path(out_dir)
    log = open(out / "train.log", "a", buffering=1)
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    sys.stdout = sys.stderr = log
    try:
        import torch

        # A forked child that enters an OpenMP region whose thread pool the parent had started
        # deadlocks (libgomp is not fork-safe); like DataLoader workers, start single-threaded
        # unless told otherwise. openmix-bench's own parent never runs torch ops, so there
        # threads_per_run > 1 is safe.
        torch.set_num_threads(int(threads) if threads else 1)
        summary = call_trainer(train_fn, cfg, out)
        write_json_atomic(out / "bench_result.json", {"summary": summary}, indent=None)
    except BaseException:  # noqa: BLE001 - everything is reported to the parent
        text = traceback.format_exc()
        log.write(text)
        write_json_atomic(out / "bench_result.json", {"error": text}, indent=None)
        log.flush()
        os._exit(1)
    log.flush()
    os._exit(0)


class _Heartbeat:
    """Calls ``beat`` every ``every_s`` seconds on a thread while a run trains in-process."""

    def __init__(self, beat: Callable[[], None] | None, every_s: float):
        self.beat, self.every_s = beat, every_s
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self) -> "_Heartbeat":
        if self.beat is not None:
            self._thread = threading.Thread(target=self._loop, name="openmix-bench-lease",
                                            daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self.beat()

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def _run_inprocess(train_fn: Callable, cfg: DictConfig,
                   out_dir: Path) -> tuple[dict | None, str | None]:
    try:
        return call_trainer(train_fn, cfg, out_dir), None
    except Exception:  # noqa: BLE001 - a failing run is a result, not a crash of the suite
        return None, traceback.format_exc()


def _wait_child(proc, timeout_s: float | None, heartbeat: Callable[[], None] | None,
                heartbeat_s: float) -> bool:
    """Join the child, calling ``heartbeat`` between waits; False if it timed out."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        wait = heartbeat_s if deadline is None else max(0.0, min(heartbeat_s,
                                                                 deadline - time.monotonic()))
        proc.join(wait)
        if not proc.is_alive():
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False
        if heartbeat is not None:
            heartbeat()


def _stop(proc) -> None:
    proc.terminate()
    proc.join(5)
    if proc.is_alive():
        proc.kill()
        proc.join()


def execute(
    train_fn: str | Callable,
    cfg: DictConfig,
    out_dir: Path,
    isolation: str = "fork",
    timeout_s: float | None = None,
    threads: int | None = None,
    heartbeat: Callable[[], None] | None = None,
    heartbeat_s: float = 30.0,
) -> tuple[dict | None, str | None]:
    """Run one training; returns ``(summary, None)`` or ``(None, error text)``.

    ``heartbeat`` is called every ``heartbeat_s`` seconds while the run trains (the lease)."""
    if isolation not in ISOLATIONS:
        raise SuiteConfigError(f"isolation must be one of {ISOLATIONS}, got {isolation!r}")
    train_fn = load_train_fn(train_fn)
    out_dir.mkdir(parents=True, exist_ok=True)
    result_path = out_dir / "bench_result.json"
    result_path.unlink(missing_ok=True)
    if isolation == "inprocess":
        with _Heartbeat(heartbeat, heartbeat_s):
            return _run_inprocess(train_fn, cfg, out_dir)

    # fork: the child inherits the imported modules and the config object, nothing is pickled
    ctx = multiprocessing.get_context("fork")
    proc = ctx.Process(target=_child, args=(train_fn, cfg, str(out_dir), threads, os.getpid()))
    proc.start()
    try:
        finished = _wait_child(proc, timeout_s, heartbeat, heartbeat_s)
    except BaseException:
        _stop(proc)
        raise
    if not finished:
        _stop(proc)
        return None, f"timed out after {timeout_s} s"
    payload = json.loads(result_path.read_text()) if result_path.is_file() else {}
    if proc.exitcode == 0 and "summary" in payload:
        return payload["summary"], None
    if "error" in payload:
        return None, payload["error"]
    if proc.exitcode is not None and proc.exitcode < 0:
        return None, f"the run's process was killed by signal {-proc.exitcode}"
    return None, f"the run's process exited with code {proc.exitcode} and no result"


# ---- records -----------------------------------------------------------------------------
def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _args(node: Any, skip: tuple[str, ...] = ("name",)) -> dict:
    if isinstance(node, dict):
        return {k: v for k, v in node.items() if k not in skip}
    return {}


def _name(node: Any) -> str | None:
    if isinstance(node, dict):
        value = node.get("name")
        return None if value is None else str(value)
    return None if node is None else str(node)


def _environment() -> dict:
    env = {"python": platform.python_version(), "platform": platform.platform()}
    for module in ("torch", "openmix", "numpy"):
        mod = sys.modules.get(module)
        if mod is not None and getattr(mod, "__version__", None):
            env[module] = str(mod.__version__)
    return env


def headline_of(summary: dict, metric: str | None) -> float | None:
    """The finite number at ``metric`` in ``summary`` (see ``summary_value``), else None."""
    value = summary_value(summary, metric) if metric else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def build_record(
    spec: RunSpec,
    suite: Suite,
    digest: str,
    resolved: dict,
    out_dir: Path,
    summary: dict | None,
    error: str | None,
    started: str,
    wall: float,
) -> RunRecord:
    summary = summary or {}
    metric = suite.headline.get(spec.task)
    versions = dict(_environment())
    versions.update(summary.get("versions") or {})
    history_path = out_dir / "summary.json"
    return RunRecord(
        suite=spec.suite, config_hash=digest, status="ok" if error is None else "failed",
        dataset=spec.dataset, model=spec.model, policy=spec.policy, seed=spec.seed,
        task=summary.get("task", spec.task),
        mix_name=_name(resolved.get("mix")) or summary.get("policy"),
        policy_args=_args(resolved.get("mix")),
        # the trainer's resolved loss (loss=auto becomes soft_ce or mse), else the config's
        loss=summary.get("loss") or _name(resolved.get("loss")),
        loss_args=_args(resolved.get("loss")),
        epochs=summary.get("epochs"), headline_metric=metric,
        headline=headline_of(summary, metric), final=summary.get("final") or {},
        history=summary.get("history") or [],
        history_path=str(history_path) if history_path.is_file() else None,
        seconds_per_epoch=summary.get("seconds_per_epoch"),
        samples_per_second=summary.get("samples_per_second"),
        peak_memory_mb=summary.get("peak_memory_mb"),
        device=None if summary.get("device") is None else str(summary.get("device")),
        versions=versions, hostname=socket.gethostname(), config=resolved,
        overrides=list(spec.overrides), out_dir=str(out_dir),
        error=None if error is None else error[-8000:], started_at=started,
        finished_at=_now(), wall_seconds=wall, role=spec.role,
        tuned=dict(spec.trial or spec.chosen), selected=summary.get("selected") or {},
        reports=summary.get("reports") or {},
    )


# ---- the suite ---------------------------------------------------------------------------
@dataclass
class RunnerOptions:
    db_path: str | os.PathLike = "results.db"
    runs_dir: str | os.PathLike = "outputs/bench"
    train_fn: str | Callable = DEFAULT_TRAIN_FN
    config_dir: str | os.PathLike | None = None
    config_name: str = "train"
    hash_exclude: tuple[str, ...] = DEFAULT_HASH_EXCLUDE
    out_dir_key: str = "trainer.out_dir"
    isolation: str = "fork"
    timeout_s: float | None = None
    threads_per_run: int | None = None
    force: bool = False
    dry_run: bool = False
    preload: tuple[str, ...] = ()
    allow_modules: tuple[str, ...] = ()   # trusted packages besides openmix (train_fn, preload)
    lease_timeout_s: float = 300.0        # a lease without heartbeat this long is taken over
    heartbeat_s: float = 30.0             # how often a training run's lease is refreshed
    poll_s: float = 5.0                   # how often to look for trials other runners hold

    def validate(self) -> None:
        if self.isolation not in ISOLATIONS:
            raise SuiteConfigError(f"isolation must be one of {ISOLATIONS}, got {self.isolation!r}")
        for key in ("lease_timeout_s", "heartbeat_s", "poll_s"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise SuiteConfigError(f"{key} must be a positive number of seconds, got {value!r}")
        if self.heartbeat_s >= self.lease_timeout_s:
            raise SuiteConfigError(f"heartbeat_s must be below lease_timeout_s "
                                   f"({self.lease_timeout_s}), got {self.heartbeat_s!r}")
        check_train_fn(self.train_fn, self.allow_modules)
        for module in self.preload:
            check_module_allowed(str(module), self.allow_modules, "preload")
        if self.timeout_s is not None and not (isinstance(self.timeout_s, (int, float))
                                               and self.timeout_s > 0):
            raise SuiteConfigError(f"timeout_s must be null or a positive number of seconds, "
                                   f"got {self.timeout_s!r}")


@dataclass
class SuiteReport:
    ran: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    taken: list[str] = field(default_factory=list)   # runs another runner was executing
    planned: list[tuple[str, str, bool]] = field(default_factory=list)  # label, hash, done
    tuned: dict[str, dict] = field(default_factory=dict)  # cell -> chosen values


def _set_key(cfg: DictConfig, dotted: str, value: Any) -> None:
    with open_dict(cfg):
        OmegaConf.update(cfg, dotted, value, force_add=True)


def run_suite(
    suite: Suite,
    runs: list[RunSpec],
    options: RunnerOptions,
    log: Callable[[str], None] = print,
) -> SuiteReport:
    """Run ``runs`` (a part of ``suite``) one after the other, recording each in the DB.

    Each run is leased in the database while it trains, so several runners can work through
    the same list at once; tuned runs first get their cell's trials run and decided."""
    return SuiteRunner(suite, options, log).run(list(runs))


_WAIT = object()  # a tuning trial is still running in another runner


class SuiteRunner:
    """Works through a list of runs of one suite: claim each run's lease in the database,
    train it, record it, release it; runs that are tuned wait for their cell's decision."""

    def __init__(self, suite: Suite, options: RunnerOptions, log: Callable[[str], None]):
        options.validate()
        self.suite, self.options, self.log = suite, options, log
        self.isolation = options.isolation
        if self.isolation == "fork" and "fork" not in multiprocessing.get_all_start_methods():
            log("note: this platform cannot fork; running each run in this process instead")
            self.isolation = "inprocess"
        self.db = ResultsDB(options.db_path)
        self.owner = new_owner()
        self.report = SuiteReport()
        self.train_fn: Callable | None = None
        self._prepared: dict[tuple[str, ...], tuple[DictConfig, dict, str]] = {}
        self._done_count, self._total = 0, 0

    # ---- the plan ------------------------------------------------------------------------
    def run(self, runs: list[RunSpec]) -> SuiteReport:
        trials = self._trials_for(runs)
        self._total = len(trials) + len(runs)
        if self.options.dry_run:
            self._plan(trials, runs)
            return self.report
        self.train_fn = load_train_fn(self.options.train_fn, self.options.allow_modules)
        preload(self.options.preload, self.options.allow_modules, self.log)
        for trial in trials:
            self.run_one(trial)
        queue = runs
        while queue:
            waiting = [spec for spec in queue if not self._run_or_wait(spec)]
            if waiting:
                self.log(f"waiting for tuning trials that other runners are training "
                         f"({len(waiting)} runs wait)")
                time.sleep(self.options.poll_s)
            queue = waiting
        return self.report

    def _run_or_wait(self, spec: RunSpec) -> bool:
        """Run ``spec`` (with its cell's tuned values); False if the decision must wait."""
        if spec.needs_choice:
            choice = self._choice(spec)
            if choice is _WAIT:
                return False
            if isinstance(choice, str):
                self._count()
                self.report.failed.append(spec.label)
                self.log(f"{self._prefix(spec)}: FAILED: {choice}")
                return True
            spec = spec.with_choice(choice)
        self.run_one(spec)
        return True

    def _trials_for(self, runs: list[RunSpec]) -> list[RunSpec]:
        cells = {r.cell for r in runs if r.needs_choice}
        cells = {c for c in cells if self.db.tuning(self.suite.name, c) is None}
        return [t for t in self.suite.trials if t.cell in cells]

    def _plan(self, trials: list[RunSpec], runs: list[RunSpec]) -> None:
        done = self.db.completed_hashes(self.suite.name)
        for spec in trials + runs:
            if spec.needs_choice:
                decided = self.db.tuning(self.suite.name, spec.cell)
                if decided is None:
                    self._count()
                    self.report.planned.append((spec.label, "", False))
                    self.log(f"{self._prefix(spec)} to tune")
                    continue
                spec = spec.with_choice(decided["choice"])
            digest = self.prepare(spec)[2]
            self._count()
            self.report.planned.append((spec.label, digest, digest in done))
            self.log(f"{self._prefix(spec)} {digest[:12]} {'done' if digest in done else 'to run'}")

    # ---- one run -------------------------------------------------------------------------
    def prepare(self, spec: RunSpec) -> tuple[DictConfig, dict, str]:
        """The run's composed trainer config, its resolved form and its hash (cached)."""
        key = spec.overrides
        if key not in self._prepared:
            cfg = compose_train_config(spec.overrides, self.options.config_dir,
                                       self.options.config_name)
            resolved = resolved_config(cfg, self.options.hash_exclude)
            self._prepared[key] = (cfg, resolved, config_hash(resolved))
        return self._prepared[key]

    def _count(self) -> None:
        self._done_count += 1

    def _prefix(self, spec: RunSpec) -> str:
        return f"[{self._done_count}/{self._total}] {spec.label}"

    def run_one(self, spec: RunSpec) -> str:
        """Claim, train and record one run: ``"ran"``, ``"failed"``, ``"skipped"`` (done) or
        ``"taken"`` (another runner holds its lease)."""
        try:
            cfg, resolved, digest = self.prepare(spec)
        except Exception as err:  # noqa: BLE001 - a bad entry is a failed run, not a dead suite
            return self._record_uncomposable(spec, err)
        options, name = self.options, self.suite.name
        state = self.db.claim(name, digest, self.owner, label=spec.label,
                              stale_after_s=options.lease_timeout_s, force=options.force)
        self._count()
        prefix = self._prefix(spec)
        if state == "done":
            reused = spec.chosen and self.db.promote(name, digest, dict(spec.chosen))
            if reused:
                self._rewrite_record(digest)
            self.report.skipped.append(spec.label)
            self.log(f"{prefix}: " + ("the same experiment as its tuning trial, reused"
                                      if reused else f"in the database ({digest[:12]}), skipped"))
            return "skipped"
        if state == "taken":
            self.report.taken.append(spec.label)
            self.log(f"{prefix}: another runner is training it ({digest[:12]}), left to it")
            return "taken"
        try:
            record = self._train(spec, cfg, resolved, digest)
        finally:
            self.db.release(name, digest, self.owner)
        return self._report(spec, record, prefix)

    def _train(self, spec: RunSpec, cfg: DictConfig, resolved: dict, digest: str) -> RunRecord:
        options = self.options
        out_dir = (Path(options.runs_dir) / spec.suite / spec.dataset / spec.model
                   / spec.policy / f"seed{spec.seed}-{digest[:12]}").resolve()
        _set_key(cfg, options.out_dir_key, str(out_dir))
        started, t0 = _now(), time.perf_counter()
        summary, error = execute(
            self.train_fn or options.train_fn, cfg, out_dir, self.isolation, options.timeout_s,
            options.threads_per_run, heartbeat=lambda: self._heartbeat(digest),
            heartbeat_s=options.heartbeat_s,
        )
        wall = time.perf_counter() - t0
        record = build_record(spec, self.suite, digest, resolved, out_dir, summary, error,
                              started, wall)
        self.db.record(record, force=options.force)
        write_json_atomic(out_dir / RECORD_FILE, asdict(record))
        return record

    def _rewrite_record(self, digest: str) -> None:
        """Keep the run folder's record equal to its (promoted) database row."""
        row = self.db.row(self.suite.name, digest)
        if row and row.get("out_dir") and Path(row["out_dir"]).is_dir():
            write_json_atomic(Path(row["out_dir"]) / RECORD_FILE,
                              {k: row[k] for k in COLUMNS if k in row})

    def _heartbeat(self, digest: str) -> None:
        try:
            if not self.db.heartbeat(self.suite.name, digest, self.owner):
                self.log(f"note: the lease on {digest[:12]} was taken over by another runner")
        except ResultsDBError as err:  # a missed heartbeat is not worth killing the run
            self.log(f"note: lease heartbeat failed: {err}")

    def _report(self, spec: RunSpec, record: RunRecord, prefix: str) -> str:
        wall = record.wall_seconds or 0.0
        if record.status == "ok":
            self.report.ran.append(spec.label)
            shown = "n/a" if record.headline is None else f"{record.headline:.4g}"
            self.log(f"{prefix}: ok {record.headline_metric}={shown} ({wall:.1f} s)")
            if record.headline is None:
                self.log(f"note: the run's summary has no number at {record.headline_metric!r} "
                         f"(the suite's headline for {spec.task}); its headline is left empty")
            return "ran"
        self.report.failed.append(spec.label)
        error = record.error or ""
        last = error.strip().splitlines()[-1] if error.strip() else error
        self.log(f"{prefix}: FAILED ({wall:.1f} s): {last}")
        return "failed"

    def _record_uncomposable(self, spec: RunSpec, err: Exception) -> str:
        if self.options.dry_run:
            raise err
        # no config to hash: identify the failed run by its overrides instead
        digest = config_hash({"unresolved_overrides": list(spec.overrides)})
        error = f"composing the trainer config failed: {type(err).__name__}: {err}"
        record = build_record(spec, self.suite, digest, {}, Path(self.options.runs_dir), None,
                              error, _now(), 0.0)
        self.db.record(record, force=self.options.force)
        self._count()
        self.report.failed.append(spec.label)
        self.log(f"{self._prefix(spec)}: FAILED: {error}")
        return "failed"

    # ---- tuning --------------------------------------------------------------------------
    def _choice(self, spec: RunSpec) -> Any:
        """The cell's chosen values (dict), ``_WAIT``, or an error text if no trial counts."""
        stored = self.db.tuning(self.suite.name, spec.cell)
        if stored is not None:
            return stored["choice"]
        results = []
        for trial in (t for t in self.suite.trials if t.cell == spec.cell):
            try:
                digest = self.prepare(trial)[2]
            except Exception:  # noqa: BLE001 - recorded as a failed trial by run_one
                results.append((trial, None, None))
                continue
            row = self.db.row(self.suite.name, digest)
            if row is None or self.db.leased_by_other(self.suite.name, digest, self.owner,
                                                      self.options.lease_timeout_s):
                if self.run_one(trial) == "taken":
                    return _WAIT
                row = self.db.row(self.suite.name, digest)
            results.append((trial, digest, row))
        decision = decide(self.suite, spec, results)
        if isinstance(decision, str):
            return decision
        stored = self.db.record_tuning(decision)
        write_decision(self.options.runs_dir, stored)
        self.report.tuned[spec.cell] = stored["choice"]
        self.log(f"tuned {spec.cell}: {describe(stored)}")
        return stored["choice"]
