"""Atomic file writes: every file openmix writes (checkpoints, summaries, results, leaderboards).

The data goes to a temporary file in the target's folder with a name unique to this process and
call, is flushed and fsynced, then renamed over the target with ``os.replace``: a reader (or a
killed writer) sees the old file or the new one, never a part of either, and two writers of the
same path never share a temporary file.
"""
from __future__ import annotations

import itertools
import json
import math
import os
from pathlib import Path
from typing import Any, BinaryIO, Callable

__all__ = ["write_atomic", "write_bytes_atomic", "write_text_atomic", "write_json_atomic", "json_safe", "fsync_dir"]

_calls = itertools.count()


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename inside ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(f)`` on a temporary binary file, then rename it over ``path``.

    If ``write`` raises, the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{next(_calls)}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    return write_atomic(path, lambda f: f.write(data))


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def json_safe(obj: Any) -> Any:
    """Non-finite floats -> None (strict JSON), recursively through dicts, lists and tuples."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    return write_text_atomic(path, json.dumps(json_safe(obj), indent=indent, default=str) + "\n")
