"""Probability p, switching between policies, schedules and stop_epoch."""
import pytest
import torch

import openmix
from openmix.schedules import Cosine, Linear, Step


def batch(b=4000):
    g = torch.Generator().manual_seed(0)
    return torch.randn(b, 1, 16, 16, generator=g), torch.randint(0, 3, (b,), generator=g)


@pytest.mark.parametrize("name", ["mixup", "cutmix", "fmix", "resizemix"])
def test_p_mixes_about_that_fraction_of_rows(name):
    x, y = batch()
    mb = openmix.build_policy(name, mode="elem", p=0.3, seed=0)(x, y)
    changed = (mb.x != x).flatten(1).any(1)
    unmixed = ~changed
    assert torch.equal(mb.x[unmixed], x[unmixed])
    assert (mb.lam[unmixed] == 1).all() if name != "cutmix" else True
    frac = changed.double().mean().item()
    # binomial(4000, 0.3) has std 0.007; rows that pick themselves or an empty box also look unmixed
    assert 0.26 < frac < 0.33


def test_p_in_batch_mode_is_one_coin_per_batch():
    x, y = batch(b=8)
    policy = openmix.build_policy("mixup", mode="batch", p=0.5, seed=1)
    outcomes = [bool((policy(x, y).lam < 1).all()) for _ in range(200)]
    assert 70 < sum(outcomes) < 130
    results = [policy(x, y).lam for _ in range(50)]
    assert all(bool((r == 1).all()) or bool((r < 1).all()) for r in results)


def test_choice_switches_with_the_given_probabilities():
    x, y = batch(b=8)
    choice = openmix.build_policy("choice", policies=[{"name": "mixup"}, {"name": "cutmix"}],
                                  probs=[0.8, 0.2], seed=0)
    masks = [choice(x, y).mask is not None for _ in range(500)]
    assert 0.13 < sum(masks) / 500 < 0.27
    with pytest.raises(ValueError, match="probs must be 2"):
        openmix.build_policy("choice", policies=[{"name": "mixup"}, {"name": "cutmix"}], probs=[1.0])
    with pytest.raises(ValueError, match="unknown policy 'mixupp'"):
        openmix.build_policy("choice", policies=[{"name": "mixupp"}])


def test_schedules():
    assert Linear(0.0, 1.0, 10)(5) == pytest.approx(0.5) and Linear(0.0, 1.0, 10)(20) == 1.0
    assert Cosine(1.0, 0.0, 10)(0) == pytest.approx(1.0) and Cosine(1.0, 0.0, 10)(5) == pytest.approx(0.5)
    assert [Step([1.0, 0.5, 0.1], [3, 6])(e) for e in (0, 3, 7)] == [1.0, 0.5, 0.1]


def test_alpha_and_p_schedules_and_stop_epoch():
    x, y = batch(b=16)
    policy = openmix.build_policy("mixup", mode="elem", seed=0,
                                  alpha={"schedule": "linear", "start": 0.0, "end": 1.0, "epochs": 4},
                                  p={"schedule": "step", "values": [1.0, 0.0], "milestones": [3]},
                                  stop_epoch=5)
    assert policy.alpha == 0.0 and (policy(x, y).lam == 1).all()      # alpha 0: no mixing at epoch 0
    policy.set_epoch(2)
    assert policy.alpha == 0.5 and policy.p == 1.0 and (policy(x, y).lam < 1).any()
    policy.set_epoch(3)
    assert policy.p == 0.0 and (policy(x, y).lam == 1).all()
    policy = openmix.build_policy("cutmix", seed=0, stop_epoch=2)
    policy.set_epoch(1)
    assert (policy(x, y).lam < 1).any()
    policy.set_epoch(2)
    mb = policy(x, y)
    assert (mb.lam == 1).all() and mb.x is x and (mb.mask == 1).all()


def test_policy_state_dict_restores_the_stream():
    x, y = batch(b=8)
    a = openmix.build_policy("fmix", mode="elem", seed=0)
    a(x, y)
    state = a.state_dict()
    first = a(x, y)
    b = openmix.build_policy("fmix", mode="elem", seed=99)
    b.load_state_dict(state)
    assert torch.equal(b(x, y).x, first.x)


def test_resizemix_refuses_alpha():
    # λ comes from the scale τ, not Beta(α, α): an alpha is refused instead of silently ignored
    with pytest.raises(ValueError, match=r"alpha is not a ResizeMix argument.*got alpha=0.0"):
        openmix.build_policy("resizemix", alpha=0.0, mode="elem", seed=0)
    x, y = batch(b=8)
    assert (openmix.build_policy("resizemix", mode="elem", seed=0)(x, y).lam < 1).all()
