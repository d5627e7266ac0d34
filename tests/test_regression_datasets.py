"""The regression datasets of the C-Mixup track: what they hold, and whether C-Mixup's assumption
(label-similar samples are input-similar) holds where their docstrings say it does."""
import math

import pytest
import torch

import openmix
from openmix.train.datasets import DatasetNotFoundError, build_dataset, single_index_arrays


def test_single_index_is_exp_of_the_signal_coordinate():
    # without nuisance and noise, x = 2 s u with |u| = 1, so s = |x| / 2 and y = exp(3 s) exactly
    x, y, x_test, y_test = single_index_arrays(num_train=50, num_test=20, nuisance=0.0, noise=0.0, seed=3)
    assert x.shape == (50, 32) and y.shape == (50,) and x_test.shape == (20, 32) and y_test.shape == (20,)
    torch.testing.assert_close(y, torch.exp(3 * x.norm(dim=1) / 2))
    assert float(y.min()) >= 1.0 and float(y.max()) <= math.exp(3.0)
    again = single_index_arrays(num_train=50, num_test=20, nuisance=0.0, noise=0.0, seed=3)
    assert torch.equal(again[0], x) and not torch.equal(single_index_arrays(num_train=50, num_test=20, seed=4)[0], x)


def test_single_index_bundle():
    bundle = build_dataset("single_index")
    assert (len(bundle.train), len(bundle.test), bundle.input_shape, bundle.task) == (96, 1024, (1, 32), "regression")
    y = bundle.train.y
    assert abs(float(y.mean())) < 1e-5 and abs(float(y.std()) - 1) < 1e-5        # standardised with train stats
    raw = single_index_arrays()[1]
    torch.testing.assert_close(y * bundle.target_std + bundle.target_mean, raw)


def _partner_input_gap(x_signal: torch.Tensor, y: torch.Tensor, seed: int = 0) -> float:
    """Mean |signal_i - signal_j| of C-Mixup partners other than the row itself (default
    bandwidth, the whole set as one batch) over the same for random pairs: near 0 when
    label-similar means input-similar, near 1 when the label says nothing about where the input is."""
    g = torch.Generator().manual_seed(seed)
    index = openmix.build_pairing("cmixup")(y.shape[0], g, y=y)
    near = (x_signal[index] - x_signal).abs()
    other = index != torch.arange(y.shape[0])
    random_gap = (x_signal[:, None] - x_signal).abs().mean()
    return float(near[other].mean() / random_gap)


def test_label_pairing_is_input_pairing_on_single_index_but_not_on_sine1d():
    # measured 0.19-0.20 (single_index: the flat start of exp(3 s) widens the window in s there)
    # and 0.85-0.92 (sine1d: partners as far apart in x as random pairs) over three seeds
    x, y, _, _ = single_index_arrays(num_train=512, noise=0.0, nuisance=0.0)
    assert _partner_input_gap(x.norm(dim=1), y) < 0.3
    sine = build_dataset("sine1d")                      # y = 2 + sin(2x): four x per label value
    x_sine, y_sine = sine.train.x.view(-1), sine.train.y
    assert _partner_input_gap(x_sine, y_sine) > 0.7


def test_star98_matches_statsmodels():
    star98 = pytest.importorskip("statsmodels.datasets.star98")          # the bench extra installs it
    bundle = build_dataset("star98", test_fraction=0.2, split_seed=0)
    assert (len(bundle.train) + len(bundle.test), bundle.input_shape) == (303, (1, 12))
    targets = torch.cat([bundle.train.y, bundle.test.y]) * bundle.target_std + bundle.target_mean
    endog = star98.load_pandas().endog                        # successes and failures
    expected = torch.tensor((100 * endog["NABOVE"] / (endog["NABOVE"] + endog["NBELOW"])).to_numpy(),
                            dtype=torch.float32)
    torch.testing.assert_close(targets.sort().values, expected.sort().values, rtol=1e-5, atol=1e-4)


def test_star98_without_statsmodels_says_how_to_get_it(monkeypatch):
    import importlib.util
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "statsmodels" else real_find_spec(name, *a))
    with pytest.raises(DatasetNotFoundError, match="pip install statsmodels"):
        build_dataset("star98")
