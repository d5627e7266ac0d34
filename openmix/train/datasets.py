"""Datasets for the trainer: embedded (no download) and real (on disk).

Every dataset yields ``(x, y)`` samples:

- images ``x``: (C, H, W); 1-D signals ``x``: (C, L); tabular rows are fed as 1-D signals
  ``(1, F)`` (one channel, F positions) so that every policy, which expects
  ``(B, C, *spatial)``, sees ``(B, 1, F)``. CutMix/FMix on tabular rows therefore swap a
  contiguous run of features; mixup interpolates all of them.
- ``y``: a long class index (classification) or a float target (regression). Regression targets
  are standardised with train-split statistics; ``DataBundle.target_mean/std`` map predictions
  back to the original scale for RMSE/MAPE.

Embedded datasets are float and already normalised. Real image datasets yield uint8 tensors;
normalisation (x/255, then ``DataBundle.mean/std``) happens on the device after the copy,
which is valid for mixed uint8 batches too because normalisation is affine.

Random augmentations (crop, flip, resized crop) draw from a per-sample ``torch.Generator``
seeded from (seed, epoch, index): the same run repeats exactly whatever the number of workers,
and epochs differ.
"""
from __future__ import annotations

import functools
import math
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["DataBundle", "DatasetInfo", "DatasetNotFoundError", "build_dataset", "dataset_info", "list_datasets",
           "register_dataset"]


@dataclass(frozen=True)
class DatasetInfo:
    """A registered dataset: its task and the builder that loads it (``builder(**data_kwargs)``)."""
    name: str
    task: str                      # "classification" | "regression"
    builder: Callable[..., "DataBundle"]


_DATASETS: dict[str, DatasetInfo] = {}


def register_dataset(name: str, task: str):
    """Register ``builder(**kwargs) -> DataBundle`` under ``name``; its keyword arguments are the
    dataset's config keys (checked by the trainer's settings against the signature)."""
    if task not in ("classification", "regression"):
        raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")

    def deco(fn):
        if name in _DATASETS:
            raise ValueError(f"dataset {name!r} is already registered")
        _DATASETS[name] = DatasetInfo(name, task, fn)
        return fn
    return deco


def list_datasets() -> list[str]:
    return sorted(_DATASETS)


def dataset_info(name: str) -> DatasetInfo:
    if name not in _DATASETS:
        raise ValueError(f"unknown dataset data.name={name!r}; choose one of {list_datasets()}")
    return _DATASETS[name]


class DatasetNotFoundError(FileNotFoundError):
    """A real dataset is not on disk: says where we looked, what we expected, how to get it."""


@dataclass
class DataBundle:
    """What a dataset builder returns; ``openmix.train.splits.make_splits`` then carves the
    validation split, applies label noise / per-class subsets and wraps the augmentation."""
    name: str
    train: Dataset                          # the whole training set, unaugmented, with ``.y`` labels
    test: Dataset
    task: str                               # "classification" | "regression"
    input_shape: tuple[int, ...]            # (C, *spatial) of one sample
    num_classes: int = 0                    # classification: K; regression: 0
    target_dim: int = 1                     # regression output size
    mean: tuple[float, ...] | None = None   # per channel, [0, 1] units (x/255), for uint8 samples
    std: tuple[float, ...] | None = None
    target_mean: float = 0.0                # regression: original = standardised * std + mean
    target_std: float = 1.0
    default_model: str = "small_cnn"
    train_transform: Callable | None = None  # (x, generator) -> x: per-sample random augmentation
    eval_transform: Callable | None = None   # (x, None) -> x: deterministic, for validation and test
    val_from: str = "stratified"            # how the validation split is carved: stratified | random | tail
    val: Dataset | None = None              # set by make_splits
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def uint8(self) -> bool:
        return self.mean is not None


class TensorPairs(Dataset):
    """In-memory dataset of x: (N, C, *spatial) and y: (N,) tensors."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x and y must have the same length, got {x.shape[0]} and {y.shape[0]}")
        self.x, self.y = x, y

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i):
        return self.x[i], self.y[i]


# ----------------------------------------------------------------------------------------- helpers
def _stratified_split(y: np.ndarray, test_fraction: float, seed: int):
    from sklearn.model_selection import train_test_split
    idx = np.arange(len(y))
    return train_test_split(idx, test_size=test_fraction, stratify=y, random_state=seed, shuffle=True)


def _check_fraction(test_fraction: float) -> None:
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"data.test_fraction must be in (0, 1), got {test_fraction}")


# -------------------------------------------------------------------------------------- embedded
@register_dataset("digits", "classification")
def _digits(test_fraction: float = 0.2, split_seed: int = 0) -> DataBundle:
    """scikit-learn's bundled 8x8 digits (1797 images, 10 classes); x: (1, 8, 8) in [0, 1]."""
    from sklearn.datasets import load_digits
    _check_fraction(test_fraction)
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    tr, te = _stratified_split(d.target, test_fraction, split_seed)
    x = (x - 0.5) / 0.5  # roughly zero-centred
    return DataBundle("digits", TensorPairs(x[tr], y[tr]), TensorPairs(x[te], y[te]), "classification",
                      (1, 8, 8), num_classes=10, default_model="small_cnn")


@register_dataset("mnist1d", "classification")
def _mnist1d(num_samples: int = 5000, split_seed: int = 42) -> DataBundle:
    """mnist1d's make_dataset (generated locally, no download); x: (1, 40) signals, 10 classes."""
    import random
    from mnist1d.data import get_dataset_args, make_dataset
    args = get_dataset_args()
    args.num_samples, args.seed = int(num_samples), int(split_seed)
    # make_dataset seeds the global numpy / Python RNGs: keep ours untouched.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    xtr, ytr = torch.tensor(d["x"], dtype=torch.float32).unsqueeze(1), torch.tensor(d["y"]).long()
    xte, yte = torch.tensor(d["x_test"], dtype=torch.float32).unsqueeze(1), torch.tensor(d["y_test"]).long()
    return DataBundle("mnist1d", TensorPairs(xtr, ytr), TensorPairs(xte, yte), "classification",
                      (1, xtr.shape[-1]), num_classes=10, default_model="conv1d")


@register_dataset("synthetic", "classification")
def _synthetic(num_train: int = 256, num_test: int = 128, num_classes: int = 4, channels: int = 3,
               size: int = 8, split_seed: int = 0) -> DataBundle:
    """Tiny learnable image task for smoke tests: class-dependent mean patterns plus noise.
    x: (channels, size, size)."""
    g = torch.Generator().manual_seed(split_seed)
    prototypes = torch.randn(num_classes, channels, size, size, generator=g)

    def draw(n):
        y = torch.randint(0, num_classes, (n,), generator=g)
        x = prototypes[y] + 0.8 * torch.randn(n, channels, size, size, generator=g)
        return x, y

    xtr, ytr = draw(num_train)
    xte, yte = draw(num_test)
    return DataBundle("synthetic", TensorPairs(xtr, ytr), TensorPairs(xte, yte), "classification",
                      (channels, size, size), num_classes=num_classes, default_model="small_cnn")


def _regression_bundle(name, xtr, ytr, xte, yte, default_model) -> DataBundle:
    """Standardise targets with train statistics; x already shaped (N, C, *spatial)."""
    mu, sd = float(ytr.mean()), float(ytr.std())
    sd = sd if sd > 0 else 1.0
    return DataBundle(name, TensorPairs(xtr, ((ytr - mu) / sd).float()), TensorPairs(xte, ((yte - mu) / sd).float()),
                      "regression", tuple(xtr.shape[1:]), num_classes=0, target_dim=1,
                      target_mean=mu, target_std=sd, default_model=default_model, val_from="random")


@register_dataset("diabetes", "regression")
def _diabetes(test_fraction: float = 0.2, split_seed: int = 0) -> DataBundle:
    """scikit-learn's bundled diabetes (442 rows, 10 features: age, sex, BMI, blood pressure and
    six blood serum measurements); x: (1, 10) as a 1-D signal, features standardised with
    train-split statistics; target: a measure of disease progression one year later.

    A real tabular set, not a designed C-Mixup case: the target is noisy and close to linear in
    the features (a linear model explains about half of its variance), so there is little
    nonlinearity for label-aware pairing to protect, and patients with similar progression need
    not have similar features."""
    from sklearn.datasets import load_diabetes
    _check_fraction(test_fraction)
    d = load_diabetes()
    rng = np.random.default_rng(split_seed)
    perm = rng.permutation(len(d.target))
    n_te = int(round(test_fraction * len(perm)))
    te, tr = perm[:n_te], perm[n_te:]
    x = torch.tensor(d.data, dtype=torch.float32)
    y = torch.tensor(d.target, dtype=torch.float32)
    mu, sd = x[tr].mean(0), x[tr].std(0).clamp_min(1e-8)
    x = ((x - mu) / sd).unsqueeze(1)  # (N, 1, F): tabular row as a 1-channel signal
    return _regression_bundle("diabetes", x[tr], y[tr], x[te], y[te], "mlp")


@register_dataset("rotated_digits", "regression")
def _rotated_digits(test_fraction: float = 0.2, split_seed: int = 0, min_angle: float = 10.0,
                    max_angle: float = 80.0) -> DataBundle:
    """Digits rotated by a seeded random angle in [min_angle, max_angle] degrees (kept away from 0
    so MAPE is meaningful); target = the angle. x: (1, 8, 8); scikit-learn's 1797 digits, 80/20
    split stratified by digit. A small analogue of the paper's RCF-MNIST.

    A C-Mixup case in principle: images with similar angles differ mostly in which digit they show
    (a nuisance for the angle), and mixing two images of different angles overlays two rotated
    digits, which is not an image at the mean angle. On 8x8 images, rotation by interpolation is
    coarse, so how much the pairing matters here is what the track measures."""
    from scipy.ndimage import rotate
    from sklearn.datasets import load_digits
    _check_fraction(test_fraction)
    d = load_digits()
    rng = np.random.default_rng(split_seed)
    angles = rng.uniform(min_angle, max_angle, size=len(d.target))
    imgs = np.stack([rotate(im, a, reshape=False, order=1, mode="constant") for im, a in zip(d.images, angles)])
    x = (torch.tensor(imgs, dtype=torch.float32).unsqueeze(1) / 16.0 - 0.5) / 0.5
    y = torch.tensor(angles, dtype=torch.float32)
    tr, te = _stratified_split(d.target, test_fraction, split_seed)
    return _regression_bundle("rotated_digits", x[tr], y[tr], x[te], y[te], "small_cnn")


@register_dataset("sine1d", "regression")
def _sine1d(num_train: int = 512, num_test: int = 256, noise: float = 0.1, split_seed: int = 0) -> DataBundle:
    """Synthetic 1-D function regression: x ~ U(-pi, pi), y = 2 + sin(2x) + noise (N(0, noise**2)).
    x: (1, 1) (one feature as a length-1 signal); 512 training and 256 test samples by default.

    NOT a C-Mixup case: x -> y is 4-to-1 (sin(2x) takes each value at four x in (-pi, pi)), so
    pairing by label similarity pairs inputs from different branches, whose mix lies where the
    label is different; C-Mixup's assumption (label-similar samples are input-similar) fails.
    Kept as a negative control; ``single_index`` is the case where it holds."""
    g = torch.Generator().manual_seed(split_seed)

    def draw(n):
        x = (torch.rand(n, generator=g) * 2 - 1) * math.pi
        y = 2.0 + torch.sin(2 * x) + noise * torch.randn(n, generator=g)
        return x.view(n, 1, 1), y

    xtr, ytr = draw(num_train)
    xte, yte = draw(num_test)
    return _regression_bundle("sine1d", xtr, ytr, xte, yte, "mlp")


def single_index_arrays(num_train: int = 96, num_test: int = 1024, dim: int = 32, nuisance: float = 0.6,
                        nuisance_dims: int = 8, noise: float = 0.1, curvature: float = 3.0, seed: int = 0):
    """The raw ``single_index`` task: (x_train (N, dim), y_train (N,), x_test (M, dim), y_test (M,)).

    A latent s ~ U(0, 1) sets the label y = exp(curvature * s) (monotone, convex) and the input
    x = 2 s u + nuisance * B z + noise * e, with u and the rows of B (nuisance_dims of them)
    orthonormal directions drawn once from ``seed``, z ~ N(0, I) a nuisance unrelated to the label
    and e ~ N(0, I_dim) isotropic noise. All draws from one generator seeded by ``seed``."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(dim, 1 + nuisance_dims, generator=g))[0].T    # (1 + k, dim) orthonormal

    def draw(n):
        s = torch.rand(n, generator=g)
        z = torch.randn(n, nuisance_dims, generator=g)
        x = 2 * s[:, None] * basis[:1] + nuisance * z @ basis[1:] + noise * torch.randn(n, dim, generator=g)
        return x, torch.exp(curvature * s)

    x_train, y_train = draw(num_train)
    x_test, y_test = draw(num_test)
    return x_train, y_train, x_test, y_test


@register_dataset("single_index", "regression")
def _single_index(num_train: int = 96, num_test: int = 1024, dim: int = 32, nuisance: float = 0.6,
                  nuisance_dims: int = 8, noise: float = 0.1, curvature: float = 3.0, split_seed: int = 0) -> DataBundle:
    """Synthetic single-index regression where C-Mixup's assumption holds (``single_index_arrays``):
    y = exp(3 s) for a latent s ~ U(0, 1) read along one direction of a 32-dim input that also
    carries an 8-dim Gaussian nuisance (std 0.6) and isotropic noise (std 0.1). x: (1, dim);
    96 training and 1024 test samples by default.

    Why it is a C-Mixup case: y is a monotone function of s, so label-similar samples are
    input-similar along the signal direction and differ mainly in nuisance; mixing them makes
    new samples whose label is nearly right and teaches the model to ignore the nuisance. Plain
    mixup also mixes distant s, where the convex exp puts the interpolated label
    lam y_i + (1 - lam) y_j above the label exp(3 (lam s_i + (1 - lam) s_j)) of the mixed input
    (Jensen); ERM sees only 96 samples with an 8-dim nuisance and overfits it. Measured
    (benchmarks/cmixup_bandwidth.py, tests/test_cmixup_units.py): C-Mixup's test RMSE is about
    0.89 x ERM's and 0.82 x mixup's."""
    x_train, y_train, x_test, y_test = single_index_arrays(num_train, num_test, dim, nuisance, nuisance_dims, noise,
                                                           curvature, split_seed)
    return _regression_bundle("single_index", x_train.unsqueeze(1), y_train, x_test.unsqueeze(1), y_test, "mlp")


def _statsmodels_csv(name: str) -> Path:
    """The CSV file statsmodels ships for dataset ``name``, found without importing statsmodels
    (or pandas): the data are read with numpy."""
    import importlib.util
    spec = importlib.util.find_spec("statsmodels")
    if spec is None or spec.origin is None:
        raise DatasetNotFoundError(f"data.name={name} reads the copy of the data that statsmodels ships (no download); "
                                   f"statsmodels is not installed: pip install statsmodels")
    path = Path(spec.origin).parent / "datasets" / name / f"{name}.csv"
    if not path.is_file():
        raise DatasetNotFoundError(f"data.name={name}: expected statsmodels' bundled file {path}, which is missing; "
                                   f"reinstall statsmodels (pip install --force-reinstall statsmodels)")
    return path


_STAR98_COVARIATES = ("LOWINC", "PERASIAN", "PERBLACK", "PERHISP", "PERMINTE", "AVYRSEXP", "AVSALK", "PERSPENK",
                      "PTRATIO", "PCTAF", "PCTCHRT", "PCTYRRND")


@register_dataset("star98", "regression")
def _star98(test_fraction: float = 0.2, split_seed: int = 0) -> DataBundle:
    """California STAR test results of 1998 per unified school district, as bundled with
    statsmodels (``statsmodels.datasets.star98``; read offline from its CSV): 303 districts.
    Target: the percentage of 9th graders above the national median in maths (100 x PR50M /
    MATHTOT). Features: the 12 district covariates (low-income %, ethnic composition, teachers'
    experience and salary, spending per pupil, pupil-teacher ratio, ...; the dataset's 8
    interaction columns are left out), standardised with train-split statistics; x: (1, 12).

    A real tabular set of the size of the paper's NO2 (500 rows), not a designed C-Mixup case:
    whether districts with similar results have similar covariates is what the track measures."""
    _check_fraction(test_fraction)
    path = _statsmodels_csv("star98")
    header = path.read_text().splitlines()[0].replace('"', "").split(",")
    table = np.loadtxt(path, delimiter=",", skiprows=1)
    column = {name: i for i, name in enumerate(header)}
    x = torch.tensor(table[:, [column[c] for c in _STAR98_COVARIATES]], dtype=torch.float32)
    y = torch.tensor(100.0 * table[:, column["PR50M"]] / table[:, column["MATHTOT"]], dtype=torch.float32)
    perm = np.random.default_rng(split_seed).permutation(len(y))
    n_te = int(round(test_fraction * len(perm)))
    te, tr = perm[:n_te], perm[n_te:]
    mu, sd = x[tr].mean(0), x[tr].std(0).clamp_min(1e-8)
    x = ((x - mu) / sd).unsqueeze(1)  # (N, 1, F): tabular row as a 1-channel signal
    return _regression_bundle("star98", x[tr], y[tr], x[te], y[te], "mlp")


# ------------------------------------------------------------------------------------------ real
CIFAR_MEAN = {"cifar10": (0.4914, 0.4822, 0.4465), "cifar100": (0.5071, 0.4865, 0.4409)}
CIFAR_STD = {"cifar10": (0.2470, 0.2435, 0.2616), "cifar100": (0.2673, 0.2564, 0.2762)}
_CIFAR_LAYOUT = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels", 10),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels", 100),
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """CIFAR batches are pickles: allow only numpy array reconstruction, nothing executable."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset file")


def _read_cifar_batch(path: Path, label_key: str):
    with open(path, "rb") as f:
        d = _ArrayOnlyUnpickler(f, encoding="latin1").load()
    data = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return torch.from_numpy(data.copy()), torch.tensor(d[label_key], dtype=torch.long)


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """x: (C, H, W) -> (C, H, W): zero-pad by ``padding``, random crop back to H x W, random h-flip."""
    C, H, W = x.shape
    top, left, flip = torch.randint(0, 2 * padding + 1, (2,), generator=generator).tolist() + \
        [bool(torch.randint(0, 2, (1,), generator=generator))]
    padded = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    out = padded[:, top:top + H, left:left + W]
    return out.flip(-1).contiguous() if flip else out.contiguous()


def _cifar(name: str, root: str | None = "~/data", download: bool = False, augment: bool = True) -> DataBundle:
    """CIFAR-10/100 from the python pickle batches; x: uint8 (3, 32, 32).
    Training transform: RandomCrop(32, padding=4) + horizontal flip. The validation split is the
    last ``val_fraction`` of the training images (the last 5,000 at the default 0.1)."""
    folder, train_files, test_files, label_key, K = _CIFAR_LAYOUT[name]
    root_path = Path(os.path.expanduser(root or "~/data"))
    base = root_path / folder
    expected = train_files + test_files
    missing = [f for f in expected if not (base / f).is_file()]
    if missing and download:
        import torchvision
        cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
        cls(str(root_path), train=True, download=True)
        missing = [f for f in expected if not (base / f).is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"{name} not found: looked in {base} and expected the python-version batch files "
            f"{', '.join(expected)} (missing: {', '.join(missing)}). Get it with data.download=true "
            f"(downloads and extracts into data.root={root_path}), or set data.root to the folder that "
            f"contains {folder}/ (an absolute path, or quoted: 'data.root=~/data').")
    xtr, ytr = zip(*[_read_cifar_batch(base / f, label_key) for f in train_files])
    xte, yte = zip(*[_read_cifar_batch(base / f, label_key) for f in test_files])
    return DataBundle(name, TensorPairs(torch.cat(xtr), torch.cat(ytr)), TensorPairs(torch.cat(xte), torch.cat(yte)),
                      "classification", (3, 32, 32), num_classes=K, mean=CIFAR_MEAN[name], std=CIFAR_STD[name],
                      default_model="resnet18", train_transform=random_crop_flip if augment else None,
                      val_from="tail")


@register_dataset("cifar10", "classification")
def _cifar10(root: str | None = "~/data", download: bool = False, augment: bool = True) -> DataBundle:
    return _cifar("cifar10", root, download, augment)


@register_dataset("cifar100", "classification")
def _cifar100(root: str | None = "~/data", download: bool = False, augment: bool = True) -> DataBundle:
    return _cifar("cifar100", root, download, augment)


IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class ImageFiles(Dataset):
    """A list of (path, label) read as uint8 (3, H, W) tensors at their own size (the splits'
    transforms crop and resize them)."""

    def __init__(self, samples: list[tuple[str, int]]):
        self.samples = samples
        self.y = torch.tensor([label for _, label in samples], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i):
        from PIL import Image
        from torchvision.transforms.v2.functional import pil_to_tensor
        path, label = self.samples[i]
        with Image.open(path) as im:
            return pil_to_tensor(im.convert("RGB")), label


def random_resized_crop_flip(x: torch.Tensor, generator: torch.Generator, size: int,
                             scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> torch.Tensor:
    """x: uint8 (C, H, W) -> (C, size, size): the standard random-resized-crop (area fraction in
    ``scale``, log-uniform aspect ratio, 10 tries then a central crop) plus a random h-flip."""
    from torchvision.transforms.v2.functional import resized_crop
    _, H, W = x.shape
    area = H * W
    top, left, h, w = None, None, H, W
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        u = torch.rand(2, generator=generator).tolist()
        target = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        ar = math.exp(log_r[0] + (log_r[1] - log_r[0]) * u[1])
        cw, ch = int(round(math.sqrt(target * ar))), int(round(math.sqrt(target / ar)))
        if 0 < cw <= W and 0 < ch <= H:
            top = int(torch.randint(0, H - ch + 1, (1,), generator=generator))
            left = int(torch.randint(0, W - cw + 1, (1,), generator=generator))
            h, w = ch, cw
            break
    if top is None:  # central crop at the clamped ratio
        in_ratio = W / H
        if in_ratio < ratio[0]:
            w, h = W, int(round(W / ratio[0]))
        elif in_ratio > ratio[1]:
            h, w = H, int(round(H * ratio[1]))
        else:
            w, h = W, H
        top, left = (H - h) // 2, (W - w) // 2
    out = resized_crop(x, top, left, h, w, [size, size], antialias=True)
    if bool(torch.randint(0, 2, (1,), generator=generator)):
        out = out.flip(-1)
    return out.contiguous()


def resize_center_crop(x: torch.Tensor, generator: torch.Generator | None, size: int, crop_fraction: float = 0.875):
    """x: uint8 (C, H, W) -> (C, size, size): resize the short side to size/crop_fraction, centre crop."""
    from torchvision.transforms.v2.functional import center_crop, resize
    out = resize(x, [int(round(size / crop_fraction))], antialias=True)
    return center_crop(out, [size, size]).contiguous()


def _list_image_folder(folder: Path) -> tuple[list[str], list[tuple[str, int]]]:
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    samples = []
    for k, c in enumerate(classes):
        for dirpath, _, files in sorted(os.walk(folder / c)):
            for f in sorted(files):
                if f.lower().endswith(IMG_EXTENSIONS):
                    samples.append((os.path.join(dirpath, f), k))
    return classes, samples


@register_dataset("imagefolder", "classification")
def _imagefolder(root: str | None = None, download: bool = False, image_size: int = 64, train_dir: str = "train",
                 test_dirs: Sequence[str] = ("val", "test"), mean: Sequence[float] = (0.485, 0.456, 0.406),
                 std: Sequence[float] = (0.229, 0.224, 0.225)) -> DataBundle:
    """ImageNet-style layout: ``root/train/<class>/*.jpg`` and ``root/val/<class>/*.jpg`` (or
    ``test/``). Tiny-ImageNet's ``val/images`` + ``val_annotations.txt`` is understood too.
    x: uint8 (3, image_size, image_size). Train: RandomResizedCrop + flip; test: resize + centre crop."""
    root_path = Path(os.path.expanduser(root)) if root else None
    how = ("Download the dataset yourself (no automatic download for image folders), e.g. Tiny-ImageNet "
           "from http://cs231n.stanford.edu/tiny-imagenet-200.zip, unpack it, and set data.root to it.")
    if root_path is None or not (root_path / train_dir).is_dir():
        raise DatasetNotFoundError(
            f"imagefolder not found: looked in {root_path / train_dir if root_path else '<data.root unset>'} and "
            f"expected one folder per class with images ({', '.join(IMG_EXTENSIONS)}), e.g. "
            f"{train_dir}/<class>/img.jpg, plus a {'/'.join(test_dirs)} folder in the same layout. {how}")
    classes, train_samples = _list_image_folder(root_path / train_dir)
    test_samples: list[tuple[str, int]] = []
    for td in test_dirs:
        tdir = root_path / td
        if not tdir.is_dir():
            continue
        ann = tdir / "val_annotations.txt"
        if ann.is_file() and (tdir / "images").is_dir():  # Tiny-ImageNet validation layout
            index = {c: k for k, c in enumerate(classes)}
            for line in ann.read_text().splitlines():
                parts = line.split("\t")
                if len(parts) >= 2 and parts[1] in index:
                    test_samples.append((str(tdir / "images" / parts[0]), index[parts[1]]))
        else:
            test_classes, test_samples = _list_image_folder(tdir)
            if test_classes != classes:
                raise ValueError(f"class folders of {tdir} differ from those of {root_path / train_dir}: "
                                 f"{len(test_classes)} vs {len(classes)} classes")
        break
    if not train_samples or not test_samples:
        raise DatasetNotFoundError(
            f"imagefolder: found {len(train_samples)} training and {len(test_samples)} test images under "
            f"{root_path} (looked in {train_dir}/ and {' or '.join(test_dirs)}/); expected at least one of each "
            f"as <split>/<class>/<image>. {how}")
    return DataBundle("imagefolder", ImageFiles(train_samples), ImageFiles(test_samples), "classification",
                      (3, image_size, image_size), num_classes=len(classes), mean=tuple(mean), std=tuple(std),
                      default_model="resnet18", train_transform=functools.partial(random_resized_crop_flip,
                                                                                   size=image_size),
                      eval_transform=functools.partial(resize_center_crop, size=image_size), extra={"classes": classes})


def build_dataset(name: str, **kwargs) -> DataBundle:
    """Load a registered dataset by name (whole training set and test set, no validation split;
    see ``openmix.train.splits.make_splits``); unknown name -> ValueError listing the choices."""
    return dataset_info(name).builder(**kwargs)
