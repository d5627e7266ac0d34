"""The runner: compose each run's trainer config, skip what the database has, train, record.

The sweep logic lives here and knows nothing about launchers: a job receives ``shard`` and
``shards`` and runs its stride of the suite, sequentially. Hydra's basic launcher (one job),
joblib launcher (local processes) and submitit launcher (Slurm) all just start jobs.

Each run is executed in a forked child process by default (``isolation="fork"``): a crash,
even a hard one, is recorded as a failed run and the suite goes on, and the child's peak memory
is its own. ``isolation="inprocess"`` runs in the calling process (Python exceptions are still
caught).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import importlib
import json
import multiprocessing
import os
import platform
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from omegaconf import DictConfig, OmegaConf, open_dict

from ..files import write_json_atomic
from ..paths import config_dir
from .db import ResultsDB, RunRecord
from .suite import RunSpec, Suite

ISOLATIONS = ("fork", "inprocess")
DEFAULT_TRAIN_FN = "openmix.train.app:train"
DEFAULT_HASH_EXCLUDE = ("trainer.out_dir", "hydra")


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
def load_train_fn(spec: str | Callable) -> Callable[[DictConfig], dict]:
    """``"package.module:function"`` -> the function (callables pass through)."""
    if callable(spec):
        return spec
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f"train_fn: got {spec!r}, expected 'package.module:function'")
    module, _, attr = spec.partition(":")
    fn = getattr(importlib.import_module(module), attr, None)
    if not callable(fn):
        raise ValueError(f"train_fn: got {spec!r}, but {module} has no callable {attr!r}")
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


def preload(train_fn: str | Callable, modules: Iterable[str] = (),
            log: Callable[[str], None] = print) -> None:
    """Import the trainer and ``modules`` once in this process, so that forked runs start
    without paying for the imports (torch, timm, scikit-learn take seconds each)."""
    try:
        load_train_fn(train_fn)
    except ImportError as err:
        log(f"note: could not import the trainer ({err}); every run will fail")
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as err:
            log(f"note: preload of {name!r} failed: {err}")


def _child(train_fn_spec, cfg: DictConfig, out_dir: str, threads: int | None) -> None:
    """The forked run: output to <out_dir>/train.log, result to <out_dir>/bench_result.json."""
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
        summary = call_trainer(load_train_fn(train_fn_spec), cfg, out)
        _write_json(out / "bench_result.json", {"summary": summary})
    except BaseException:  # noqa: BLE001 - everything is reported to the parent
        text = traceback.format_exc()
        log.write(text)
        _write_json(out / "bench_result.json", {"error": text})
        log.flush()
        os._exit(1)
    log.flush()
    os._exit(0)


def _write_json(path: Path, payload: Any) -> None:
    write_json_atomic(path, payload, indent=None)


def execute(
    train_fn_spec: str | Callable,
    cfg: DictConfig,
    out_dir: Path,
    isolation: str = "fork",
    timeout_s: float | None = None,
    threads: int | None = None,
) -> tuple[dict | None, str | None]:
    """Run one training; returns ``(summary, None)`` or ``(None, error text)``."""
    if isolation not in ISOLATIONS:
        raise ValueError(f"isolation: got {isolation!r}, expected one of {ISOLATIONS}")
    out_dir.mkdir(parents=True, exist_ok=True)
    result_path = out_dir / "bench_result.json"
    result_path.unlink(missing_ok=True)
    if isolation == "inprocess":
        try:
            return call_trainer(load_train_fn(train_fn_spec), cfg, out_dir), None
        except Exception:  # noqa: BLE001 - a failing run is a result, not a crash of the suite
            return None, traceback.format_exc()

    # fork: the child inherits the imported modules and the config object, nothing is pickled
    ctx = multiprocessing.get_context("fork")
    proc = ctx.Process(target=_child, args=(train_fn_spec, cfg, str(out_dir), threads))
    proc.start()
    try:
        proc.join(timeout_s)
    except BaseException:
        proc.terminate()
        proc.join(5)
        raise
    if proc.is_alive():
        proc.terminate()
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join()
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
    final = summary.get("final") or {}
    metric = suite.headline.get(spec.task)
    headline = final.get(metric) if metric else None
    versions = dict(_environment())
    versions.update(summary.get("versions") or {})
    history = summary.get("history") or []
    history_path = out_dir / "summary.json"
    return RunRecord(
        suite=spec.suite,
        config_hash=digest,
        status="ok" if error is None else "failed",
        dataset=spec.dataset,
        model=spec.model,
        policy=spec.policy,
        seed=spec.seed,
        task=summary.get("task", spec.task),
        mix_name=_name(resolved.get("mix")) or summary.get("policy"),
        policy_args=_args(resolved.get("mix")),
        # the trainer's resolved loss (loss=auto becomes soft_ce or mse), else the config's
        loss=summary.get("loss") or _name(resolved.get("loss")),
        loss_args=_args(resolved.get("loss")),
        epochs=summary.get("epochs"),
        headline_metric=metric,
        headline=None if headline is None else float(headline),
        final=final,
        history=history,
        history_path=str(history_path) if history_path.is_file() else None,
        seconds_per_epoch=summary.get("seconds_per_epoch"),
        samples_per_second=summary.get("samples_per_second"),
        peak_memory_mb=summary.get("peak_memory_mb"),
        device=None if summary.get("device") is None else str(summary.get("device")),
        versions=versions,
        hostname=socket.gethostname(),
        config=resolved,
        overrides=list(spec.overrides),
        out_dir=str(out_dir),
        error=None if error is None else error[-8000:],
        started_at=started,
        finished_at=_now(),
        wall_seconds=wall,
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


@dataclass
class SuiteReport:
    ran: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    planned: list[tuple[str, str, bool]] = field(default_factory=list)  # label, hash, done


def _set_key(cfg: DictConfig, dotted: str, value: Any) -> None:
    with open_dict(cfg):
        OmegaConf.update(cfg, dotted, value, force_add=True)


def run_suite(
    suite: Suite,
    runs: list[RunSpec],
    options: RunnerOptions,
    log: Callable[[str], None] = print,
) -> SuiteReport:
    """Run ``runs`` (a shard of ``suite``) one after the other, recording each in the DB."""
    if options.isolation not in ISOLATIONS:
        raise ValueError(f"isolation: got {options.isolation!r}, expected one of {ISOLATIONS}")
    isolation = options.isolation
    if isolation == "fork" and "fork" not in multiprocessing.get_all_start_methods():
        log("note: this platform cannot fork; running each run in this process instead")
        isolation = "inprocess"
    db = ResultsDB(options.db_path)
    done = db.completed_hashes(suite.name)
    if not options.dry_run:
        preload(options.train_fn, options.preload, log)
    report = SuiteReport()
    total = len(runs)
    for i, spec in enumerate(runs, 1):
        prefix = f"[{i}/{total}] {spec.label}"
        try:
            cfg = compose_train_config(spec.overrides, options.config_dir, options.config_name)
            resolved = resolved_config(cfg, options.hash_exclude)
        except Exception as err:  # noqa: BLE001 - a bad entry is a failed run, not a dead suite
            if options.dry_run:
                raise
            # no config to hash: identify the failed run by its overrides instead
            digest = config_hash({"unresolved_overrides": list(spec.overrides)})
            error = f"composing the trainer config failed: {type(err).__name__}: {err}"
            record = build_record(spec, suite, digest, {}, Path(options.runs_dir), None, error,
                                  _now(), 0.0)
            db.record(record, force=options.force)
            report.failed.append(spec.label)
            log(f"{prefix}: FAILED: {error}")
            continue
        digest = config_hash(resolved)
        exists = digest in done
        if options.dry_run:
            report.planned.append((spec.label, digest, exists))
            log(f"{prefix} {digest[:12]} {'done' if exists else 'to run'}")
            continue
        if exists and not options.force:
            report.skipped.append(spec.label)
            log(f"{prefix}: in the database ({digest[:12]}), skipped")
            continue
        out_dir = (
            Path(options.runs_dir) / spec.suite / spec.dataset / spec.model
            / _safe(spec.policy) / f"seed{spec.seed}-{digest[:12]}"
        ).resolve()
        _set_key(cfg, options.out_dir_key, str(out_dir))
        started, t0 = _now(), time.perf_counter()
        summary, error = execute(
            options.train_fn, cfg, out_dir, isolation, options.timeout_s,
            options.threads_per_run,
        )
        wall = time.perf_counter() - t0
        record = build_record(spec, suite, digest, resolved, out_dir, summary, error, started, wall)
        db.record(record, force=options.force)
        if error is None:
            report.ran.append(spec.label)
            shown = "n/a" if record.headline is None else f"{record.headline:.4g}"
            log(f"{prefix}: ok {record.headline_metric}={shown} ({wall:.1f} s)")
        else:
            report.failed.append(spec.label)
            last = error.strip().splitlines()[-1] if error.strip() else error
            log(f"{prefix}: FAILED ({wall:.1f} s): {last}")
    return report


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.+" else "_" for c in label)
