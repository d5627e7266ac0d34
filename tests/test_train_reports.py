"""Calibration (temperature scaling, Brier) and robustness corruptions, by hand and end to end."""
import math

import pytest
import torch
from torch import nn

from openmix.train import compose_config, train
from openmix.train.metrics import ClassificationMeter, fit_temperature
from openmix.train.reports import fgsm, gaussian_noise, occlude


def test_temperature_hand_case():
    # logits (a, 0) for every sample, label 0 in 80% of them: the NLL is minimal where
    # softmax(a / T)[0] = 0.8, i.e. a / T = log(0.8 / 0.2), so T = 4 / log 4
    logits = torch.tensor([[4.0, 0.0]] * 10)
    labels = torch.tensor([0] * 8 + [1] * 2)
    assert fit_temperature(logits, labels) == pytest.approx(4 / math.log(4), rel=1e-6)
    with pytest.raises(ValueError, match=r"logits must be \(N, K\)"):
        fit_temperature(torch.zeros(3), labels)


def test_brier_hand_case():
    meter = ClassificationMeter(num_classes=3)
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    meter.update_probs(probs, torch.tensor([0, 1]))
    # row 1: (0.3^2 + 0.2^2 + 0.1^2) = 0.14; row 2: (0.1^2 + 0.9^2 + 0.8^2) = 1.46; mean 0.8
    assert meter.compute()["brier"] == pytest.approx(0.8)


def test_occlusion_zeroes_one_square_of_the_given_side():
    x = torch.ones(16, 3, 10, 12)
    out = occlude(x, 0.5, torch.Generator().manual_seed(0))
    zeros = (out[:, 0] == 0).flatten(1).sum(1)
    assert zeros.tolist() == [5 * 6] * 16 and torch.equal(out[:, 0] == 0, out[:, 2] == 0)
    rows = (out[:, 0] == 0).any(2).int()          # the zeros form one contiguous block of 5 rows
    assert all(r.nonzero().flatten().diff().eq(1).all() for r in rows)
    assert torch.equal(out, occlude(x, 0.5, torch.Generator().manual_seed(0)))
    signal = occlude(torch.ones(4, 1, 40), 0.25, torch.Generator().manual_seed(1))
    assert (signal == 0).sum(dim=(1, 2)).tolist() == [10] * 4


def test_gaussian_noise_has_the_given_std():
    out = gaussian_noise(torch.zeros(64, 3, 32, 32), 0.3, torch.Generator().manual_seed(0))
    assert abs(float(out.std()) - 0.3) < 0.005 and abs(float(out.mean())) < 0.005


def test_fgsm_steps_along_the_sign_of_the_input_gradient():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 3))
    x, y = torch.randn(5, 1, 6), torch.tensor([0, 1, 2, 0, 1])
    # by hand: d CE / d x = (softmax(Wx + b) - onehot(y)) W
    with torch.no_grad():
        w = model[1].weight
        p = torch.softmax(model(x), 1)
        grad = (p - nn.functional.one_hot(y, 3).float()) @ w
    out = fgsm(x, y, model, 0.1, "classification")
    assert torch.allclose(out - x, 0.1 * grad.sign().view_as(x))


def test_reports_in_the_summary(tmp_path):
    s = train(compose_config(["data=synthetic", "model.width=8", "trainer.epochs=2", "trainer.progress=false",
                              "trainer.summary=false", "trainer.tensorboard=false", "trainer.save_checkpoints=false",
                              "eval.robustness.gaussian=[0.5]", "eval.robustness.occlusion=[0.5]",
                              "eval.robustness.fgsm=[0.1]", f"trainer.out_dir={tmp_path}"]))
    r = s["reports"]
    assert r["epoch"] == s["selected"]["epoch"]
    cal = r["calibration"]
    assert 0.05 <= cal["temperature"] <= 20 and cal["raw"]["top1"] == cal["scaled"]["top1"]   # T keeps the argmax
    assert cal["raw"]["nll"] == pytest.approx(s["selected"]["test"]["nll"])                   # the selected model
    assert cal["scaled"]["nll"] <= cal["raw"]["nll"] + 0.05
    rob = r["robustness"]
    assert set(rob) == {"clean", "gaussian_0.5", "occlusion_0.5", "fgsm_0.1"}
    assert rob["clean"]["top1"] == pytest.approx(s["selected"]["test"]["top1"])
    assert rob["fgsm_0.1"]["top1"] <= rob["clean"]["top1"]
