"""openmix-train: the Hydra app (``main``) and the programmatic entry point (``train``).

    openmix-train mix=cutmix data=digits trainer.epochs=10 seed=1
    python -m openmix.train -m mix=mixup,cutmix,fmix
    torchrun --nproc_per_node=2 -m openmix.train data=digits

``train(cfg)`` is three steps and a file: ``validate`` (every key checked, typed settings),
``build`` (the parts of the run), ``fit`` (the epoch loop with its callbacks), then the summary,
written to ``<out_dir>/summary.json`` and returned. Only rank 0 writes files.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Iterator, Sequence

import torch

from ..paths import config_dir
from .settings import ConfigError, Settings, validate

__all__ = ["train", "main", "compose_config", "CONFIG_DIR", "ConfigError"]

# OPENMIX_CONFIG_DIR, else the repository's configs/, else the copy inside the installed package
CONFIG_DIR = config_dir()


def compose_config(overrides: Sequence[str] = (), config_dir: str | os.PathLike | None = None):
    """The trainer's config composed with Hydra's compose API (no run directory, no logging)."""
    from hydra import compose, initialize_config_dir
    with initialize_config_dir(config_dir=str(config_dir or CONFIG_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def train(cfg) -> dict:
    """Run one training run; returns the summary dict (also written to <out_dir>/summary.json)."""
    from ..files import write_json_atomic
    from .build import build
    from .loop import fit
    from .outputs import format_summary
    from .summary import summarize
    t_start = time.perf_counter()
    settings = validate(cfg)
    with environment(settings) as env:
        run = build(settings, env)
        with _report_interrupt(run):
            fit(run)
        summary = summarize(run, t_start)
        if env.dist.is_main:
            write_json_atomic(env.out_dir / "summary.json", summary)
            if settings.trainer.summary:
                print(format_summary(summary, str(env.out_dir)), flush=True)
        return summary


@contextlib.contextmanager
def environment(settings: Settings) -> Iterator:
    """Join the process group, pick the device and output folder, apply determinism; undo on exit
    (``train`` may run inside a larger program)."""
    from .build import Environment
    from .distributed import all_gather_objects, init_distributed
    t = settings.trainer
    deterministic_before, threads_before = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    dist = init_distributed(_device(t.device, int(os.environ.get("LOCAL_RANK", "0"))).type)
    try:
        device = _device(t.device, dist.local_rank)
        out_dir = _out_dir(t.out_dir)
        if dist.enabled:  # Hydra's timestamped run dir may differ by a second between ranks
            out_dir = Path(all_gather_objects(str(out_dir), dist)[0])
        if t.deterministic:
            if device.type == "cuda":
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
            torch.backends.cudnn.benchmark = False
        yield Environment(dist=dist, device=device, out_dir=out_dir)
    finally:
        torch.use_deterministic_algorithms(deterministic_before)
        torch.set_num_threads(threads_before)
        if dist.initialized_here:
            import torch.distributed as torch_dist
            if torch_dist.is_initialized():
                torch_dist.destroy_process_group()


def _device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    return device


def _out_dir(configured: str | None) -> Path:
    if configured:
        return Path(os.path.expanduser(configured))
    try:
        from hydra.core.hydra_config import HydraConfig
        if HydraConfig.initialized():
            return Path(HydraConfig.get().runtime.output_dir)
    except ImportError:  # hydra not installed: only explicit folders
        pass
    raise ConfigError("trainer.out_dir is not set and no Hydra run directory exists; "
                      "set trainer.out_dir=<folder> when calling openmix.train.app.train directly")


@contextlib.contextmanager
def _report_interrupt(run) -> Iterator[None]:
    """Ctrl-C: say where the last checkpoint is and how to continue, then stop."""
    try:
        yield
    except KeyboardInterrupt:
        if run.dist.is_main:
            last = run.out_dir / "checkpoints" / "last.pt"
            where = (f"the last checkpoint is {last} (epoch {len(run.history)}); continue with trainer.resume=true "
                     f"trainer.out_dir={run.out_dir}" if last.is_file() else "no checkpoint was written yet")
            print(f"\nopenmix-train: interrupted during epoch {len(run.history) + 1}; {where}", file=sys.stderr)
        raise


# -------------------------------------------------------------------------------------- CLI
def _hydra_entry(cfg) -> None:
    from .checkpoint import CheckpointError
    try:
        train(cfg)
    except (ValueError, TypeError, FileNotFoundError, CheckpointError) as exc:
        if os.environ.get("OPENMIX_FULL_ERROR"):
            raise
        print(f"openmix-train: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def main() -> None:
    """Console script ``openmix-train`` / ``python -m openmix.train``."""
    import hydra
    from .settings import check_config_files
    if not (CONFIG_DIR / "train.yaml").is_file():
        raise SystemExit(f"openmix-train: error: no train.yaml in {CONFIG_DIR}; set OPENMIX_CONFIG_DIR to a folder "
                         f"laid out like the repository's configs/ (or reinstall openmix: its wheel ships them)")
    try:
        check_config_files(CONFIG_DIR)
    except ConfigError as exc:
        raise SystemExit(f"openmix-train: error: {exc}") from None
    if int(os.environ.get("RANK", "0")) > 0:
        # DDP ranks > 0 write nothing: no .hydra/ folder, no log file
        sys.argv += ["hydra.output_subdir=null", "hydra/job_logging=disabled", "hydra/hydra_logging=disabled"]
    hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")(_hydra_entry)()


if __name__ == "__main__":
    main()
