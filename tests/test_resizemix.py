"""ResizeMix placements: inside (the paper's text) and clip (OpenMixup's code)."""
import math

import pytest
import torch
import torch.nn.functional as F

import openmix

SCALE = (0.1, 0.8)


def expected_mean_lambda(placement: str, side: int, scale=SCALE) -> float:
    """E[λ] on side x side images, integrated exactly: τ ~ U(scale) enters only through the cut
    m = floor(τ·side), and for ``clip`` the two box sides are independent given m (uniform centre
    pixel c, side min(c + m//2, S) - max(c - m//2, 0))."""
    lo, hi = scale
    total = 0.0
    for m in range(math.floor(lo * side), math.floor(hi * side) + 1):
        weight = (min(hi, (m + 1) / side) - max(lo, m / side)) / (hi - lo)    # P(floor(τ·side) = m)
        if weight <= 0:
            continue
        if placement == "inside":
            mean_side = m
        else:
            mean_side = sum(min(c + m // 2, side) - max(c - m // 2, 0) for c in range(side)) / side
        total += weight * mean_side ** 2 / side ** 2
    return 1.0 - total


@pytest.mark.parametrize("placement, value", [("inside", 0.770), ("clip", 0.841)])
def test_mean_lambda_matches_the_expected_value(placement, value):
    policy = openmix.build_policy("resizemix", mode="elem", placement=placement)
    n = 200_000
    params = policy.sample_params(torch.Size((n, 1, 32, 32)), torch.Generator().manual_seed(0))
    size, _ = policy.boxes(params["tau"], params["place"], (32, 32))
    lam = 1.0 - size.prod(dim=1).double() / 1024
    expected = expected_mean_lambda(placement, 32)
    assert expected == pytest.approx(value, abs=5e-4)       # REFERENCE.md item 4's two means
    # 5 standard errors of the mean of n draws (λ's sd is about 0.15, so about 0.0017)
    assert abs(float(lam.mean()) - expected) < 5 * float(lam.std()) / math.sqrt(n)


def distinct_rows(b, c, *spatial):
    """Each row constant and different from every other row, so pasted pixels are visible."""
    return (torch.arange(b, dtype=torch.float32) + 1).view(b, *([1] * (1 + len(spatial)))).expand(b, c, *spatial).clone()


@pytest.mark.parametrize("placement", ["inside", "clip"])
@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
@pytest.mark.parametrize("spatial", [(24, 20), (30,)])
def test_lambda_is_one_minus_the_visible_pasted_area(placement, mode, spatial):
    b = 32
    x, y = distinct_rows(b, 2, *spatial), torch.arange(b) % 5
    mb = openmix.build_policy("resizemix", mode=mode, placement=placement, seed=3)(x, y)
    pasted = (mb.x != x).any(dim=1)                                      # (B, *spatial)
    for i in range(b):
        if int(mb.index[i]) == i:          # a row paired with itself pastes itself: invisible
            continue
        area = int(pasted[i].sum())
        assert float(mb.lam[i]) == pytest.approx(1 - area / math.prod(spatial), abs=1e-6)
        assert torch.equal(mb.mask[i, 0] == 0, pasted[i])


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
@pytest.mark.parametrize("mode", ["batch", "elem"])
def test_clip_pastes_the_whole_partner_resized_into_the_clipped_box(mode, interpolation):
    x = torch.rand(16, 3, 20, 20, generator=torch.Generator().manual_seed(0))
    policy = openmix.build_policy("resizemix", mode=mode, placement="clip", interpolation=interpolation)
    params = policy.sample_params(x.shape, torch.Generator().manual_seed(4))
    out, mask, lam = policy.apply(x, params)
    size, offset = policy.boxes(params["tau"], params["place"], (20, 20))
    clipped = 0
    for i in range(16):
        cut = math.floor(float(params["tau"][i].double()) * 20)
        centre = [math.floor(float(p) * 20) for p in params["place"][i].double()]
        lo = [max(c - cut // 2, 0) for c in centre]                   # OpenMixup's box, by hand
        hi = [min(c + cut // 2, 20) for c in centre]
        assert offset[i].tolist() == lo and size[i].tolist() == [h - l for h, l in zip(hi, lo)]
        clipped += size[i].tolist() != [2 * (cut // 2)] * 2
        h, w = hi[0] - lo[0], hi[1] - lo[1]
        corners = {"align_corners": False} if interpolation == "bilinear" else {}
        expected = F.interpolate(x[params["index"][i]][None], size=(h, w), mode=interpolation, **corners)[0]
        assert torch.equal(out[i, :, lo[0]:hi[0], lo[1]:hi[1]], expected)
        assert float(lam[i]) == pytest.approx(1 - h * w / 400)
    if mode == "elem":                     # 16 boxes: some met the border (else this proves little)
        assert clipped > 0


def test_inside_boxes_are_whole_and_inside():
    policy = openmix.build_policy("resizemix", mode="elem")
    params = policy.sample_params(torch.Size((2000, 1, 24, 18)), torch.Generator().manual_seed(2))
    size, offset = policy.boxes(params["tau"], params["place"], (24, 18))
    cut = torch.floor(params["tau"].double().unsqueeze(1) * torch.tensor([24, 18])).long()
    assert torch.equal(size, cut)
    assert (offset >= 0).all() and (offset + size <= torch.tensor([24, 18])).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"placement must be one of \['inside', 'clip'\], got 'border'"):
        openmix.build_policy("resizemix", placement="border")
    with pytest.raises(ValueError, match=r"alpha is not a ResizeMix argument.*got alpha=1.0"):
        openmix.build_policy("resizemix", alpha=1.0)
    assert "alpha" not in repr(openmix.build_policy("resizemix", placement="clip"))
