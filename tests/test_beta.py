"""Beta(α, α) draws for λ: the right distribution at every α, and α validated."""
import math

import pytest
import scipy.stats as st
import torch

import openmix
from openmix.policies.base import SMALL_ALPHA, beta_log_odds, sample_beta

N = 20000


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("alpha", [0.2, 1.0, 5.0])
def test_draws_follow_beta_by_a_ks_test(alpha):
    # the float64 form of the draws (below 0.5 the public float32 λ rounds values within 6e-8 of
    # 1, which a KS test of this size sees; test_public_draws_are_the_float32_form checks the cast).
    # Seeded, so the p-value is a fixed number. Level 0.001: a right sampler fails 1 seed in 1000;
    # at N = 20000 it still refuses a KS distance above 0.014, and torch's float32 Dirichlet
    # sampler is at 0.019 for α = 0.2 (p ~ 1e-6)
    if alpha < SMALL_ALPHA:
        draws = torch.sigmoid(beta_log_odds(alpha, N, generator()))
    else:
        draws = sample_beta(alpha, N, generator()).double()
    result = st.kstest(draws.numpy(), st.beta(alpha, alpha).cdf)
    assert result.pvalue > 1e-3, result


@pytest.mark.parametrize("alpha", [1.0, 5.0])
def test_log_odds_sampler_is_right_for_large_alpha_too(alpha):
    draws = torch.sigmoid(beta_log_odds(alpha, N, generator(3)))
    assert st.kstest(draws.numpy(), st.beta(alpha, alpha).cdf).pvalue > 1e-3


@pytest.mark.parametrize("alpha", [1e-8, 1e-3, 0.2])
def test_public_draws_are_the_float32_form(alpha):
    assert torch.equal(sample_beta(alpha, 1000, generator(5)),
                       torch.sigmoid(beta_log_odds(alpha, 1000, generator(5))).float())


def test_draws_for_alpha_from_a_half_are_unchanged():
    # same generator, same draws as before the small-α fix (torch's Dirichlet sampler)
    for alpha in (0.5, 1.0, 2.0):
        expected = torch._sample_dirichlet(torch.full((500, 2), alpha), generator=generator(7))[:, 0]
        assert torch.equal(sample_beta(alpha, 500, generator(7)), expected)


@pytest.mark.parametrize("alpha", [1e-8, 1e-3])
def test_tiny_alpha_puts_the_mass_at_0_and_1_in_equal_halves(alpha):
    draws = sample_beta(alpha, N, generator(1)).double()
    assert not (draws == 0.5).any()                         # the old sampler's failure
    # each of the N draws is a Bernoulli trial for "below 1/2" with p = 1/2: 5 sigma is 0.018
    sigma = math.sqrt(0.25 / N)
    assert abs(float((draws < 0.5).double().mean()) - 0.5) < 5 * sigma
    # within 1e-6 of each end: expected mass from scipy, tolerance 5 binomial sigmas
    expected = float(st.beta(alpha, alpha).cdf(1e-6))        # 0.4931 at 1e-3, 0.5000 at 1e-8
    tol = 5 * math.sqrt(expected * (1 - expected) / N)
    assert abs(float((draws < 1e-6).double().mean()) - expected) < tol
    assert abs(float((draws > 1 - 1e-6).double().mean()) - expected) < tol
    middle = float(((draws > 0.01) & (draws < 0.99)).double().mean())
    expected_middle = 1 - 2 * float(st.beta(alpha, alpha).cdf(0.01))   # 0.0046 at 1e-3, 5e-8 at 1e-8
    assert abs(middle - expected_middle) < 5 * math.sqrt(max(expected_middle, 1 / N) / N)


def test_zero_alpha_is_no_mixing():
    assert torch.equal(sample_beta(0.0, 4, generator()), torch.ones(4))
    x, y = torch.rand(4, 3, 8, 8), torch.arange(4)
    mb = openmix.build_policy("mixup", alpha=0.0, seed=0)(x, y)
    assert mb.x is x and (mb.lam == 1).all()


def test_draws_repeat_with_the_seed_and_differ_across_seeds():
    assert torch.equal(sample_beta(0.1, 50, generator(2)), sample_beta(0.1, 50, generator(2)))
    assert not torch.equal(sample_beta(0.1, 50, generator(2)), sample_beta(0.1, 50, generator(3)))


def test_small_alpha_mixup_mixes_toward_the_ends():
    x, y = torch.rand(256, 1, 4, 4), torch.randint(0, 3, (256,))
    lam = openmix.build_policy("mixup", alpha=1e-3, mode="elem", seed=0)(x, y).lam
    assert ((lam < 0.01) | (lam > 0.99)).float().mean() > 0.95 and not (lam == 0.5).any()


@pytest.mark.parametrize("alpha", [float("nan"), float("inf")])
def test_alpha_nan_or_inf_is_refused(alpha):
    with pytest.raises(ValueError, match=r"alpha must be a finite real number >= 0, got (nan|inf)"):
        openmix.build_policy("mixup", alpha=alpha)
    policy = openmix.build_policy("cutmix", alpha=lambda epoch: 1.0 if epoch < 10 else alpha)
    with pytest.raises(ValueError, match=r"alpha must be a finite real number >= 0"):
        policy.set_epoch(10)


def test_beta_log_odds_refuses_non_positive_alpha():
    with pytest.raises(ValueError, match=r"alpha must be > 0 for beta_log_odds, got 0.0"):
        beta_log_odds(0.0, 3, generator())
