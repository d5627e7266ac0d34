"""Rebuild a results database from the run folders (``openmix-bench rebuild_db=true``).

Every run folder the runner writes, ``<runs_dir>/<suite>/<dataset>/<model>/<policy>/
seed<N>-<hash12>/``, holds ``bench_record.json`` (its database row) beside the trainer's
``summary.json`` and ``config.yaml``; tuning decisions sit beside the policy folders as
``tuning[-<E>ep].json``. A folder from before ``bench_record.json`` existed is imported from its
``summary.json`` and ``config.yaml`` when the config still hashes to the folder's hash (with
the same ``hash_exclude``); otherwise it is listed as skipped with the reason. Rows already in
the database are kept (a successful row is never overwritten), so rebuilding twice is harmless.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

from .db import COLUMNS, ResultsDB, RunRecord
from .runner import RECORD_FILE, build_record, config_hash, resolved_config
from .suite import DEFAULT_HEADLINE, RunSpec, Suite, SuiteConfigError

_RUN_FOLDER = re.compile(r"seed(-?\d+)-([0-9a-f]{12})")


@dataclass
class RebuildReport:
    imported: int = 0            # rows written from bench_record.json
    imported_legacy: int = 0     # rows written from summary.json + config.yaml
    kept: int = 0                # rows the database already had
    tuning: int = 0              # tuning decisions restored
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def summary(self) -> str:
        lines = [f"rebuilt: {self.imported} runs from {RECORD_FILE}, {self.imported_legacy} from "
                 f"summary.json + config.yaml, {self.kept} already in the database, "
                 f"{self.tuning} tuning decisions, {len(self.skipped)} folders skipped"]
        lines += [f"  skipped {path}: {reason}" for path, reason in self.skipped]
        return "\n".join(lines)


def rebuild_db(
    db_path: str | os.PathLike,
    runs_dir: str | os.PathLike,
    *,
    hash_exclude: Iterable[str] = (),
    headlines: Mapping[str, Mapping[str, str]] | None = None,
    log: Callable[[str], None] = print,
) -> RebuildReport:
    """Write every run found under ``runs_dir`` into the database at ``db_path`` (created if
    missing). ``headlines`` (suite -> task -> metric) applies to folders without a record."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise SuiteConfigError(f"runs_dir must be the folder that holds the run folders, got "
                               f"{str(runs_dir)!r} (not a folder)")
    db = ResultsDB(db_path)
    report = RebuildReport()
    for path in sorted(runs_dir.rglob(RECORD_FILE)):
        _import_record(db, path, report)
    for path in sorted(runs_dir.rglob("summary.json")):
        if not (path.parent / RECORD_FILE).is_file():
            _import_legacy(db, runs_dir, path, tuple(hash_exclude), headlines or {}, report)
    for path in sorted(runs_dir.rglob("tuning*.json")):
        try:
            db.record_tuning(json.loads(path.read_text()))
            report.tuning += 1
        except (OSError, ValueError, KeyError, TypeError) as err:
            report.skipped.append((str(path), f"unreadable tuning decision: {err}"))
    log(f"rebuilt {db_path} from {runs_dir}")
    return report


def _import_record(db: ResultsDB, path: Path, report: RebuildReport) -> None:
    try:
        data = json.loads(path.read_text())
        record = RunRecord(**{k: data[k] for k in COLUMNS if k in data})
    except (OSError, ValueError, TypeError) as err:
        report.skipped.append((str(path.parent), f"unreadable {RECORD_FILE}: {err}"))
        return
    if db.record(record):
        report.imported += 1
    else:
        report.kept += 1


def _import_legacy(db: ResultsDB, runs_dir: Path, summary_path: Path, hash_exclude: tuple,
                   headlines: Mapping, report: RebuildReport) -> None:
    folder = summary_path.parent
    parts = folder.relative_to(runs_dir).parts
    match = _RUN_FOLDER.fullmatch(parts[-1]) if len(parts) == 5 else None
    if match is None:
        report.skipped.append((str(folder), "not a run folder <suite>/<dataset>/<model>/"
                                            "<policy>/seed<N>-<hash12>"))
        return
    try:
        from omegaconf import OmegaConf

        summary = json.loads(summary_path.read_text())
        resolved = resolved_config(OmegaConf.load(folder / "config.yaml"), hash_exclude)
    except Exception as err:  # noqa: BLE001 - any unreadable file means: skip this folder
        report.skipped.append((str(folder), f"unreadable summary.json or config.yaml: {err}"))
        return
    digest = config_hash(resolved)
    if not digest.startswith(match.group(2)):
        report.skipped.append((str(folder), "config.yaml does not hash to the folder's hash "
                                            "(another hash_exclude or openmix version)"))
        return
    suite_name, dataset, model, policy = parts[:4]
    task = summary.get("task", "classification")
    spec = RunSpec(suite_name, dataset, model, policy, int(match.group(1)), task, ())
    headline = {**DEFAULT_HEADLINE, **(headlines.get(suite_name) or {})}
    suite = Suite(name=suite_name, runs=(), baseline=None, headline=headline)
    record = build_record(spec, suite, digest, resolved, folder, summary, None, None, None)
    record.finished_at = None  # unknown: only the rebuild time would be available
    if db.record(record):
        report.imported_legacy += 1
    else:
        report.kept += 1
