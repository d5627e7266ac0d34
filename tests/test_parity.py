"""openmix against the peers (timm, torchvision) and the papers' formulas."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from timm.data import mixup as timm_mixup
from torchvision.transforms import v2

import openmix


def images(b=8, c=3, h=16, w=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, c, h, w, generator=g), torch.randint(0, 10, (b,), generator=g)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_soft_targets_equal_timm_mixup_target_with_flip(smoothing):
    x, y = images()
    mb = openmix.build_policy("mixup", mode="batch", pairing="flip", seed=0)(x, y)
    lam = float(mb.lam[0])
    expected = timm_mixup.mixup_target(y, 10, lam=lam, smoothing=smoothing)
    torch.testing.assert_close(mb.soft_targets(10, smoothing), expected)


@pytest.mark.parametrize("mode", ["batch", "elem"])
def test_mixup_equals_timm_for_the_same_lambda(mode, monkeypatch):
    x, y = images()
    mb = openmix.build_policy("mixup", mode=mode, pairing="flip", seed=4)(x, y)
    mixer = timm_mixup.Mixup(mixup_alpha=1.0, cutmix_alpha=0.0, mode=mode, label_smoothing=0.1, num_classes=10)
    if mode == "batch":
        monkeypatch.setattr(mixer, "_params_per_batch", lambda: (float(mb.lam[0]), False))
    else:
        monkeypatch.setattr(mixer, "_params_per_elem",
                            lambda n: (mb.lam.numpy().astype(np.float32), np.zeros(n, dtype=bool)))
    tx, ty = mixer(x.clone(), y)
    torch.testing.assert_close(mb.x, tx)
    torch.testing.assert_close(mb.soft_targets(10, 0.1), ty)


def _recover_lambda(soft, y, index):
    """λ from a peer's mixed one-hot labels, using a row whose two classes differ."""
    row = int(torch.nonzero(y != y[index])[0])
    return float(soft[row, y[row]])


def test_mixup_equals_torchvision_v2_with_roll():
    x, y = images()
    torch.manual_seed(3)
    tx, ty = v2.MixUp(alpha=1.0, num_classes=10)(x, y)
    roll = openmix.build_pairing("roll")(8, torch.Generator())
    assert torch.equal(x[roll], x.roll(1, 0))
    lam = _recover_lambda(ty, y, roll)
    policy = openmix.build_policy("mixup", pairing="roll")
    out, _, _ = policy.apply(x, {"index": roll, "lam": torch.full((8,), lam)})
    torch.testing.assert_close(out, tx)
    mb = openmix.MixedBatch(out, y, roll, torch.full((8,), lam))
    torch.testing.assert_close(mb.soft_targets(10), ty)


def test_cutmix_lambda_correction_agrees_with_torchvision_v2():
    x, y = images(h=20, w=20)
    torch.manual_seed(11)
    tx, ty = v2.CutMix(alpha=1.0, num_classes=10)(x, y)
    roll = (torch.arange(8) - 1) % 8
    pasted = (tx != x).any(dim=1)[0]                       # the box torchvision pasted
    area = int(pasted.sum())
    rows, cols = pasted.any(1).nonzero(), pasted.any(0).nonzero()
    assert area == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    lam_tv = _recover_lambda(ty, y, roll)
    assert lam_tv == pytest.approx(1 - area / 400, abs=1e-6)


@pytest.mark.parametrize("mode", ["batch", "elem"])
def test_cutmix_lambda_is_one_minus_pasted_box_area(mode):
    x, y = images(b=16, h=15, w=11)
    mb = openmix.build_policy("cutmix", mode=mode, seed=2)(x, y)
    for i in range(16):
        if int(mb.index[i]) == i:
            continue
        pasted = (mb.x[i] != x[i]).any(dim=0)
        area = int(pasted.sum())
        if area:
            rows, cols = pasted.any(1).nonzero(), pasted.any(0).nonzero()
            assert area == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1), "not a box"
        assert float(mb.lam[i]) == pytest.approx(1 - area / (15 * 11), abs=1e-6)


def test_cutmix_box_side_follows_the_paper_before_clipping():
    # a centred box is never clipped: its sides are floor(H*sqrt(1-λ)) and floor(W*sqrt(1-λ))
    from openmix.ops import box_bounds
    lam = torch.tensor([0.19, 0.5, 0.91])
    lo, hi = box_bounds(lam, torch.full((3, 2), 0.5), (100, 60))
    side = (hi - lo).double()
    expected = torch.stack([torch.floor(100 * torch.sqrt(1 - lam.double())),
                            torch.floor(60 * torch.sqrt(1 - lam.double()))], 1)
    torch.testing.assert_close(side, expected)


@pytest.mark.parametrize("max_soft", [0.0, 0.1])
@pytest.mark.parametrize("mode", ["batch", "elem"])
def test_fmix_mask_mean_within_one_pixel_of_drawn_lambda(mode, max_soft):
    x, y = images(b=12, h=14, w=9)
    policy = openmix.build_policy("fmix", mode=mode, max_soft=max_soft)
    params = policy.sample_params(x.shape, torch.Generator().manual_seed(0))
    _, mask, lam = policy.apply(x, params)
    n = 14 * 9
    assert (mask.reshape(12, -1).double().mean(1) - params["lam"].double()).abs().max() <= 1 / n + 1e-6
    torch.testing.assert_close(lam, mask.reshape(12, -1).double().mean(1))
    if max_soft == 0:
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
    else:
        assert ((mask > 0) & (mask < 1)).any() and mask.min() >= 0 and mask.max() <= 1


def test_fmix_masks_are_low_frequency():
    # a decay of 3 gives compact blobs: far fewer label changes between neighbours than a
    # random mask with the same number of ones
    x, y = images(b=32, h=32, w=32)
    mb = openmix.build_policy("fmix", mode="elem", alpha=1.0, seed=0)(x, y)
    m = mb.mask[:, 0]
    changes = (m[:, 1:] != m[:, :-1]).sum() + (m[:, :, 1:] != m[:, :, :-1]).sum()
    shuffled = m.reshape(32, -1)[:, torch.randperm(1024)].reshape(32, 32, 32)
    random_changes = (shuffled[:, 1:] != shuffled[:, :-1]).sum() + (shuffled[:, :, 1:] != shuffled[:, :, :-1]).sum()
    assert changes < 0.25 * random_changes


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
@pytest.mark.parametrize("mode", ["batch", "elem"])
def test_resizemix_pastes_the_resized_partner(mode, interpolation):
    x, y = images(b=6, h=20, w=16)
    policy = openmix.build_policy("resizemix", mode=mode, scale=(0.3, 0.8), interpolation=interpolation)
    params = policy.sample_params(x.shape, torch.Generator().manual_seed(1))
    out, mask, lam = policy.apply(x, params)
    for i in range(6):
        tau = float(params["tau"][i])
        h, w = math.floor(tau * 20), math.floor(tau * 16)
        assert float(lam[i]) == pytest.approx(1 - h * w / 320)
        inside = (mask[i, 0] == 0).nonzero()
        top, left = inside.min(0).values.tolist()
        assert inside.shape[0] == h * w
        corners = {"align_corners": False} if interpolation == "bilinear" else {}
        expected = F.interpolate(x[params["index"][i]][None], size=(h, w), mode=interpolation, **corners)[0]
        torch.testing.assert_close(out[i, :, top:top + h, left:left + w], expected, atol=1e-5, rtol=1e-5)


def test_resizemix_scale_range_is_respected():
    x, y = images(b=64, h=32, w=32)
    mb = openmix.build_policy("resizemix", mode="elem", scale=(0.1, 0.8), seed=0)(x, y)
    pasted = 1 - mb.lam
    assert pasted.min() >= (3 / 32) ** 2 - 1e-6 and pasted.max() <= 0.8 ** 2 + 1e-6


def test_pairings_match_the_peers():
    g = torch.Generator()
    x = torch.arange(7.0)
    assert torch.equal(x[openmix.build_pairing("flip")(7, g)], x.flip(0))
    assert torch.equal(x[openmix.build_pairing("roll")(7, g)], x.roll(1, 0))
    perm = openmix.build_pairing("random")(7, g)
    assert sorted(perm.tolist()) == list(range(7))
    match = openmix.build_pairing("random")(7, g, involution=True)
    assert torch.equal(match[match], torch.arange(7)) and int((match == torch.arange(7)).sum()) == 1


@pytest.mark.parametrize("path", ["histogram", "sorted", "select"])
def test_top_k_mask_is_exact_with_ties_and_matches_a_sort(path):
    from openmix.ops import fourier
    from openmix.ops.fourier import rank_mask
    top_k_mask = getattr(fourier, f"_top_k_mask_{path}")
    g = torch.Generator().manual_seed(0)
    values = torch.randint(0, 5, (7, 40), generator=g).float()      # many ties
    values[6] = 2.0                                                  # a constant row
    k = torch.tensor([0, 1, 7, 20, 39, 40, 13])
    mask = top_k_mask(values, k)
    assert torch.equal(mask.sum(1), k.float())
    # ties go to the earlier position: a sort that keeps the order of equal values agrees
    ties_first = torch.argsort(values, dim=1, descending=True, stable=True)
    expected = torch.zeros_like(values).scatter_(1, ties_first, (torch.arange(40) < k[:, None]).float())
    assert torch.equal(mask, expected)
    for i in range(7):   # every chosen value is >= every value left out
        chosen, left = values[i][mask[i] == 1], values[i][mask[i] == 0]
        if len(chosen) and len(left):
            assert chosen.min() >= left.max()
    continuous = torch.randn(7, 40, generator=g)
    zero_soft = torch.zeros(7, dtype=torch.long)
    assert torch.equal(top_k_mask(continuous, k), rank_mask(continuous, k, zero_soft))
