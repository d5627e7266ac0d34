"""ManifoldMix: stage choice, mixing of hidden states, plan invariants, errors."""
import pytest
import torch
from torch import nn

import openmix
from openmix.policies.manifoldmix import FeatureMixPlan, ManifoldMix


def test_stage_choice_respects_layers_and_model_depth():
    x, y = torch.randn(5, 3, 8, 8), torch.arange(5)
    policy = ManifoldMix(seed=0)
    seen = {policy.plan(x, y, num_stages=4, generator=torch.Generator().manual_seed(i)).stage for i in range(40)}
    assert seen == {0, 1, 2}
    seen = {policy.plan(x, y, num_stages=1, generator=torch.Generator().manual_seed(i)).stage for i in range(20)}
    assert seen == {0, 1}
    only = ManifoldMix(layers=[3], seed=0)
    assert only.plan(x, y, num_stages=4).stage == 3
    with pytest.raises(ValueError, match="no stage"):
        only.plan(x, y, num_stages=2)


@pytest.mark.parametrize("mode", ["batch", "elem", "pair"])
def test_mix_features_is_row_wise_mixup(mode):
    policy = openmix.build_policy("manifoldmix", alpha=2.0, mode=mode, seed=1)
    x, y = torch.randn(9, 3, 8, 8), torch.randint(0, 4, (9,))     # odd batch
    for step in range(5):
        plan = policy.plan(x, y, num_stages=3, generator=torch.Generator().manual_seed(step))
        h = torch.randn(9, 6, 4, 4, dtype=torch.float64)
        out = policy.mix_features(h, plan)
        lam = plan.lam.double().view(-1, 1, 1, 1)
        assert out.dtype == h.dtype and out.shape == h.shape
        assert torch.allclose(out, lam * h + (1 - lam) * h[plan.index])
        if mode == "batch":
            assert bool((plan.lam == plan.lam[0]).all())
        if mode == "pair":
            assert torch.equal(plan.index[plan.index], torch.arange(9))
        mb = plan.batch(x, y)
        assert mb.lam.shape == (9,) and mb.mask is None and mb.index.shape == (9,)


def test_works_on_1d_and_token_features_and_keeps_gradients():
    policy = ManifoldMix(seed=0)
    x, y = torch.randn(4, 1, 40), torch.randn(4)                 # regression on 1-D signals
    plan = policy.plan(x, y, num_stages=3)
    h = torch.randn(4, 8, 10, requires_grad=True)
    policy.mix_features(h, plan).sum().backward()
    assert h.grad is not None
    assert plan.batch(x, y).mix_targets().shape == (4,)


def test_determinism_and_stop_epoch():
    x, y = torch.randn(6, 3, 4, 4), torch.arange(6)
    a = ManifoldMix(seed=7).plan(x, y, num_stages=3)
    b = ManifoldMix(seed=7).plan(x, y, num_stages=3)
    assert a.stage == b.stage and torch.equal(a.lam, b.lam) and torch.equal(a.index, b.index)
    policy = ManifoldMix(stop_epoch=2, seed=0)
    policy.set_epoch(2)
    plan = policy.plan(x, y, num_stages=3)
    assert plan.stage == 0 and bool((plan.lam == 1).all()) and torch.equal(plan.mix_input(x), x)


def test_training_step_through_small_model():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stages = nn.ModuleList([nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()),
                                         nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())])
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))

        def forward(self, x, plan=None, policy=None):
            if plan is not None and plan.stage == 0:
                x = plan.mix_input(x)
            for k, stage in enumerate(self.stages, start=1):
                x = stage(x)
                if plan is not None and plan.stage == k:
                    x = policy.mix_features(x, plan)
            return self.head(x)

    net, policy = Net(), ManifoldMix(seed=0)
    x, y = torch.randn(6, 3, 8, 8), torch.randint(0, 3, (6,))
    for i in range(3):
        plan = policy.plan(x, y, num_stages=2, generator=torch.Generator().manual_seed(i))
        loss = openmix.build_loss("soft_ce")(net(x, plan, policy), plan.batch(x, y))
        loss.backward()
        assert torch.isfinite(loss)


def test_errors():
    with pytest.raises(ValueError, match="layers"):
        ManifoldMix(layers=[])
    with pytest.raises(ValueError, match="layers"):
        ManifoldMix(layers=[-1])
    with pytest.raises(TypeError, match="needs='features'"):
        ManifoldMix()(torch.randn(2, 3, 4, 4), torch.arange(2))
    with pytest.raises(TypeError, match="generator"):
        ManifoldMix().plan(torch.randn(2, 3), torch.arange(2), num_stages=1, generator=3)
    assert isinstance(ManifoldMix().plan(torch.randn(2, 3), torch.arange(2), 1), FeatureMixPlan)


def test_short_training_run(tmp_path):
    """End to end through the trainer (openmix.train.app.train) on an embedded dataset."""
    train_app = pytest.importorskip("openmix.train")
    fast = ["trainer.epochs=2", "trainer.batch_size=32", "trainer.progress=false", "trainer.summary=false",
            "trainer.tensorboard=false", "trainer.last_k=2", "model.width=8", "trainer.threads=1"]
    cfg = train_app.compose_config([*fast, f"trainer.out_dir={tmp_path / 'run'}", "data=synthetic", "mix=manifoldmix"])
    s = train_app.train(cfg)
    assert s["where"] == "engine" and s["final"]["top1"] > 50
