"""AlignMix and the batched Sinkhorn: plan marginals, alignment, plan/feature API invariants."""
import pytest
import torch
from torch import nn

import openmix
from openmix.ops.sinkhorn import sinkhorn_log, sinkhorn_plan, squared_distances
from openmix.policies.alignmix import AlignMix


def features(b=6, c=16, h=4, w=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, h, w, generator=g).relu(), g


# --------------------------------------------------------------------------------- sinkhorn
@pytest.mark.parametrize("r,s", [(16, 16), (49, 49), (9, 12)])
def test_sinkhorn_marginals(r, s, record_property):
    g = torch.Generator().manual_seed(r + s)
    a = torch.randn(5, r, 8, generator=g)
    b = torch.randn(5, s, 8, generator=g)
    cost = squared_distances(a, b)
    cost = cost / cost.mean()            # a well-scaled problem: it converges within the cap
    plan, f, gpot = sinkhorn_log(cost, eps=0.1, max_iter=500, tol=1e-7)
    row_err = float((plan.sum(2) - 1 / r).abs().max() * r)
    col_err = float((plan.sum(1) - 1 / s).abs().max() * s)
    record_property("row_marginal_rel_err", row_err)
    record_property("col_marginal_rel_err", col_err)
    print(f"r={r} s={s}: relative marginal errors rows {row_err:.1e}, cols {col_err:.1e}")
    assert row_err < 1e-4 and col_err < 1e-5
    assert float(plan.min()) >= 0
    # optimality certificate: plan = exp((f + g - C)/eps), so it is the entropic optimum for its marginals
    assert torch.allclose(plan, torch.exp((f.unsqueeze(2) + gpot.unsqueeze(1) - cost) / 0.1))


def test_sinkhorn_authors_settings_columns_exact_rows_reported():
    # raw feature distances (scale ~ hundreds) with eps 0.1 and 100 iterations, as the authors run it:
    # the column marginals are exact after the last update, the rows are still far from converged
    feats, g = features(8, 64)
    a = feats.flatten(2).transpose(1, 2)
    plan = sinkhorn_plan(a, a[torch.randperm(8, generator=g)], eps=0.1, max_iter=100, tol=0.1)
    col_err = float((plan.sum(1) * 16 - 1).abs().max())
    row_err = float((plan.sum(2) * 16 - 1).abs().max())
    print(f"authors' settings: relative marginal errors cols {col_err:.1e}, rows {row_err:.2f}")
    assert col_err < 1e-4
    # with the mean-scaled cost the same budget converges on both sides
    plan = sinkhorn_plan(a, a.roll(1, 0), eps=0.1, max_iter=100, tol=1e-6, cost_scale="mean")
    assert float((plan.sum(2) * 16 - 1).abs().max()) < 1e-4


def test_sinkhorn_identity_alignment_and_freezing():
    feats, _ = features(4, 32)
    a = feats.flatten(2).transpose(1, 2) * 10
    perm = torch.randperm(16)
    plan = sinkhorn_plan(a, a[:, perm], eps=0.1)
    # a well-separated permuted copy is matched exactly: R = r P is the permutation
    assert torch.allclose(plan * 16, torch.eye(16)[:, perm].expand(4, 16, 16),
                          atol=1e-4)
    # checking convergence less often (fewer host syncs) only runs converged rows a little longer
    cost = squared_distances(a, a.roll(1, 0))
    for check_every in (1, 7, 100):
        plan, _, _ = sinkhorn_log(cost / cost.mean(), tol=1e-3, check_every=check_every)
        assert float((plan.sum(2) * 16 - 1).abs().max()) < 1e-2
        assert float((plan.sum(1) * 16 - 1).abs().max()) < 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_logsumexp_without_denormals_matches_torch(dtype):
    """The clamped logsumexp the Sinkhorn loop uses equals torch.logsumexp, also when most terms
    are far below the largest (where the unclamped exp underflows into denormals)."""
    from openmix.ops.sinkhorn import _logsumexp
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 16, 16, generator=g, dtype=dtype) * torch.tensor([1.0, 30.0, 300.0, 3000.0, 1e4, 1e5],
                                                                        dtype=dtype).view(6, 1, 1)
    for dim in (1, 2):
        torch.testing.assert_close(_logsumexp(x, dim), torch.logsumexp(x, dim), rtol=1e-6 if dtype == torch.float32
                                   else 1e-12, atol=0)


def test_sinkhorn_errors():
    with pytest.raises(ValueError, match="cost must have shape"):
        sinkhorn_log(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="eps"):
        sinkhorn_log(torch.zeros(1, 3, 3), eps=0)
    with pytest.raises(ValueError, match="cost_scale"):
        sinkhorn_plan(torch.zeros(1, 3, 2), torch.zeros(1, 3, 2), cost_scale="max")


# ---------------------------------------------------------------------------------- policy
def test_plan_and_mix_invariants():
    policy = openmix.build_policy("alignmix", seed=0, mode="elem")
    x = torch.randn(7, 3, 8, 8)                       # odd batch
    y = torch.randint(0, 5, (7,))
    stages_seen = set()
    for step in range(12):
        plan = policy.plan(x, y, num_stages=4, generator=torch.Generator().manual_seed(step))
        stages_seen.add(plan.stage)
        assert plan.stage in (0, 4) and plan.index.shape == (7,) and plan.lam.shape == (7,)
        if plan.stage == 0:
            xm = plan.mix_input(x)
            lam = plan.lam.view(-1, 1, 1, 1)
            assert torch.allclose(xm, lam * x + (1 - lam) * x[plan.index], atol=1e-6)
        else:
            h, _ = features(7, 16, seed=step)
            out = policy.mix_features(h, plan)
            assert out.shape == h.shape and out.dtype == h.dtype
        mb = plan.batch(x, y)
        assert mb.mask is None and torch.allclose(mb.soft_targets(5).sum(1), torch.ones(7))
    assert stages_seen == {0, 4}


def test_alignment_directions():
    h, _ = features(2, 8)
    policy = AlignMix(seed=0, p_align=1.0, mode="elem")
    plan = policy.plan(h, torch.arange(2), num_stages=1, generator=torch.Generator().manual_seed(0))
    plan.index = torch.tensor([1, 0])
    plan.lam = torch.tensor([1.0, 0.0])
    plan.mixed = torch.tensor([True, True])
    for direction in (False, True):
        plan.extra["direction"] = torch.tensor([direction, direction])
        out = policy.mix_features(h * 10, plan)
        if not direction:
            # towards own layout: lam 1 -> the row itself
            assert torch.allclose(out[0], h[0] * 10, atol=1e-4)
        else:
            # towards the partner's layout: lam 0 -> the partner itself
            assert torch.allclose(out[1], h[0] * 10, atol=1e-4)


def test_gradient_flows_and_plan_is_detached():
    h, _ = features(4, 8)
    h.requires_grad_(True)
    policy = AlignMix(seed=1, p_align=1.0)
    plan = policy.plan(h, torch.arange(4), num_stages=2)
    out = policy.mix_features(h, plan)
    out.sum().backward()
    assert h.grad is not None and torch.isfinite(h.grad).all()


def test_determinism_and_unmixed_rows():
    x = torch.randn(5, 3, 8, 8)
    y = torch.arange(5)
    a = AlignMix(seed=3).plan(x, y, num_stages=2)
    b = AlignMix(seed=3).plan(x, y, num_stages=2)
    assert a.stage == b.stage and torch.equal(a.lam, b.lam) and torch.equal(a.index, b.index)
    policy = AlignMix(p=0.0, seed=0)
    plan = policy.plan(x, y, num_stages=2)
    assert plan.stage == 0 and torch.equal(plan.mix_input(x), x) and bool((plan.lam == 1).all())


def test_end_to_end_with_small_model():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stages = nn.ModuleList([nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()),
                                         nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())])
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 3))

    net = Net()
    policy = AlignMix(seed=0, p_align=1.0)
    x, y = torch.randn(6, 3, 8, 8), torch.randint(0, 3, (6,))
    plan = policy.plan(x, y, num_stages=2)
    h = net.stages[1](net.stages[0](x))
    logits = net.head(policy.mix_features(h, plan))
    loss = openmix.build_loss("soft_ce")(logits, plan.batch(x, y))
    loss.backward()
    assert torch.isfinite(loss)


def test_errors():
    with pytest.raises(TypeError, match="needs='features'"):
        AlignMix()(torch.randn(2, 3, 4, 4), torch.arange(2))
    with pytest.raises(ValueError, match="p_align"):
        AlignMix(p_align=2)
    with pytest.raises(ValueError, match="cost_scale"):
        AlignMix(cost_scale="max")
    with pytest.raises(ValueError, match="num_stages"):
        AlignMix().plan(torch.randn(2, 3), torch.arange(2), num_stages=-1)
    policy = AlignMix(p_align=1.0, seed=0)
    plan = policy.plan(torch.randn(2, 3), torch.arange(2), num_stages=1)
    with pytest.raises(ValueError, match="feature maps"):
        policy.mix_features(torch.randn(2, 3), plan)


def test_short_training_run(tmp_path):
    """End to end through the trainer (openmix.train.app.train) on an embedded dataset."""
    train_app = pytest.importorskip("openmix.train")
    fast = ["trainer.epochs=2", "trainer.batch_size=32", "trainer.progress=false", "trainer.summary=false",
            "trainer.tensorboard=false", "trainer.last_k=2", "model.width=8", "trainer.threads=1"]
    cfg = train_app.compose_config([*fast, f"trainer.out_dir={tmp_path / 'run'}", "data=synthetic", "mix=alignmix", "mix.p_align=1.0"])
    s = train_app.train(cfg)
    assert s["where"] == "engine" and s["final"]["top1"] > 50
