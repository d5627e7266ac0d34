"""Invariants of every input-level policy in every mode."""

import pytest
import torch
from hypothesis import given, settings, strategies as st

import openmix

MASK_POLICIES = ["cutmix", "fmix", "resizemix"]
POLICIES = ["mixup"] + MASK_POLICIES
MODES = ["batch", "pair", "elem"]


def batch(b=6, shape=(3, 12, 10), classes=5, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((b,) + shape, generator=g, dtype=torch.float64).to(dtype)
    y = torch.randint(0, classes, (b,), generator=g)
    return x, y


def spatial_mean(mask):
    return mask.reshape(mask.shape[0], -1).to(torch.float64).mean(1)


@pytest.mark.parametrize("name", POLICIES)
@pytest.mark.parametrize("mode", MODES)
def test_lambda_range_targets_and_shapes(name, mode):
    x, y = batch()
    mb = openmix.build_policy(name, mode=mode, seed=1)(x, y)
    assert mb.x.shape == x.shape and mb.x.dtype == x.dtype and mb.x.device == x.device
    assert mb.index.dtype == torch.long and sorted(mb.index.tolist()) == list(range(6))
    assert mb.lam.shape == (6,) and ((mb.lam >= 0) & (mb.lam <= 1)).all()
    t = mb.soft_targets(5, smoothing=0.1)
    assert t.shape == (6, 5)
    torch.testing.assert_close(t.sum(1), torch.ones(6))
    assert not torch.equal(mb.x, x), "a mixing policy with p=1 left the batch untouched"
    if mode == "batch":
        assert (mb.lam == mb.lam[0]).all()


@pytest.mark.parametrize("name", MASK_POLICIES)
@pytest.mark.parametrize("mode", MODES)
def test_mask_mean_is_lambda_and_output_follows_mask(name, mode):
    x, y = batch(b=7)
    mb = openmix.build_policy(name, mode=mode, seed=3)(x, y)
    assert mb.mask.shape == (7, 1, 12, 10)
    torch.testing.assert_close(spatial_mean(mb.mask), mb.lam.to(torch.float64), atol=1e-6, rtol=0)
    own = (mb.mask == 1).expand_as(x)
    # where the mask keeps the row's own image the output is exactly the input
    assert torch.equal(mb.x[own], x[own])
    if name != "resizemix":   # resizemix pastes a resized partner, not the partner's pixels
        other = (mb.mask == 0).expand_as(x)
        assert torch.equal(mb.x[other], x[mb.index][other])


@pytest.mark.parametrize("mode", MODES)
def test_mixup_is_the_convex_combination(mode):
    x, y = batch()
    mb = openmix.build_policy("mixup", mode=mode, seed=0)(x, y)
    lam = mb.lam.view(-1, 1, 1, 1)
    torch.testing.assert_close(mb.x, lam * x + (1 - lam) * x[mb.index])


def test_pair_mode_partners_swap_and_share_parameters():
    x, y = batch(b=9)
    for name in POLICIES:
        mb = openmix.build_policy(name, mode="pair", seed=5)(x, y)
        assert torch.equal(mb.index[mb.index], torch.arange(9))
        torch.testing.assert_close(mb.lam, mb.lam[mb.index])


@settings(max_examples=20, deadline=None)
@given(name=st.sampled_from(POLICIES), mode=st.sampled_from(MODES), b=st.integers(1, 9),
       h=st.integers(2, 13), w=st.integers(2, 13), seed=st.integers(0, 2 ** 31))
def test_any_batch_size_and_image_size(name, mode, b, h, w, seed):
    x, y = batch(b=b, shape=(2, h, w), seed=seed)
    mb = openmix.build_policy(name, mode=mode, seed=seed)(x, y)
    assert mb.x.shape == x.shape and mb.index.shape == (b,) and mb.lam.shape == (b,)
    assert ((mb.lam >= 0) & (mb.lam <= 1)).all() and torch.isfinite(mb.x).all()
    if mb.mask is not None:
        torch.testing.assert_close(spatial_mean(mb.mask), mb.lam.double(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", POLICIES)
def test_one_dimensional_signals(name):
    x, y = batch(b=5, shape=(2, 40))
    mb = openmix.build_policy(name, mode="elem", seed=0)(x, y)
    assert mb.x.shape == x.shape
    if mb.mask is not None:
        assert mb.mask.shape == (5, 1, 40)
        torch.testing.assert_close(spatial_mean(mb.mask), mb.lam.double(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["fmix", "cutmix"])
def test_volumes(name):
    x, y = batch(b=4, shape=(1, 6, 8, 10))
    mb = openmix.build_policy(name, mode="elem", seed=0)(x, y)
    assert mb.mask.shape == (4, 1, 6, 8, 10)
    torch.testing.assert_close(spatial_mean(mb.mask), mb.lam.double(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", POLICIES)
def test_dtype_preserved(name, dtype):
    x, y = batch(dtype=dtype)
    mb = openmix.build_policy(name, mode="elem", seed=0)(x, y)
    assert mb.x.dtype == dtype


@pytest.mark.parametrize("name", POLICIES + ["vanilla"])
@pytest.mark.parametrize("mode", MODES)
def test_seeded_determinism(name, mode):
    x, y = batch()
    a = openmix.build_policy(name, mode=mode)(x, y, generator=torch.Generator().manual_seed(7))
    b = openmix.build_policy(name, mode=mode)(x, y, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a.x, b.x) and torch.equal(a.index, b.index) and torch.equal(a.lam, b.lam)
    c = openmix.build_policy(name, mode=mode)(x, y, generator=torch.Generator().manual_seed(8))
    if name != "vanilla":
        assert not torch.equal(a.x, c.x)
    # the policy's own seeded generator repeats too
    p, q = openmix.build_policy(name, mode=mode, seed=3), openmix.build_policy(name, mode=mode, seed=3)
    assert torch.equal(p(x, y).x, q(x, y).x)


def test_input_is_not_modified_unless_inplace():
    for name in POLICIES:
        x, y = batch()
        before = x.clone()
        openmix.build_policy(name, mode="elem", seed=0)(x, y)
        assert torch.equal(x, before), name
        mb = openmix.build_policy(name, mode="elem", seed=0, inplace=True)(x, y)
        ref = openmix.build_policy(name, mode="elem", seed=0)(before, y)
        assert mb.x.data_ptr() == x.data_ptr(), name
        torch.testing.assert_close(mb.x, ref.x)


def test_vanilla_is_identity():
    x, y = batch()
    mb = openmix.build_policy("vanilla")(x, y)
    assert mb.x is x and torch.equal(mb.index, torch.arange(6)) and (mb.lam == 1).all()
    torch.testing.assert_close(mb.soft_targets(5), torch.nn.functional.one_hot(y, 5).float())


def test_soft_labels_are_accepted():
    x, y = batch()
    soft = torch.softmax(torch.randn(6, 5), dim=1)
    mb = openmix.build_policy("mixup", mode="elem", seed=0)(x, soft)
    t = mb.soft_targets(5)
    lam = mb.lam.unsqueeze(1)
    torch.testing.assert_close(t, lam * soft + (1 - lam) * soft[mb.index])


def test_regression_targets_mix_linearly():
    x, _ = batch()
    y = torch.randn(6, 2)
    mb = openmix.build_policy("mixup", mode="elem", seed=0)(x, y)
    lam = mb.lam.unsqueeze(1)
    torch.testing.assert_close(mb.mix_targets(), lam * y + (1 - lam) * y[mb.index])


def test_label_pair():
    x, y = batch()
    mb = openmix.build_policy("cutmix", seed=0)(x, y)
    a, b = mb.label_pair()
    assert torch.equal(a, y) and torch.equal(b, y[mb.index])
