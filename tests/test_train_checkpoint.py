"""Checkpoints: atomic writes, weights_only loads, clear errors on truncated or tampered files."""
import os
import pickle
import random
import zipfile

import numpy as np
import pytest
import torch

from openmix.train.checkpoint import (CheckpointError, capture_rng_state, load_checkpoint, previous_path,
                                      restore_rng_state, save_checkpoint)


def _state(v):
    return {"format": "openmix-checkpoint", "epoch": v, "model": {"w": torch.full((3,), float(v))},
            "rng": capture_rng_state(), "history": [{"epoch": v, "top1": 1.5}]}


def test_roundtrip_and_previous_kept(tmp_path):
    p = tmp_path / "ck" / "last.pt"
    save_checkpoint(_state(1), p)
    save_checkpoint(_state(2), p)
    assert load_checkpoint(p)["epoch"] == 2
    assert load_checkpoint(previous_path(p))["epoch"] == 1
    assert not list(p.parent.glob("*.tmp"))


def test_rng_state_roundtrip():
    torch.manual_seed(1); np.random.seed(2); random.seed(3)
    state = capture_rng_state()
    a = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(9); np.random.seed(9); random.seed(9)
    restore_rng_state(state)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_truncated_checkpoint_clear_error_previous_intact(tmp_path):
    p = tmp_path / "last.pt"
    save_checkpoint(_state(1), p)
    save_checkpoint(_state(2), p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot be loaded safely.*last.prev.pt"):
        load_checkpoint(p)
    assert load_checkpoint(previous_path(p))["epoch"] == 1


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch " + os.environ.get("OPENMIX_EVIL_MARK", "/tmp/openmix_evil"),))


def test_tampered_checkpoint_executes_nothing(tmp_path, monkeypatch):
    mark = tmp_path / "pwned"
    monkeypatch.setenv("OPENMIX_EVIL_MARK", str(mark))
    p = tmp_path / "last.pt"
    save_checkpoint(_state(1), p)
    # replace the pickle inside the zip archive by one that would run a shell command
    with zipfile.ZipFile(p) as z:
        names = z.namelist()
        members = {n: z.read(n) for n in names}
    pkl = next(n for n in names if n.endswith("data.pkl"))
    members[pkl] = pickle.dumps({"format": "openmix-checkpoint", "x": _Evil()}, protocol=2)
    with zipfile.ZipFile(p, "w") as z:
        for n in names:
            z.writestr(n, members[n])
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        load_checkpoint(p)
    assert not mark.exists()


def test_not_an_openmix_checkpoint(tmp_path):
    p = tmp_path / "x.pt"
    torch.save({"a": torch.zeros(1)}, p)
    with pytest.raises(CheckpointError, match="not an openmix checkpoint"):
        load_checkpoint(p)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
