"""Trainer metrics: standard binned ECE (hand-computed), top-k, NLL, RMSE, MAPE, median of last k."""
import math

import pytest
import torch

from openmix.train.metrics import ClassificationMeter, RegressionMeter, expected_calibration_error, median_last_k


def test_ece_matches_hand_computed_example():
    probs = torch.tensor([
        [0.95, 0.03, 0.02],   # conf .95, correct   -> bin 14
        [0.62, 0.30, 0.08],   # conf .62, wrong     -> bin 9
        [0.64, 0.16, 0.20],   # conf .64, correct   -> bin 9
        [0.45, 0.30, 0.25],   # conf .45, wrong     -> bin 6
    ], dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 2])
    # 1/4*|1 - .95| + 2/4*|1/2 - .63| + 1/4*|0 - .45| = .0125 + .065 + .1125
    assert expected_calibration_error(probs, y, num_bins=15) == pytest.approx(0.19, abs=1e-12)


def test_ece_bins_are_upper_inclusive_and_not_sorted_separately():
    # the same 2 samples in one bin: |mean acc - mean conf| per bin, not per-sample |acc - conf|
    probs = torch.tensor([[0.7, 0.3], [0.7, 0.3]], dtype=torch.float64)
    y = torch.tensor([0, 1])
    assert expected_calibration_error(probs, y) == pytest.approx(abs(0.5 - 0.7))
    # perfectly calibrated confident predictions -> 0
    assert expected_calibration_error(torch.tensor([[1.0, 0.0]] * 3, dtype=torch.float64), torch.zeros(3).long()) == 0


def test_classification_meter_topk_nll_and_merge():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0, -1.0, -2.0],
                           [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]])
    y = torch.tensor([1, 0])
    m = ClassificationMeter(num_classes=6)
    m.update(logits[:1], y[:1])
    m2 = ClassificationMeter(num_classes=6)
    m2.update(logits[1:], y[1:])
    m.load_state(m.state() + m2.state())  # what the DDP all-reduce does
    out = m.compute()
    assert out["top1"] == 0.0
    assert out["top5"] == 50.0          # row 0: class 1 is 2nd; row 1: class 0 is 6th
    nll = -torch.log_softmax(logits, 1)[torch.arange(2), y].mean().item()
    assert out["nll"] == pytest.approx(nll)


def test_regression_meter_rmse_mape():
    m = RegressionMeter()
    m.update(torch.tensor([1.0, 4.0]), torch.tensor([2.0, 4.0]))
    out = m.compute()
    assert out["rmse"] == pytest.approx(math.sqrt(0.5))
    assert out["mape"] == pytest.approx(100 * (0.5 + 0.0) / 2)


def test_median_last_k():
    hist = [{"top1": v} for v in (10, 50, 20, 40, 30)]
    assert median_last_k(hist, "top1", 3) == 30
    assert median_last_k(hist, "top1", 100) == 30
    with pytest.raises(ValueError, match="k must be"):
        median_last_k(hist, "top1", 0)
