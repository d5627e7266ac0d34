"""Validation split, label noise and per-class subsets (openmix.train.splits), and through the trainer."""
import numpy as np
import pytest
import torch

from openmix.train import compose_config, train
from openmix.train.datasets import build_dataset
from openmix.train.settings import DataSettings
from openmix.train.splits import make_splits, noisy_labels, per_class_indices, validation_indices


def _settings(**kw):
    opts = dict(val_fraction=0.1, train_size=None, test_size=None, per_class=None, label_noise=0.0,
                label_noise_kind="symmetric")
    opts.update(kw)
    return DataSettings(name="digits", task="classification", builder_kwargs={}, **opts)


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.4, 0.8])
def test_symmetric_noise_changes_exactly_the_rate_to_other_classes(rate):
    y = torch.arange(1000) % 10
    noisy = noisy_labels(y, 10, rate, "symmetric", seed=3)
    changed = noisy != y
    assert int(changed.sum()) == round(rate * 1000)
    assert noisy.min() >= 0 and noisy.max() <= 9
    if rate >= 0.4:   # the new classes are spread over the 9 others (a chi-square-free sanity bound)
        shift = (noisy[changed] - y[changed]) % 10
        counts = torch.bincount(shift, minlength=10)[1:]
        assert counts.min() > 0.5 * counts.float().mean()
    assert torch.equal(noisy, noisy_labels(y, 10, rate, "symmetric", seed=3))        # fixed by the seed
    if rate > 0:
        assert not torch.equal(noisy, noisy_labels(y, 10, rate, "symmetric", seed=4))


def test_pairflip_moves_each_chosen_label_to_the_next_class():
    y = torch.arange(100) % 5
    noisy = noisy_labels(y, 5, 0.3, "pairflip", seed=0)
    changed = noisy != y
    assert int(changed.sum()) == 30 and torch.equal(noisy[changed], (y[changed] + 1) % 5)


def test_noise_touches_train_and_validation_only():
    bundle = build_dataset("digits")
    clean = make_splits(bundle, _settings(), seed=1)
    noisy = make_splits(bundle, _settings(label_noise=0.4), seed=1)
    assert torch.equal(clean.test.y, noisy.test.y)                         # test stays clean
    n = len(bundle.train)
    assert noisy.extra["noisy_labels"] == round(0.4 * n)
    base_y = bundle.train.y
    train_frac = float((noisy.train.y != base_y[noisy.train.indices]).float().mean())
    val_frac = float((noisy.val.y != base_y[noisy.val.indices]).float().mean())
    assert abs(train_frac - 0.4) < 0.05 and abs(val_frac - 0.4) < 0.1    # validation noisy like train


def test_validation_split_is_stratified_seeded_and_disjoint():
    y = torch.arange(1000) % 10
    tr, va = validation_indices(y, 0.1, "stratified", seed=0)
    assert len(va) == 100 and len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == 1000
    assert np.bincount(y.numpy()[va], minlength=10).tolist() == [10] * 10
    tr2, va2 = validation_indices(y, 0.1, "stratified", seed=0)
    assert np.array_equal(va, va2)
    tail_tr, tail_va = validation_indices(y, 0.1, "tail", seed=0)
    assert tail_va.tolist() == list(range(900, 1000))          # CIFAR's convention: the last images


def test_per_class_keeps_n_per_class_seeded():
    y = torch.arange(500) % 10
    keep = per_class_indices(y, 7, seed=2)
    assert np.bincount(y.numpy()[keep], minlength=10).tolist() == [7] * 10
    assert not np.array_equal(keep, per_class_indices(y, 7, seed=3))
    split = make_splits(build_dataset("digits"), _settings(per_class=5), seed=0)
    assert torch.bincount(split.train.y, minlength=10).tolist() == [5] * 10
    assert len(split.val) == round(0.1 * len(build_dataset("digits").train))   # validation keeps its size


def test_label_noise_from_the_cli_reaches_the_summary(tmp_path):
    s = train(compose_config(["data.label_noise=0.4", "mix=mixup", "trainer.epochs=2", "model.width=8",
                              "trainer.progress=false", "trainer.summary=false", "trainer.tensorboard=false",
                              f"trainer.out_dir={tmp_path}"]))
    n_train_and_val = s["info"]["train_samples"] + s["info"]["val_samples"]
    assert s["info"]["noisy_train_labels"] == round(0.4 * n_train_and_val)
    sel = s["selected"]
    assert sel["rule"] == "best_val" and set(sel["test"]) == {"top1", "top5", "nll", "ece"}
    assert sel["test"]["top1"] == s["history"][sel["epoch"] - 1]["top1"]
