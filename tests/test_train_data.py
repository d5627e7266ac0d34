"""Trainer datasets: embedded ones, and real formats on tiny files written by the tests."""
import pickle

import numpy as np
import pytest
import torch

from openmix.train.datasets import DatasetNotFoundError, build_dataset, list_datasets
from openmix.train.settings import DataSettings
from openmix.train.splits import make_splits


def _splits(bundle, seed=0, **kw):
    opts = dict(val_fraction=0.0, train_size=None, test_size=None, per_class=None, label_noise=0.0,
                label_noise_kind="symmetric")
    opts.update(kw)
    return make_splits(bundle, DataSettings(name=bundle.name, task=bundle.task, builder_kwargs={}, **opts), seed)


def _write_cifar10(root, n_per_batch=6):
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = {"batch_label": name, "labels": rng.integers(0, 10, n_per_batch).tolist(),
             "data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
             "filenames": [f"{i}.png" for i in range(n_per_batch)]}
        with open(base / name, "wb") as f:
            pickle.dump(d, f, protocol=2)
    return base


def test_cifar10_pickle_batches(tmp_path):
    base = _write_cifar10(tmp_path)
    b = _splits(build_dataset("cifar10", root=str(tmp_path)), seed=3)
    assert len(b.train) == 30 and len(b.test) == 6 and b.num_classes == 10 and b.uint8
    with open(base / "test_batch", "rb") as f:
        raw = pickle.load(f, encoding="latin1")
    x, y = b.test[2]
    assert x.dtype == torch.uint8 and x.shape == (3, 32, 32)
    assert torch.equal(x.flatten(), torch.from_numpy(raw["data"][2])) and int(y) == raw["labels"][2]
    # training augmentation: seeded per (seed, epoch, index): repeats, and differs across epochs
    a0 = b.train[1][0]
    assert torch.equal(a0, b.train[1][0])
    b.train.set_epoch(1)
    assert any(not torch.equal(a0, (b.train.set_epoch(e), b.train[1][0])[1]) for e in range(1, 6))


def test_cifar_refuses_executable_pickles(tmp_path):
    base = _write_cifar10(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    with open(base / "test_batch", "wb") as f:
        pickle.dump({"data": Evil(), "labels": [0]}, f)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        build_dataset("cifar10", root=str(tmp_path))


def test_missing_dataset_says_where_what_how(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:
        build_dataset("cifar100", root=str(tmp_path))
    msg = str(e.value)
    assert str(tmp_path / "cifar-100-python") in msg and "train" in msg and "data.download=true" in msg
    with pytest.raises(DatasetNotFoundError, match="looked in .*train.*data.root"):
        build_dataset("imagefolder", root=str(tmp_path))


def test_imagefolder_pngs(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("val", 2)):
        for c in ("cat", "dog"):
            d = tmp_path / split / c
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(d / f"{i}.png")
    raw = build_dataset("imagefolder", root=str(tmp_path), image_size=16)
    assert raw.train[0][0].shape == (3, 20, 24)     # images load at their own size; the splits transform them
    b = _splits(raw)
    assert (len(b.train), len(b.test), b.num_classes) == (6, 4, 2)
    x, y = b.train[4]
    assert x.shape == (3, 16, 16) and x.dtype == torch.uint8 and y == 1
    assert b.test[0][0].shape == (3, 16, 16)


def test_unknown_dataset_lists_choices():
    with pytest.raises(ValueError, match="digits.*mnist1d|choose one of"):
        build_dataset("nope")
    assert {"digits", "mnist1d", "synthetic", "diabetes", "rotated_digits", "sine1d", "cifar10", "cifar100",
            "imagefolder"} <= set(list_datasets())


def test_digits_split_is_stratified_and_seeded():
    a, b = build_dataset("digits"), build_dataset("digits")
    assert torch.equal(a.test.y, b.test.y) and len(a.train) + len(a.test) == 1797
    counts = torch.bincount(a.test.y, minlength=10).float()
    assert counts.min() >= 35 and counts.max() <= 37   # ~20% of ~180 per class
    c = build_dataset("digits", split_seed=1)
    assert not torch.equal(a.test.y, c.test.y)


@pytest.mark.parametrize("name,shape", [("diabetes", (1, 10)), ("rotated_digits", (1, 8, 8)), ("sine1d", (1, 1))])
def test_regression_datasets_standardised_with_train_stats(name, shape):
    b = build_dataset(name)
    assert b.task == "regression" and b.input_shape == shape
    ytr = b.train.y
    assert abs(float(ytr.mean())) < 1e-4 and abs(float(ytr.std()) - 1) < 1e-4
    assert ytr.dtype == torch.float32 and b.target_std > 0
    if name == "diabetes":
        assert b.train.x.mean(dim=(0, 1)).abs().max() < 1e-4   # features standardised on train rows
    if name == "rotated_digits":  # angles in [10, 80] degrees on the original scale
        ang = b.test.y * b.target_std + b.target_mean
        assert ang.min() >= 10 - 1e-3 and ang.max() <= 80 + 1e-3


def test_mnist1d_keeps_global_rng():
    np.random.seed(123)
    expect = np.random.rand()
    np.random.seed(123)
    b = build_dataset("mnist1d", num_samples=200)
    assert np.random.rand() == expect
    assert b.input_shape == (1, 40) and b.num_classes == 10
