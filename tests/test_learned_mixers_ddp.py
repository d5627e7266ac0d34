"""Learned mixers under DDP (2 CPU processes, gloo): one mixer for all ranks (rank 0's initial
state, gradients averaged), so the ranks' mixers and momentum encoders stay identical."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo")
def test_two_ranks_hold_the_same_mixer(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "openmix.train", "data=synthetic", "data.num_test=64", "mix=automix", "model.width=8",
           "trainer.epochs=2", "trainer.batch_size=32", "trainer.device=cpu", "trainer.progress=false",
           "trainer.tensorboard=false", "trainer.threads=1", "eval.calibration=false",
           f"trainer.out_dir={out}", f"hydra.run.dir={out}"]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    ranks = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["per_rank"]
    assert len(ranks) == 2
    a, b = ranks[0]["policy"], ranks[1]["policy"]
    assert a["steps"] == b["steps"] == 2 * 3        # 230 samples: 115 per rank, 3 batches of 32, 2 epochs
    for key in a["mixer"]:
        torch.testing.assert_close(a["mixer"][key], b["mixer"][key], rtol=0, atol=1e-6, msg=key)
    for key, value in a["encoder"]["module"].items():
        if "running" not in key and "num_batches" not in key:   # BN statistics are each rank's own
            torch.testing.assert_close(value, b["encoder"]["module"][key], rtol=0, atol=1e-6, msg=key)
    # the ranks drew different partners and probe rows: they did not simply repeat each other
    assert not torch.equal(a["probe"]["x"], b["probe"]["x"])
