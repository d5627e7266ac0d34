"""C-Mixup pairing: drawn partners against the kernel probabilities (chi-square), memory bounds,
errors, and interchangeability with the policies."""
import math

import pytest
import torch

import openmix
from openmix.pairing.kernel import KernelPairing, _SortedBins, kernel_partners

scipy_stats = pytest.importorskip("scipy.stats")


def kernel_probs(query, labels, sigma):
    q = query.reshape(1, -1).double()
    y = labels.reshape(labels.shape[0], -1).double()
    w = torch.exp(-((y - q) ** 2).sum(1) / (2 * sigma ** 2))
    return w / w.sum()


def chi_square_p(counts, probs):
    """Pearson chi-square p-value, cells with expected count < 5 pooled into one."""
    n = counts.sum()
    expected = probs * n
    big = expected >= 5
    obs = torch.cat([counts[big].double(), counts[~big].double().sum().view(1)])
    exp = torch.cat([expected[big], expected[~big].sum().view(1)])
    if exp[-1] < 5:  # merge a small pooled cell into the smallest big one
        obs, exp = obs[:-1].clone(), exp[:-1].clone()
        i = int(exp.argmin())
        obs[i] += counts[~big].sum()
        exp[i] += expected[~big].sum()
    stat, p = scipy_stats.chisquare(obs.numpy(), exp.numpy() * obs.sum().item() / exp.sum().item())
    return float(p)


@pytest.mark.parametrize("method", ["dense", "window"])
def test_scalar_partners_follow_kernel(method):
    g = torch.Generator().manual_seed(1)
    labels = torch.cat([torch.randn(30, generator=g), 3.0 + 0.5 * torch.randn(20, generator=g)])
    sigma = 0.7
    draws = 40_000
    p_values = []
    for i in (0, 25, 40):   # a few query rows, each drawn many times
        queries = labels[i].repeat(draws)
        idx = kernel_partners(queries, labels, sigma, g, method=method)
        counts = torch.bincount(idx, minlength=labels.shape[0])
        p_values.append(chi_square_p(counts, kernel_probs(labels[i], labels, sigma)))
    assert min(p_values) > 1e-3, p_values


def test_window_sampler_with_queries_that_are_not_labels():
    g = torch.Generator().manual_seed(8)
    labels = torch.cat([torch.randn(40, generator=g), 4 + torch.randn(10, generator=g)])
    sigma, value = 0.4, 2.1234                 # between the two clusters, not a label
    idx = kernel_partners(torch.full((40_000,), value), labels, sigma, g, method="window")
    counts = torch.bincount(idx, minlength=labels.shape[0])
    assert chi_square_p(counts, kernel_probs(torch.tensor(value), labels, sigma)) > 1e-3


def test_multidimensional_partners_follow_kernel():
    g = torch.Generator().manual_seed(2)
    labels = torch.randn(40, 3, generator=g)
    sigma = 1.0
    queries = labels[7].expand(40_000, 3)
    idx = kernel_partners(queries, labels, sigma, g, chunk_elements=1 << 16)
    counts = torch.bincount(idx, minlength=40)
    assert chi_square_p(counts, kernel_probs(labels[7], labels, sigma)) > 1e-3


def test_window_sampler_tabulated_and_direct_agree_with_kernel():
    g = torch.Generator().manual_seed(3)
    labels = torch.randn(200, generator=g) * 2
    sigma = 0.3
    bins = _SortedBins(labels.view(-1, 1), sigma)
    q = labels[11].double().repeat(30_000)
    probs = kernel_probs(labels[11], labels, sigma)
    for idx in (bins.sample(q, sigma, 8.0, g, chunk=4096),                         # tabulated
                bins.sample(q, sigma, 8.0, g, chunk=4096, table_budget=0)):        # per query
        counts = torch.bincount(idx, minlength=200)
        assert chi_square_p(counts, probs) > 1e-3


def test_window_sampler_whole_dataset_statistics():
    # every row's partner: the mean |y_i - y_j| of a Gaussian kernel on dense labels is sigma*sqrt(2/pi)
    g = torch.Generator().manual_seed(4)
    labels = torch.randn(200_000, generator=g) * 5
    sigma = 0.1
    idx = KernelPairing(sigma=sigma, sigma_units="raw", labels=labels).sample_epoch(g)
    assert idx.shape == labels.shape and idx.dtype == torch.long
    mean_abs = (labels[idx] - labels).abs().mean().item()
    assert abs(mean_abs - sigma * math.sqrt(2 / math.pi)) < 0.01 * sigma * 5


def test_epoch_sampling_memory_is_linear():
    # 1e5 scalar labels: an N x N float matrix would be 40 GB; the sampler's allocations stay small
    g = torch.Generator().manual_seed(5)
    labels = torch.rand(100_000, generator=g) * 100
    pairing = KernelPairing(sigma=0.5, sigma_units="raw", labels=labels)
    idx = pairing.sample_epoch(g)
    assert int(idx.min()) >= 0 and int(idx.max()) < labels.shape[0]
    assert (labels[idx] - labels).abs().max().item() <= 8 * 0.5 + 1e-9   # truncation at 8 sigma


def test_in_batch_pairing_class_labels_and_cutmix():
    pairing = openmix.build_pairing("cmixup", sigma=0.5)
    g = torch.Generator().manual_seed(6)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 2])
    idx = pairing(7, g, y=y)
    assert idx.shape == (7,) and idx.dtype == torch.long
    # with sigma 0.5 another class has weight exp(-4) relative to the same class
    policy = openmix.build_policy("cutmix", alpha=1.0, mode="elem", pairing={"name": "cmixup", "sigma": 0.5}, seed=0)
    x = torch.rand(7, 3, 16, 16, generator=g)
    mb = policy(x, y, generator=torch.Generator().manual_seed(0))
    assert mb.x.shape == x.shape and mb.index.shape == (7,)
    assert torch.allclose(mb.lam.double(), mb.mask.double().mean(dim=(1, 2, 3)))


def test_mixup_with_cmixup_regression_targets():
    policy = openmix.build_policy("mixup", alpha=2.0, pairing={"name": "cmixup", "sigma": 0.1}, seed=0)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(64, 1, 10, generator=g)
    y = torch.cat([torch.zeros(32), 10 + torch.zeros(32)]) + 0.01 * torch.randn(64, generator=g)
    mb = policy(x, y, generator=torch.Generator().manual_seed(1))
    # partners come from the same cluster: the bandwidth is 0.1 x the label std (~5), so the other
    # cluster, 10 away, has kernel weight ~exp(-200)
    assert bool(((y[mb.index] - y).abs() < 1).all())
    assert mb.mix_targets().shape == (64,)


def test_determinism_and_device():
    pairing = KernelPairing(sigma=1.0)
    y = torch.randn(33)
    a = pairing(33, torch.Generator().manual_seed(3), y=y)
    b = pairing(33, torch.Generator().manual_seed(3), y=y)
    assert torch.equal(a, b) and a.device == y.device


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="sigma"):
        KernelPairing(sigma=0)
    pairing = KernelPairing(sigma=1.0)
    g = torch.Generator()
    with pytest.raises(ValueError, match="needs the labels"):
        pairing(4, g)
    with pytest.raises(ValueError, match="mode='pair'"):
        pairing(4, g, y=torch.randn(4), involution=True)
    with pytest.raises(ValueError, match="batch_size"):
        pairing(4, g, y=torch.randn(5))
    with pytest.raises(ValueError, match="method='window'"):
        kernel_partners(torch.randn(3, 2), torch.randn(5, 2), 1.0, g, method="window")
    with pytest.raises(ValueError, match="sample_epoch needs"):
        pairing.sample_epoch(g)
    with pytest.raises(ValueError, match="mode='pair'"):
        openmix.build_policy("mixup", mode="pair", pairing={"name": "cmixup"})(torch.randn(4, 3), torch.randn(4))


def test_short_training_run(tmp_path):
    """End to end through the trainer (openmix.train.app.train) on an embedded dataset."""
    train_app = pytest.importorskip("openmix.train")
    fast = ["trainer.epochs=2", "trainer.batch_size=32", "trainer.progress=false", "trainer.summary=false",
            "trainer.tensorboard=false", "trainer.last_k=2", "model.width=8", "trainer.threads=1"]
    cfg = train_app.compose_config([*fast, f"trainer.out_dir={tmp_path / 'run'}", "data=diabetes", "mix=cmixup", "optim=adamw", "optim.lr=0.01"])
    s = train_app.train(cfg)
    assert s["task"] == "regression" and s["final"]["rmse"] < 120


def test_short_training_run_cutmix_with_cmixup_pairing(tmp_path):
    train_app = pytest.importorskip("openmix.train")
    fast = ["trainer.epochs=2", "trainer.batch_size=32", "trainer.progress=false", "trainer.summary=false",
            "trainer.tensorboard=false", "trainer.last_k=2", "model.width=8", "trainer.threads=1"]
    cfg = train_app.compose_config([*fast, f"trainer.out_dir={tmp_path / 'run'}", "data=synthetic", "mix=cutmix",
                                    "mix.pairing={name:cmixup,sigma:0.5}"])
    s = train_app.train(cfg)
    assert s["final"]["top1"] > 50
