"""DDP: 2 processes on CPU with gloo through torchrun; rank 0 alone writes; metrics reduced."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo")
def test_torchrun_two_processes_gloo(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "openmix.train", "data=synthetic", "data.num_test=101", "mix=cutmix", "model.width=8",
           "trainer.epochs=2", "trainer.batch_size=32", "trainer.device=cpu", "trainer.progress=false",
           "trainer.tensorboard=false", "trainer.threads=1", f"trainer.out_dir={out}", f"hydra.run.dir={out}"]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=180,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["world_size"] == 2 and len(s["history"]) == 2
    # 230 training samples after the 10% validation split: each rank trains on its own shard of 115,
    # 2 ranks x 3 full batches x 32
    assert s["info"]["train_samples"] == 230 and all(h["train_samples"] == 192 for h in s["history"])
    # test metrics cover all 101 test samples exactly once (reduced across ranks, no padding)
    for h in s["history"]:
        correct = h["top1"] * 101 / 100
        assert abs(correct - round(correct)) < 1e-6
    # and equal a single-process evaluation of the saved model
    from openmix.train.datasets import build_dataset
    from openmix.train.metrics import ClassificationMeter
    from openmix.train.models import build_model
    bundle = build_dataset("synthetic", num_test=101)
    model = build_model("small_cnn", bundle.input_shape, bundle.num_classes, width=8)
    ck = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    model.load_state_dict(ck["model"])
    model.eval()
    meter = ClassificationMeter(bundle.num_classes)
    with torch.no_grad():
        meter.update(model(bundle.test.x), bundle.test.y)
    single = meter.compute()
    assert single["top1"] == pytest.approx(s["final"]["top1"], abs=1e-9)
    assert single["nll"] == pytest.approx(s["final"]["nll"], rel=1e-4)
    # the checkpoint holds both ranks' random states; only rank 0 wrote files
    assert len(ck["per_rank"]) == 2
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [".hydra", "checkpoints", "config.yaml", "metrics.jsonl", "summary.json", "train.log"])
