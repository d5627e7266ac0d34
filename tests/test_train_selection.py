"""The run's epoch is chosen on validation metrics only; the three selection rules."""
import pytest

from openmix.train import compose_config, train
from openmix.train.engine import Engine

FAST = ["data=synthetic", "model.width=8", "trainer.epochs=4", "trainer.batch_size=32", "trainer.progress=false",
        "trainer.summary=false", "trainer.tensorboard=false", "trainer.threads=1", "trainer.last_k=2",
        "eval.calibration=false"]
VAL = [10.0, 40.0, 30.0, 20.0]       # best validation epoch: 2
TEST = [95.0, 15.0, 35.0, 55.0]      # best test epoch: 1 (poison: a selector reading test picks it)


@pytest.fixture
def poisoned(monkeypatch):
    """Engine.evaluate returns the fixed sequences above: the Evaluator asks for validation, then test."""
    calls = []

    def fake_evaluate(self, loader, model=None, **kwargs):
        calls.append(loader)
        epoch, is_test = divmod(len(calls) - 1, 2)
        top1 = (TEST if is_test else VAL)[epoch]
        return {"top1": top1, "top5": 100.0, "nll": 1.0, "ece": 0.1}
    monkeypatch.setattr(Engine, "evaluate", fake_evaluate)
    return calls


def test_best_val_selects_on_validation_never_on_test(tmp_path, poisoned):
    s = train(compose_config([*FAST, f"trainer.out_dir={tmp_path}"]))
    sel = s["selected"]
    assert sel["rule"] == "best_val" and sel["epoch"] == 2
    assert sel["val"]["top1"] == 40.0 and sel["test"]["top1"] == 15.0     # the test value of epoch 2, poisoned or not
    assert s["best"] == {"epoch": 2, "metric": "val_top1", "value": 40.0}
    assert (tmp_path / "checkpoints" / "best.pt").is_file()
    import torch
    assert torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=True)["epoch"] == 2


def test_last_k_and_final_rules(tmp_path, poisoned):
    s = train(compose_config([*FAST, "trainer.select=last_k", f"trainer.out_dir={tmp_path / 'k'}"]))
    assert s["selected"]["epoch"] is None and s["selected"]["k"] == 2
    assert s["selected"]["test"]["top1"] == pytest.approx((35.0 + 55.0) / 2)   # median of the last 2 test epochs
    poisoned.clear()
    s = train(compose_config([*FAST, "trainer.select=final", f"trainer.out_dir={tmp_path / 'f'}"]))
    assert s["selected"]["epoch"] == 4 and s["selected"]["test"]["top1"] == 55.0


def test_ties_on_validation_accuracy_go_to_the_lower_validation_nll(tmp_path, monkeypatch):
    calls = []

    def fake_evaluate(self, loader, model=None, **kwargs):
        calls.append(loader)
        epoch, is_test = divmod(len(calls) - 1, 2)
        return {"top1": 50.0, "top5": 100.0, "nll": [0.9, 0.5, 0.7, 0.5][epoch], "ece": 0.1}
    monkeypatch.setattr(Engine, "evaluate", fake_evaluate)
    s = train(compose_config([*FAST, f"trainer.out_dir={tmp_path}"]))
    assert s["selected"]["epoch"] == 2       # first epoch with the lowest nll among the tied top-1
