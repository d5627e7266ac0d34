"""The command line: default run quality, Hydra multirun, clean errors with exit status 2."""
import json
import subprocess
import sys
from pathlib import Path

from openmix.train import compose_config, train

REPO = Path(__file__).resolve().parents[1]
ENV = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}


def test_default_config_reaches_95_percent_on_digits(tmp_path):
    cfg = compose_config([f"trainer.out_dir={tmp_path}", "trainer.progress=false", "trainer.tensorboard=false"])
    assert (cfg.data.name, cfg.mix.name, cfg.model.name) == ("digits", "mixup", "auto")
    s = train(cfg)
    assert s["model"] == "small_cnn" and s["final"]["top1"] >= 95.0, s["final"]


def test_multirun_sweeps_policies(tmp_path):
    cmd = [sys.executable, "-m", "openmix.train", "-m", "mix=vanilla,fmix", "data=synthetic", "model.width=8",
           "trainer.epochs=1", "trainer.progress=false", "trainer.tensorboard=false", f"hydra.sweep.dir={tmp_path}"]
    res = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    policies = sorted(json.loads(p.read_text())["policy"] for p in tmp_path.glob("*/summary.json"))
    assert policies == ["fmix", "vanilla"]
    assert "openmix-train: synthetic / small_cnn / fmix" in res.stdout   # the end-of-run summary


def test_bad_input_exits_2_with_one_clear_line(tmp_path):
    cmd = [sys.executable, "-m", "openmix.train", "data=cifar10", f"data.root={tmp_path}",
           f"trainer.out_dir={tmp_path / 'out'}"]
    res = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert res.stderr.startswith("openmix-train: error: cifar10 not found: looked in")
    assert "Traceback" not in res.stderr and "data.download=true" in res.stderr


def test_help_describes_openmix(tmp_path):
    res = subprocess.run([sys.executable, "-m", "openmix.train", "--help"], cwd=REPO, env=ENV, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.startswith("openmix-train: train a model with a mixup-family policy")
    mix_line = next(line for line in res.stdout.splitlines() if line.startswith("mix: "))
    assert "alignmix" in mix_line[len("mix: "):].split(", ") and "trainer.resume=true" in res.stdout
