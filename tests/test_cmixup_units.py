"""C-Mixup's default bandwidth works whatever the units of the labels.

The task (``openmix.train.datasets.single_index_arrays``): a latent s ~ U(0, 1) sets the label
y = exp(3 s) and is read along one direction of a 32-dim input that also carries an 8-dim
Gaussian nuisance (std 0.6) and isotropic noise (std 0.1); 96 training samples. C-Mixup's
assumption holds: y is monotone in s, so label-similar samples are input-similar along the signal
and differ mainly in the nuisance. Mixing them makes new samples with nearly the right label and
teaches the model to ignore the nuisance, which ERM on 96 samples overfits; plain mixup also mixes
distant s, where the convex exp puts the interpolated label above the true one (Jensen).

The labels are multiplied by 0.02, 1 and 50 and the policies are built through the public API,
C-Mixup with no sigma: ``openmix.build_policy("mixup", alpha=2.0, pairing={"name": "cmixup"})``.
The learner is a small MLP whose output is scaled by the training labels' mean and std (fixed
before training), so the learner itself is unit-free and a change across scales can only come
from the pairing, which sees the scaled labels. The same learner, initial weights (per seed),
steps and batch size serve ERM, mixup and C-Mixup; all models train at once as one batched
network (about 4 s of CPU on a quiet core).

Margin: mean relative test RMSE (RMSE / std of the test labels) over 5 seeds; C-Mixup must be
below 0.95 x ERM's and 0.95 x mixup's at every scale. Measured over 12 seeds
(``benchmarks/cmixup_bandwidth.py``), the per-seed ratio C-Mixup/ERM is 0.89 (sd 0.045, every
seed below 0.97) and C-Mixup/mixup 0.82 (sd 0.043, every seed below 0.93), so a 5-seed mean
clears 0.95 by about 2.8 standard errors against ERM and 6 against mixup. The old absolute
default (sigma = 1 in label units) fails the same check at x0.02 (C-Mixup becomes mixup) and at
x50 (hardly any mixing: ERM): the test has teeth.
"""
import functools
import math
import warnings

import pytest
import torch

import openmix
from openmix.data import KernelPartnerSampler
from openmix.pairing.kernel import DEFAULT_SIGMA, KernelPairing, label_spread
from openmix.train.datasets import single_index_arrays

SCALES = (0.02, 1.0, 50.0)
SEEDS = tuple(range(5))
MARGIN = 0.95
STEPS, BATCH, HIDDEN, LR = 300, 32, 64, 3e-3


class BatchedMLP(torch.nn.Module):
    """Independent 2-hidden-layer ReLU MLPs evaluated at once: x (M, B, D) -> (M, B). Model k is
    initialised from ``init_seeds[k]``, so runs that share a seed (ERM, mixup and C-Mixup on the
    same task) start from the same weights and their comparison is paired."""

    def __init__(self, init_seeds, in_features: int, hidden: int):
        super().__init__()
        generators = [torch.Generator().manual_seed(int(seed)) for seed in init_seeds]

        def layer(fan_in, fan_out):       # torch.nn.Linear's default uniform initialisation
            bound = 1 / math.sqrt(fan_in)
            w = torch.stack([torch.rand(fan_in, fan_out, generator=g) for g in generators]) * 2 - 1
            b = torch.stack([torch.rand(1, fan_out, generator=g) for g in generators]) * 2 - 1
            return torch.nn.Parameter(w * bound), torch.nn.Parameter(b * bound)

        self.w1, self.b1 = layer(in_features, hidden)
        self.w2, self.b2 = layer(hidden, hidden)
        self.w3, self.b3 = layer(hidden, 1)

    def forward(self, x):
        h = torch.relu(torch.baddbmm(self.b1, x, self.w1))
        h = torch.relu(torch.baddbmm(self.b2, h, self.w2))
        return torch.baddbmm(self.b3, h, self.w3).squeeze(-1)


def single_index_task(scale: float, seed: int):
    """(x (96, 32), y (96,), x_test (1024, 32), y_test (1024,)) with the labels multiplied by scale."""
    x, y, x_test, y_test = single_index_arrays(seed=seed)
    return x, y * scale, x_test, y_test * scale


def relative_test_rmse(runs) -> torch.Tensor:
    """Train one model per run ``(seed, task, policy or None for ERM)``, all at once as one batched
    network (the models share nothing: the loss is a sum of per-model losses and Adam is
    elementwise), and return RMSE / std(y_test) per run, shape (len(runs),)."""
    g = torch.Generator().manual_seed(0)
    tasks = [task for _, task, _ in runs]
    net = BatchedMLP([seed for seed, _, _ in runs], tasks[0][0].shape[1], HIDDEN)
    optimizer = torch.optim.Adam(net.parameters(), lr=LR)
    x_train, y_train = torch.stack([t[0] for t in tasks]), torch.stack([t[1] for t in tasks])   # (M, N, D), (M, N)
    mean, std = y_train.mean(1, keepdim=True), y_train.std(1, keepdim=True)   # the output scale
    models = torch.arange(len(runs)).unsqueeze(1)
    for _ in range(STEPS):
        rows = torch.rand(y_train.shape, generator=g).argsort(1)[:, :BATCH]     # a random batch per model
        xb, yb = x_train[models, rows], y_train[models, rows]
        for k, (_, _, policy) in enumerate(runs):
            if policy is not None:
                mixed = policy(xb[k], yb[k], generator=g)
                xb[k], yb[k] = mixed.x, mixed.mix_targets()
        pred = net(xb) * std + mean
        loss = ((pred - yb) ** 2).mean(1).div(std.squeeze(1) ** 2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        y_test = torch.stack([t[3] for t in tasks])
        pred = net(torch.stack([t[2] for t in tasks])) * std + mean
        return ((pred - y_test) ** 2).mean(1).sqrt() / y_test.std(1)


METHODS = {
    "erm": lambda: None,
    "mixup": lambda: openmix.build_policy("mixup", alpha=2.0),
    "cmixup": lambda: openmix.build_policy("mixup", alpha=2.0, pairing={"name": "cmixup"}),   # no sigma given
    "cmixup_raw1": lambda: openmix.build_policy("mixup", alpha=2.0,
                                                pairing={"name": "cmixup", "sigma": 1.0, "sigma_units": "raw"}),
}


@functools.cache
def results() -> dict:
    """Relative test RMSE per method, (len(SCALES), len(SEEDS)); the raw-bandwidth C-Mixup runs
    at the smallest scale only (nan elsewhere)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)     # tiny matrices: threads only add overhead on a shared machine
    try:
        runs, keys = [], []
        for method, make_policy in METHODS.items():
            for i, scale in enumerate(SCALES):
                if method == "cmixup_raw1" and scale != SCALES[0]:
                    continue
                for j, seed in enumerate(SEEDS):
                    runs.append((seed, single_index_task(scale, seed), make_policy()))
                    keys.append((method, i, j))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")       # the raw bandwidth warns at the outer scales
            rmse = relative_test_rmse(runs)
    finally:
        torch.set_num_threads(threads)
    out = {m: torch.full((len(SCALES), len(SEEDS)), float("nan")) for m in METHODS}
    for (method, i, j), value in zip(keys, rmse.tolist()):
        out[method][i, j] = value
    return out


def test_label_spread_hand_cases():
    y = torch.tensor([1.0, 2.0, 3.0, 6.0])                                   # mean 3, population var 3.5
    assert label_spread(y).item() == pytest.approx(math.sqrt(3.5))
    y2 = torch.tensor([[0.0, 0.0], [2.0, 4.0]])                               # vars 1 and 4
    assert label_spread(y2).item() == pytest.approx(math.sqrt(5.0))
    assert label_spread(torch.tensor([3, 1, 2])).item() == 1.0               # class indices: one-hot spread
    assert label_spread(torch.full((5,), 7.0)).item() == 1.0                 # no spread: every partner as near
    assert label_spread(torch.tensor([4.0])).item() == 1.0
    bandwidth = KernelPairing().bandwidth(y)
    assert isinstance(bandwidth, torch.Tensor) and bandwidth.device == y.device   # no host sync
    assert bandwidth.item() == pytest.approx(DEFAULT_SIGMA * math.sqrt(3.5))


@pytest.mark.parametrize("shape", [(64,), (64, 3)])
def test_relative_partners_do_not_depend_on_label_units(shape):
    y = torch.randn(*shape, generator=torch.Generator().manual_seed(1)) * 3 + 5
    pairing = openmix.build_pairing("cmixup")

    def draw(labels):
        return pairing(64, torch.Generator().manual_seed(2), y=labels)

    reference = draw(y)
    for scale in (2.0 ** -6, 2.0 ** 10):                                     # exact in floating point
        assert torch.equal(draw(y * scale), reference)
    assert torch.equal(draw(y - 5), reference)                                # and shifts do not matter
    assert (draw(y * 50) == reference).float().mean() > 0.95                 # rounding may move a rare tie
    with pytest.warns(UserWarning, match="becomes plain mixup"):              # raw units: another pairing
        assert not torch.equal(openmix.build_pairing("cmixup", sigma=1.0, sigma_units="raw")(
            64, torch.Generator().manual_seed(2), y=y * 2 ** -6), reference)


def test_relative_bandwidth_follows_the_kernel_of_sigma_times_std():
    scipy_stats = pytest.importorskip("scipy.stats")
    y = torch.tensor([0.0, 0.5, 1.0, 1.2, 3.0, 4.0]) * 40
    bandwidth = DEFAULT_SIGMA * y.double().std(correction=0) * 2.5            # sigma=0.5: 2.5 x the default
    pairing = openmix.build_pairing("cmixup", sigma=DEFAULT_SIGMA * 2.5)
    g = torch.Generator().manual_seed(0)
    batch = y.repeat(50)                          # each label 50 times: same spread, 300 rows
    counts = torch.zeros(6, 6)
    for _ in range(20):                           # 1000 draws per label, grouped by partner label
        index = pairing(batch.shape[0], g, y=batch)
        counts.index_put_((torch.arange(batch.shape[0]) % 6, index % 6), torch.ones(batch.shape[0]), accumulate=True)
    for i in range(6):
        w = torch.exp(-(y[i] - y).double() ** 2 / (2 * bandwidth ** 2))
        expected = w / w.sum() * counts[i].sum()
        keep = expected > 5
        observed = counts[i][keep].double()
        p = scipy_stats.chisquare(observed.numpy(), (expected[keep] * observed.sum() / expected[keep].sum()).numpy()).pvalue
        assert p > 1e-3, (i, counts[i], expected)


def test_whole_dataset_partners_use_the_spread_of_all_labels():
    y = torch.randn(301, generator=torch.Generator().manual_seed(3))
    streams = [KernelPartnerSampler(y * scale, batch_size=10, seed=0).indices() for scale in (1.0, 2.0 ** 7)]
    assert streams[0] == streams[1]
    pairing = KernelPairing(labels=y * 100)
    pairing.sample_epoch(torch.Generator().manual_seed(0))
    assert pairing._epoch_bandwidth == pytest.approx(DEFAULT_SIGMA * 100 * y.double().std(correction=0).item())


def test_default_is_relative_through_the_public_api():
    pairing = openmix.build_policy("mixup", pairing={"name": "cmixup"}).pairing
    assert (pairing.sigma, pairing.sigma_units) == (DEFAULT_SIGMA, "std")


@pytest.mark.parametrize("scale_index", range(len(SCALES)), ids=[f"labels_x{s:g}" for s in SCALES])
def test_default_cmixup_beats_mixup_and_erm_at_every_label_scale(scale_index):
    erm, mixup, cmixup = (results()[m][scale_index].mean().item() for m in ("erm", "mixup", "cmixup"))
    report = f"labels x{SCALES[scale_index]:g}: relative RMSE ERM {erm:.3f}, mixup {mixup:.3f}, C-Mixup {cmixup:.3f}"
    assert cmixup < MARGIN * erm, report
    assert cmixup < MARGIN * mixup, report


def test_an_absolute_bandwidth_fails_when_the_units_change():
    """The old default, sigma = 1 in label units, is 0.17 label stds at scale 1 but 8 stds at
    x0.02 and 0.003 stds at x50. At x0.02 its partners are nearly random and it trains no better
    than mixup (the check above fails); at x50 almost every row is its own partner, so it mixes
    (almost) nothing and is ERM, which the default beats above."""
    raw, mixup = (results()[m][0].mean().item() for m in ("cmixup_raw1", "mixup"))
    assert not raw < MARGIN * mixup, (raw, mixup)
    pairing = openmix.build_pairing("cmixup", sigma=1.0, sigma_units="raw")
    g = torch.Generator().manual_seed(0)
    gaps = {}
    for scale in (SCALES[0], SCALES[-1]):
        _, y, _, _ = single_index_task(scale, 0)
        y = y[:BATCH]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            index = pairing(BATCH, g, y=y)
        gaps[scale] = ((y[index] - y).abs().mean() / (y[:, None] - y).abs().mean()).item()   # vs random pairs
        if scale == SCALES[-1]:
            assert (index == torch.arange(BATCH)).float().mean() >= 0.9, index   # mixes (almost) nothing
    assert gaps[SCALES[0]] > 0.8, gaps


@pytest.mark.parametrize("sigma,words", [(20.0, "becomes plain mixup"), (0.005, "little mixing")])
def test_raw_bandwidth_far_from_the_label_spread_warns_once(sigma, words):
    y = torch.randn(64, generator=torch.Generator().manual_seed(0))       # spread ~1
    pairing = openmix.build_pairing("cmixup", sigma=sigma, sigma_units="raw")
    with pytest.warns(UserWarning, match=rf"sigma={sigma:g} is .* x the spread of the labels.*{words}"):
        pairing(64, torch.Generator(), y=y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pairing(64, torch.Generator(), y=y * 1000)                       # once per pairing
        openmix.build_pairing("cmixup", sigma=1.0, sigma_units="raw")(64, torch.Generator(), y=y)
        openmix.build_pairing("cmixup", sigma=sigma)(64, torch.Generator(), y=y)   # relative: no warning


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_relative_bandwidth_needs_no_host_sync_on_cuda():
    y = torch.randn(256, device="cuda")
    g = torch.Generator(device="cuda").manual_seed(0)
    pairing = openmix.build_pairing("cmixup")
    pairing(256, g, y=y)                                  # warm-up: first-call allocations may sync
    torch.cuda.set_sync_debug_mode("error")
    try:
        index = pairing(256, g, y=y)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert index.device.type == "cuda" and index.shape == (256,)
