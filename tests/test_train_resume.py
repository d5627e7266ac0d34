"""Kill a run with SIGKILL after some epochs, resume it, and get exactly the uninterrupted run."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from openmix.train import compose_config, train

REPO = Path(__file__).resolve().parents[1]
ARGS = ["data=digits", "data.train_size=640", "mix=cutmix", "model.width=8", "model.drop_rate=0.1",
        "trainer.epochs=8",
        "trainer.batch_size=64", "trainer.deterministic=true", "trainer.progress=false", "trainer.summary=false",
        "trainer.tensorboard=false", "seed=3", "trainer.threads=1"]
DROP = {"train_seconds", "eval_seconds", "samples_per_second"}


def _metrics(history):
    return [{k: v for k, v in h.items() if k not in DROP} for h in history]


def _cli(out_dir, *extra):
    return [sys.executable, "-m", "openmix.train", *ARGS, f"trainer.out_dir={out_dir}", *extra]


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    ref = train(compose_config([*ARGS, f"trainer.out_dir={tmp_path / 'ref'}"]))

    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(_cli(out), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 90
    while time.time() < deadline and proc.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    done = len(metrics.read_text().splitlines())
    assert 2 <= done < 8 and not (out / "summary.json").exists()

    res = subprocess.run(_cli(out, "trainer.resume=true"), cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    resumed = json.loads((out / "summary.json").read_text())
    assert resumed["resumed_from_epoch"] >= 2
    assert _metrics(resumed["history"]) == _metrics(ref["history"])
    assert resumed["final"] == ref["final"]
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in lines] == list(range(1, 9))


def test_corrupt_last_checkpoint_clear_error_and_previous_resumes(tmp_path):
    args = [*ARGS, "trainer.epochs=3", f"trainer.out_dir={tmp_path / 'r'}"]
    ref = train(compose_config(args))
    last = tmp_path / "r" / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])  # truncated
    with pytest.raises(Exception, match="cannot be loaded safely.*last.prev.pt"):
        train(compose_config([*args, "trainer.resume=true"]))
    # the previous good checkpoint (epoch 2) resumes and reproduces epoch 3
    prev = tmp_path / "r" / "checkpoints" / "last.prev.pt"
    again = train(compose_config([*args, f"trainer.resume_from={prev}"]))
    assert again["resumed_from_epoch"] == 2
    assert _metrics(again["history"]) == _metrics(ref["history"])
