"""``openmix-bench``: run a suite (Hydra app; suites are ``configs/bench/suite/*.yaml``).

    openmix-bench                                   # the default suite, cpu-small
    openmix-bench suite=cifar100-r18 db=/data/results.db
    openmix-bench -m suite=cpu-small shards=2 hydra/launcher=local     # joblib, 2 processes
    openmix-bench -m suite=cifar100-r18 shards=32 hydra/launcher=slurm # submitit

A multirun sweeps ``shard`` over ``range(shards)`` by itself; each job runs its stride of the
suite and skips what the database already has, so the same command resumes an interrupted suite.
"""
from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from .runner import RunnerOptions, SuiteReport, default_config_dir, run_suite
from .suite import load_suite, shard_runs


def bench_config_dir() -> Path:
    return default_config_dir() / "bench"


def _abs(path: str | None) -> str | None:
    if path is None:
        return None
    from hydra.utils import to_absolute_path

    try:
        return to_absolute_path(str(path))
    except ValueError:  # outside a Hydra app
        return str(Path(path).resolve())


def select_runs(runs, only) -> list:
    """Keep the runs whose label (dataset/model/epochs/policy/seed) contains every ``/``-separated
    part of one of the patterns in ``only`` (None: keep all). E.g. ``only=[digits/mixup]``."""
    if only is None:
        return list(runs)
    if isinstance(only, str):
        only = [only]
    patterns = [str(p) for p in only]
    if not patterns:
        raise ValueError("only: got an empty list, expected label patterns such as 'digits/mixup'")

    def keep(label: str) -> bool:
        parts = label.split("/")
        return any(all(piece in parts for piece in p.split("/")) for p in patterns)

    kept = [r for r in runs if keep(r.label)]
    if not kept:
        raise ValueError(f"only: got {patterns}, which matches none of the suite's runs "
                         f"(labels look like {runs[0].label!r})")
    return kept


def options_from_config(cfg: DictConfig) -> RunnerOptions:
    return RunnerOptions(
        db_path=_abs(cfg.db),
        runs_dir=_abs(cfg.runs_dir),
        train_fn=cfg.train_fn,
        config_dir=_abs(cfg.train_config_dir),
        config_name=cfg.train_config_name,
        hash_exclude=tuple(cfg.hash_exclude),
        out_dir_key=cfg.out_dir_key,
        isolation=cfg.isolation,
        timeout_s=cfg.timeout_s,
        threads_per_run=cfg.threads_per_run,
        force=bool(cfg.force),
        dry_run=bool(cfg.dry_run),
        preload=tuple(cfg.get("preload") or ()),
    )


def run(cfg: DictConfig) -> SuiteReport:
    """Run this job's shard of ``cfg.suite`` and, for a single job, render the leaderboard."""
    suite = load_suite(cfg.suite)
    runs = select_runs(suite.runs, cfg.get("only"))
    runs = shard_runs(runs, int(cfg.shard), int(cfg.shards))
    options = options_from_config(cfg)
    print(
        f"suite {suite.name}: {len(suite.runs)} runs, shard {cfg.shard}/{cfg.shards}: "
        f"{len(runs)} runs; database {options.db_path}",
        flush=True,
    )
    report = run_suite(suite, runs, options, log=lambda line: print(line, flush=True))
    if not options.dry_run:
        print(
            f"suite {suite.name} shard {cfg.shard}: {len(report.ran)} ran, "
            f"{len(report.failed)} failed, {len(report.skipped)} skipped",
            flush=True,
        )
    if cfg.leaderboard_dir and int(cfg.shards) == 1 and not options.dry_run:
        from .leaderboard import default_command, render_leaderboard

        written = render_leaderboard(
            options.db_path, suite.name, _abs(cfg.leaderboard_dir),
            baseline=suite.baseline, headline=dict(suite.headline),
            command=default_command(cfg.db, suite.name, cfg.leaderboard_dir),
        )
        for path in written:
            print(f"wrote {path}")
    return report


def main() -> None:
    config_dir = bench_config_dir()
    if not (config_dir / "bench.yaml").is_file():
        sys.exit(
            f"openmix-bench: no bench config at {config_dir / 'bench.yaml'}; set "
            "OPENMIX_CONFIG_DIR to the openmix configs/ directory"
        )
    app = hydra.main(config_path=str(config_dir), config_name="bench", version_base=None)(_main)
    app()


def _main(cfg: DictConfig) -> None:
    run(cfg)  # failed runs are recorded in the database; the suite itself succeeds


if __name__ == "__main__":
    main()
