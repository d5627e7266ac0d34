"""GridMix: the cell structure rebuilt by hand, λ from the true pixel area, the cell probability."""
import math

import pytest
import torch

import openmix


def draw(policy, shape, seed=0):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    params = policy.sample_params(x.shape, torch.Generator().manual_seed(seed + 1))
    out, mask, lam = policy.apply(x, params)
    return x, params, out, mask, lam


def hand_mask(params, row, spatial, prob):
    """The own-image mask rebuilt with Python loops: pixel i of a dim of size L cut into n cells lies in
    cell floor(i*n/L); a cell shows the partner when its coin is below prob."""
    n = int(params["cells"][row])
    coins = params["coins"][row]
    mask = torch.ones(spatial)
    for pixel in torch.cartesian_prod(*[torch.arange(s) for s in spatial]).reshape(-1, len(spatial)).tolist():
        cell = tuple(math.floor(i * n / size) for i, size in zip(pixel, spatial))
        if bool(params["mixed"][row]) and float(coins[cell]) < prob:
            mask[tuple(pixel)] = 0.0
    return mask


@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
@pytest.mark.parametrize("spatial", [(12, 12), (10, 7)])
def test_mask_is_the_grid_of_coin_flips_and_lambda_its_mean(mode, spatial):
    policy = openmix.build_policy("gridmix", mode=mode, grid=(2, 4), cell_prob=0.5)
    x, params, out, mask, lam = draw(policy, (5, 3) + spatial)
    for row in range(5):
        expected = hand_mask(params, row, spatial, 0.5)      # pair / batch rows share draws already
        assert torch.equal(mask[row, 0], expected)
        assert float(lam[row]) == pytest.approx(float(expected.double().mean()), abs=1e-12)
        assert float(1 - lam[row]) == pytest.approx(float((expected == 0).sum()) / math.prod(spatial), abs=1e-12)
    torch.testing.assert_close(out, x * mask + x[params["index"]] * (1 - mask))


def test_cells_of_floor_and_ceil_sizes_are_constant_inside():
    policy = openmix.build_policy("gridmix", mode="elem", grid=(3, 3), cell_prob=0.5)
    x, params, out, mask, lam = draw(policy, (64, 1, 10, 7), seed=4)
    bounds_h = [0, 4, 7, 10]          # floor(i * 3 / 10) = 0,0,0,0,1,1,1,2,2,2: cells of 4, 3, 3 rows
    bounds_w = [0, 3, 5, 7]           # floor(j * 3 / 7) = 0,0,0,1,1,2,2: cells of 3, 2, 2 columns
    for a in range(3):
        for b in range(3):
            cell = mask[:, 0, bounds_h[a]:bounds_h[a + 1], bounds_w[b]:bounds_w[b + 1]]
            assert bool((cell == cell[:, :1, :1]).all())                 # piecewise constant
    # λ is the true pixel area, not the share of cells: rebuild it from the 9 cell values
    area = torch.tensor([[4 * 3, 4 * 2, 4 * 2], [3 * 3, 3 * 2, 3 * 2], [3 * 3, 3 * 2, 3 * 2]], dtype=torch.float64)
    corners = mask[:, 0][:, [0, 4, 7]][:, :, [0, 3, 5]].to(torch.float64)
    torch.testing.assert_close(lam, (corners * area).sum((1, 2)) / 70)


def test_cell_probability_over_many_draws():
    prob = 0.3
    policy = openmix.build_policy("gridmix", mode="elem", grid=(4, 4), cell_prob=prob)
    x, params, out, mask, lam = draw(policy, (500, 1, 8, 8), seed=7)
    share = 1 - float(lam.mean())          # 500 rows x 16 cells, each from the partner with prob 0.3
    sd = math.sqrt(prob * (1 - prob) / (500 * 16))
    assert abs(share - prob) < 5 * sd, (share, sd)


def test_cell_prob_none_uses_one_minus_the_beta_draw():
    policy = openmix.build_policy("gridmix", mode="elem", grid=(2, 3), cell_prob=None, alpha=2.0)
    x, params, out, mask, lam = draw(policy, (6, 1, 9, 9), seed=2)
    for row in range(6):
        assert torch.equal(mask[row, 0], hand_mask(params, row, (9, 9), 1 - float(params["lam"][row])))
    identity = openmix.build_policy("gridmix", cell_prob=None, alpha=0.0)(x, torch.arange(6))   # alpha 0: no mixing
    assert identity.index.tolist() == list(range(6)) and torch.equal(identity.x, x)


@pytest.mark.parametrize("shape", [(4, 2, 13), (3, 1, 5, 6, 7)])
def test_one_and_three_dimensional_inputs(shape):
    policy = openmix.build_policy("gridmix", mode="elem", grid=(2, 3))
    x, params, out, mask, lam = draw(policy, shape)
    for row in range(shape[0]):
        assert torch.equal(mask[row, 0], hand_mask(params, row, shape[2:], 0.5))
    torch.testing.assert_close(lam, mask.reshape(shape[0], -1).to(torch.float64).mean(1))


def test_bad_arguments():
    for grid in [(0, 2), (3, 2), (2.5, 3), "ab", 4, (True, 2)]:
        with pytest.raises(ValueError, match="grid must be a pair"):
            openmix.build_policy("gridmix", grid=grid)
    with pytest.raises(ValueError, match=r"cell_prob must be a probability in \[0, 1\], got 1.5"):
        openmix.build_policy("gridmix", cell_prob=1.5)
