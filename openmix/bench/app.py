"""``openmix-bench``: run a suite (Hydra app; suites are ``configs/bench/suite/*.yaml``).

    openmix-bench                                   # the default suite, cpu-small
    openmix-bench suite=cifar100-r18 db=/data/results.db
    openmix-bench -m suite=cpu-small shards=2 hydra/launcher=local     # joblib, 2 processes
    openmix-bench -m suite=cifar100-r18 shards=32 hydra/launcher=slurm # submitit
    openmix-bench rebuild_db=true db=results.db runs_dir=outputs/bench  # DB from the run folders

A multirun sweeps ``shard`` over ``range(shards)`` by itself; each job runs its stride of the
suite and skips what the database already has, so the same command resumes an interrupted suite.
Several unsharded runners on one database also share the work (each run is leased while it
trains). Bad settings end with one line naming the key (exit status 2), not a traceback.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, ListConfig

from .db import ResultsDBError
from .runner import RunnerOptions, SuiteReport, default_config_dir, run_suite
from .suite import SuiteConfigError, check_yaml_files, load_suite, shard_runs

# hydra/launcher choices -> (plugin module, PyPI package); both come with openmix[bench]
LAUNCHER_PLUGINS = {
    "local": ("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher"),
    "joblib": ("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher"),
    "slurm": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
    "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
}


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


def _patterns(only) -> list[str] | None:
    """``only`` as a list of non-empty label patterns (None: everything)."""
    if only is None:
        return None
    if isinstance(only, str):
        only = [only]
    if isinstance(only, ListConfig):
        only = list(only)
    if not isinstance(only, (list, tuple)) or not only or not all(
        isinstance(p, (str, int)) and not isinstance(p, bool) and str(p).strip("/") for p in only
    ):
        raise SuiteConfigError(f"only must be a label pattern or a non-empty list of them, e.g. "
                               f"'only=[digits/mixup,seed0]', got {only!r}")
    return [str(p) for p in only]


def select_runs(runs, only) -> list:
    """Keep the runs whose label (dataset/model/epochs/policy/seed) contains every ``/``-separated
    part of one of the patterns in ``only`` (None: keep all). E.g. ``only=[digits/mixup]``."""
    patterns = _patterns(only)
    if patterns is None:
        return list(runs)

    def keep(label: str) -> bool:
        parts = label.split("/")
        return any(all(piece in parts for piece in p.strip("/").split("/")) for p in patterns)

    kept = [r for r in runs if keep(r.label)]
    if not kept:
        raise SuiteConfigError(f"only must match some of the suite's runs (labels look like "
                               f"{runs[0].label!r}), got {patterns}")
    return kept


def _int_setting(cfg: DictConfig, key: str) -> int:
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise SuiteConfigError(f"{key} must be an int, got {value!r}")
    return value


def _names(value, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, (list, tuple, ListConfig)):
        raise SuiteConfigError(f"{key} must be a list of module names, got {value!r}")
    return tuple(str(v) for v in value)


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
        preload=_names(cfg.get("preload"), "preload"),
        allow_modules=_names(cfg.get("allow_modules"), "allow_modules"),
        lease_timeout_s=cfg.get("lease_timeout_s", 300.0),
        heartbeat_s=cfg.get("heartbeat_s", 30.0),
        poll_s=cfg.get("poll_s", 5.0),
    )


def run(cfg: DictConfig) -> SuiteReport | None:
    """Run this job's shard of ``cfg.suite`` and, for a single job, render the leaderboard
    (or, with ``rebuild_db=true``, rebuild the database from the run folders)."""
    if cfg.get("rebuild_db"):
        return _rebuild(cfg)
    suite = load_suite(cfg.suite)
    shard, shards = _int_setting(cfg, "shard"), _int_setting(cfg, "shards")
    runs = shard_runs(select_runs(suite.runs, cfg.get("only")), shard, shards)
    options = options_from_config(cfg)
    options.validate()
    check_yaml_files(options.config_dir or default_config_dir())
    tuned = f", tuned on {len(suite.trials)} trials" if suite.trials else ""
    print(f"suite {suite.name}: {len(suite.runs)} runs{tuned}, shard {shard}/{shards}: "
          f"{len(runs)} runs; database {options.db_path}", flush=True)
    report = run_suite(suite, runs, options, log=lambda line: print(line, flush=True))
    if not options.dry_run:
        taken = f", {len(report.taken)} left to other runners" if report.taken else ""
        print(f"suite {suite.name} shard {shard}: {len(report.ran)} ran, "
              f"{len(report.failed)} failed, {len(report.skipped)} skipped{taken}", flush=True)
    if cfg.leaderboard_dir and shards == 1 and not options.dry_run:
        from .leaderboard import default_command, render_leaderboard

        written = render_leaderboard(
            options.db_path, suite.name, _abs(cfg.leaderboard_dir),
            baseline=suite.baseline, headline=dict(suite.headline),
            command=default_command(cfg.db, suite.name, cfg.leaderboard_dir), claims=suite.claims,
        )
        for path in written:
            print(f"wrote {path}")
    return report


def _rebuild(cfg: DictConfig) -> None:
    from .rebuild import rebuild_db

    suite = cfg.get("suite") or {}
    report = rebuild_db(
        _abs(cfg.db), _abs(cfg.runs_dir), hash_exclude=tuple(cfg.hash_exclude),
        headlines={str(suite.get("name")): dict(suite.get("headline") or {})},
        log=lambda line: print(line, flush=True),
    )
    print(report.summary(), flush=True)


def check_launcher(argv: list[str]) -> None:
    """Refuse, in one line naming the ``[bench]`` extra, a launcher whose plugin is missing."""
    for arg in argv:
        key, _, value = arg.partition("=")
        if key.lstrip("+~") != "hydra/launcher" or value not in LAUNCHER_PLUGINS:
            continue
        module, package = LAUNCHER_PLUGINS[value]
        try:
            importlib.import_module(module)
        except ImportError:
            sys.exit(f"openmix-bench: error: hydra/launcher={value} needs the {package} package, "
                     "which comes with the bench extra: pip install 'openmix[bench]'")


def main() -> None:
    config_dir = bench_config_dir()
    if not (config_dir / "bench.yaml").is_file():
        sys.exit(
            f"openmix-bench: no bench config at {config_dir / 'bench.yaml'}; set "
            "OPENMIX_CONFIG_DIR to the openmix configs/ directory"
        )
    check_launcher(sys.argv[1:])
    try:
        check_yaml_files(config_dir)
    except SuiteConfigError as err:
        sys.exit(f"openmix-bench: error: {err}")
    app = hydra.main(config_path=str(config_dir), config_name="bench", version_base=None)(_main)
    app()


def _main(cfg: DictConfig) -> None:
    try:
        run(cfg)  # failed runs are recorded in the database; the suite itself succeeds
    except (SuiteConfigError, ResultsDBError) as err:
        print(f"openmix-bench: error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
