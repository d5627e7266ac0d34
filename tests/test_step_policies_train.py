"""The issue-17 step policies inside openmix-train: they learn, and a resumed run repeats exactly."""
import shutil

import pytest

from openmix.train import compose_config, train

COMMON = ["trainer.batch_size=32", "trainer.progress=false", "trainer.summary=false", "trainer.tensorboard=false",
          "trainer.threads=1", "trainer.deterministic=true", "seed=1", "eval.calibration=false"]
CNN = ["data=synthetic", "model.width=8"]
VIT = ["data=synthetic", "model.name=vit_tiny_patch16_224", "+model.kwargs.img_size=8", "+model.kwargs.patch_size=2",
       "+model.kwargs.depth=1", "+model.kwargs.embed_dim=32", "+model.kwargs.num_heads=2", "optim=adamw",
       "optim.lr=3e-3"]
CASES = {"regmixup": CNN, "rankmixup": CNN, "sumix": CNN + ["mix.scale=1.0"], "attentivemix": CNN,
         "transmix": VIT, "smmix": VIT}


def run(out, name, epochs, *extra):
    return train(compose_config([*CASES[name], f"mix={name}", f"trainer.epochs={epochs}", *COMMON,
                                 f"trainer.out_dir={out}", *extra]))


@pytest.mark.parametrize("name", sorted(CASES))
def test_step_policy_learns_in_the_trainer(tmp_path, name):
    summary = run(tmp_path / name, name, 2)
    assert summary["where"] == "engine"
    assert summary["final"]["top1"] > 45, summary["final"]      # 4 classes: chance is 25%


@pytest.mark.parametrize("name", ["sumix"])           # the policy with state of its own (head, optimiser)
def test_step_policy_resumes_exactly(tmp_path, name):
    full = run(tmp_path / "full", name, 2)
    part = tmp_path / "part"
    shutil.copytree(tmp_path / "full", part)
    (part / "checkpoints" / "last.pt").unlink()                 # back to the epoch-1 checkpoint
    resumed = run(part, name, 2, "trainer.resume=true")
    assert resumed["resumed_from_epoch"] == 1
    drop = {"train_seconds", "eval_seconds", "samples_per_second"}
    assert [{k: v for k, v in h.items() if k not in drop} for h in resumed["history"]] == \
           [{k: v for k, v in h.items() if k not in drop} for h in full["history"]]
