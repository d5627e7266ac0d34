"""Atomic checkpoints that never execute code on load.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so
``torch.load(weights_only=True)`` reads it without any extra safe globals. Random states of
numpy and Python are converted to tensors / int lists for the same reason.

Writing: the new checkpoint is written completely (fsynced) as ``.<name>.<pid>.new``, the current
file (if any) is renamed to ``<stem>.prev.pt``, then the new one is renamed into place. At every
instant at least one complete checkpoint exists on disk, and ``find_resume_checkpoint`` finds the
newest intact one whatever step a crash interrupted.

Reading: the zip archive's CRC-32 of every member is verified before ``torch.load`` (which does
not check them), so a file with flipped bits is refused instead of loading wrong weights.
"""
from __future__ import annotations

import os
import random
import zipfile
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..files import fsync_dir, write_atomic

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "find_resume_checkpoint", "config_changes",
           "capture_rng_state", "restore_rng_state"]


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, tampered with or incompatible."""


def previous_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.stem + ".prev" + path.suffix)


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike, keep_previous: bool = True) -> Path:
    """Write ``state`` to ``path`` atomically (tmp file, fsync, rename)."""
    path = Path(path)
    if not keep_previous or not path.exists():
        return write_atomic(path, lambda f: torch.save(state, f))
    # the new file is complete on disk before the current one becomes .prev
    tmp = write_atomic(path.with_name(f".{path.name}.{os.getpid()}.new"), lambda f: torch.save(state, f))
    os.replace(path, previous_path(path))
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return path


def _verify_archive(path: Path) -> None:
    """Raise ValueError when a member of the zip archive fails its CRC-32 (or the zip is unreadable)."""
    with zipfile.ZipFile(path) as archive:
        bad = archive.testzip()
    if bad is not None:
        raise ValueError(f"the CRC-32 of its member {bad!r} does not match its content (flipped bits)")


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Verify, then load a checkpoint with ``weights_only=True``; any failure -> CheckpointError
    saying what to do."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        _verify_archive(path)
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, flipped bits, foreign pickle globals, bad magic ...
        prev = previous_path(path)
        hint = (f"the previous checkpoint {prev} is intact on disk; resume from it with "
                f"trainer.resume_from={prev}" if prev.is_file() and prev != path else
                "delete it and start again, or pass trainer.resume_from=<another checkpoint>")
        raise CheckpointError(
            f"checkpoint {path} cannot be loaded safely (truncated, corrupted, tampered with, or not an openmix "
            f"checkpoint): {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}. "
            f"Nothing was executed from it and no file was changed; {hint}."
        ) from exc
    if not isinstance(state, dict) or state.get("format") != "openmix-checkpoint":
        raise CheckpointError(f"{path} is not an openmix checkpoint (no 'format: openmix-checkpoint' entry)")
    return state


def find_resume_checkpoint(folder: str | os.PathLike, name: str = "last.pt") -> Optional[Path]:
    """The checkpoint to resume from in ``folder``: ``name`` if it exists (a damaged one is then
    refused by ``load_checkpoint``, pointing to the previous one); else, after a crash between
    the two renames of ``save_checkpoint``, the newest complete ``.new`` file, else ``.prev``."""
    folder = Path(folder)
    current = folder / name
    if current.is_file():
        return current
    pending = sorted(folder.glob(f".{name}.*.new"), key=lambda p: p.stat().st_mtime, reverse=True)
    for candidate in [*pending, previous_path(current)]:
        if candidate.is_file():
            try:
                _verify_archive(candidate)
            except Exception:  # noqa: BLE001 - an unfinished write: try the next one
                continue
            return candidate
    return None


# keys that change where and how a run is logged or scheduled on the machine, not what it computes
RESUME_IGNORED_KEYS = ("trainer.out_dir", "trainer.resume", "trainer.resume_from", "trainer.allow_config_change",
                       "trainer.progress", "trainer.summary", "trainer.tensorboard", "trainer.save_checkpoints",
                       "trainer.num_workers", "trainer.eval_batch_size", "trainer.threads", "trainer.device")


def config_changes(saved: dict, current: dict, ignored: Sequence[str] = RESUME_IGNORED_KEYS) -> dict[str, tuple]:
    """{dotted key: (saved value, current value)} for every leaf that differs, except ``ignored``."""
    def leaves(tree: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(tree, dict) and tree:
            out: dict[str, Any] = {}
            for k, v in tree.items():
                out.update(leaves(v, f"{prefix}{k}."))
            return out
        return {prefix[:-1]: tree}
    a, b = leaves(saved), leaves(current)
    keys = sorted(set(a) | set(b))
    return {k: (a.get(k, "<absent>"), b.get(k, "<absent>")) for k in keys
            if a.get(k, "<absent>") != b.get(k, "<absent>") and not any(k == i or k.startswith(i + ".") for i in ignored)}


def capture_rng_state() -> dict[str, Any]:
    """Global torch (CPU and CUDA), numpy and Python random states, as weights_only-safe objects."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": int(py_version), "internal": [int(v) for v in py_internal],
                   "gauss_next": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
