"""SmoothMix: the mask's functional form at hand-computed points, λ = mean of the own-image mask."""
import math

import pytest
import torch

import openmix


def draw(policy, shape, seed=0):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    params = policy.sample_params(x.shape, torch.Generator().manual_seed(seed + 1))
    out, mask, lam = policy.apply(x, params)
    return x, params, out, mask, lam


def centre_and_length(params, row, spatial):
    centre = [math.floor(float(params["centre"][row, k]) * n) for k, n in enumerate(spatial)]
    length = [float(params["scale"][row]) * n for n in spatial]
    return centre, length


@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
def test_circle_mask_is_one_minus_a_gaussian_blob(mode):
    policy = openmix.build_policy("smoothmix", mode=mode)
    spatial = (12, 20)
    x, params, out, mask, lam = draw(policy, (5, 3) + spatial)
    for row in range(5):
        (ch, cw), (lh, lw) = centre_and_length(params, row, spatial)
        assert 0.25 * 12 <= lh <= 0.5 * 12 and lw == pytest.approx(lh * 20 / 12)
        for i, j in [(ch, cw), (0, 0), (11, 19), (ch, 3), (5, cw)]:
            g = math.exp(-((i - ch) ** 2 / (2 * lh * lh) + (j - cw) ** 2 / (2 * lw * lw)))
            assert float(mask[row, 0, i, j]) == pytest.approx(1.0 - g, abs=1e-6)
        # the blob's centre shows the partner only
        k = int(params["index"][row])
        torch.testing.assert_close(out[row, :, ch, cw], x[k, :, ch, cw])
    flat = mask.reshape(5, -1).to(torch.float64)
    torch.testing.assert_close(lam, flat.mean(1))
    assert bool(((flat >= 0) & (flat <= 1)).all())
    torch.testing.assert_close(out, x * mask + x[params["index"]] * (1 - mask))


def test_square_mask_has_a_plateau_and_linear_edges():
    policy = openmix.build_policy("smoothmix", shape="square", mode="elem", scale=(0.4, 0.4))
    spatial = (40, 40)
    x, params, out, mask, lam = draw(policy, (4, 1) + spatial, seed=3)
    for row in range(4):
        (ch, cw), (ell, _) = centre_and_length(params, row, spatial)
        assert ell == pytest.approx(16.0)
        m = mask[row, 0].to(torch.float64)
        assert float(m[ch, cw]) == 0.0
        for d in range(-30, 31):                 # along the row through the centre
            j = cw + d
            if 0 <= j < 40:
                expected = 1.0 - min(1.0, max(0.0, (1.5 * ell - abs(d)) / ell))
                assert float(m[ch, j]) == pytest.approx(expected, abs=1e-6), (row, d)
        # separable: G(i, j) = G_h(i) G_w(j)
        gh, gw = 1 - m[:, cw], 1 - m[ch, :]
        torch.testing.assert_close(1 - m, gh[:, None] * gw[None, :], atol=1e-6, rtol=0)
    torch.testing.assert_close(lam, mask.reshape(4, -1).to(torch.float64).mean(1))


@pytest.mark.parametrize("shape", [(6, 2, 50), (3, 1, 6, 8, 10)])
def test_one_and_three_dimensional_inputs(shape):
    policy = openmix.build_policy("smoothmix", mode="elem")
    x, params, out, mask, lam = draw(policy, shape)
    assert mask.shape == (shape[0], 1) + shape[2:]
    torch.testing.assert_close(lam, mask.reshape(shape[0], -1).to(torch.float64).mean(1))
    row, spatial = 1, shape[2:]
    centre, length = centre_and_length(params, row, spatial)
    assert float(mask[(row, 0) + tuple(centre)]) == 0.0
    point = tuple(min(c + 2, n - 1) for c, n in zip(centre, spatial))
    g = math.exp(-sum((p - c) ** 2 / (2 * ell * ell) for p, c, ell in zip(point, centre, length)))
    assert float(mask[(row, 0) + point]) == pytest.approx(1 - g, abs=1e-6)


def test_unmixed_rows_keep_their_image_and_alpha_is_refused():
    with pytest.raises(ValueError, match=r"alpha is not a SmoothMix argument .* got alpha=0.0"):
        openmix.build_policy("smoothmix", alpha=0.0)
    x = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    mb = openmix.build_policy("smoothmix", mode="elem", p=0.5)(
        x, torch.arange(16), generator=torch.Generator().manual_seed(1))
    unmixed = mb.lam == 1
    assert 0 < int(unmixed.sum()) < 16
    assert torch.equal(mb.x[unmixed], x[unmixed]) and bool((mb.mask[unmixed] == 1).all())
    assert bool((mb.lam[~unmixed] < 1).all())


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"shape must be one of \['circle', 'square'\], got 'triangle'"):
        openmix.build_policy("smoothmix", shape="triangle")
    with pytest.raises(ValueError, match="scale must be a pair"):
        openmix.build_policy("smoothmix", scale=(0.0, 0.5))
    with pytest.raises(ValueError, match="scale must satisfy"):
        openmix.build_policy("smoothmix", scale=(0.5, 0.25))
