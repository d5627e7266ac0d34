"""C-Mixup partners drawn from the whole training set: KernelPartnerSampler + "halves" pairing."""
import math

import pytest
import torch
from scipy.stats import chisquare

import openmix
from openmix.data import KernelPartnerSampler


def test_batches_hold_anchors_then_their_partners():
    y = torch.randn(101, generator=torch.Generator().manual_seed(0))
    sampler = KernelPartnerSampler(y, batch_size=10, sigma=0.1, seed=0)
    stream = sampler.indices()
    assert len(stream) == len(sampler) == 102
    batches = [stream[i:i + 10] for i in range(0, len(stream), 10)]
    anchors = [i for b in batches for i in b[:len(b) // 2]]
    assert len(anchors) == len(set(anchors)) == 51               # ceil(N/2) distinct anchors
    gaps = [abs(float(y[b[k]] - y[b[k + len(b) // 2]])) for b in batches for k in range(len(b) // 2)]
    assert sum(gaps) / len(gaps) < 0.15                           # partners are near in label
    sampler.set_epoch(1)
    assert sampler.indices() != stream                            # a new draw every epoch
    shards = [KernelPartnerSampler(y, 10, sigma=0.1, seed=0, rank=r, world_size=2).indices() for r in range(2)]
    shard_anchors = [set(s[i] for j in range(0, len(s), 10) for i in range(j, j + len(s[j:j + 10]) // 2))
                     for s in shards]
    assert not shard_anchors[0] & shard_anchors[1] and len(shard_anchors[0] | shard_anchors[1]) == 51


def test_partners_follow_the_kernel_over_the_whole_set():
    labels = torch.tensor([0.0, 0.1, 0.5, 1.0, 1.1, 3.0])
    sigma = 0.5
    counts = torch.zeros(6, 6)
    sampler = KernelPartnerSampler(labels, batch_size=2, sigma=sigma, sigma_units="raw", seed=3)
    for epoch in range(1500):
        sampler.set_epoch(epoch)
        s = sampler.indices()
        for a, p in zip(s[0::2], s[1::2]):
            counts[a, p] += 1
    for i in range(6):
        w = torch.exp(-(labels[i] - labels) ** 2 / (2 * sigma ** 2))
        expected = w / w.sum() * counts[i].sum()
        keep = expected > 5                                        # chi-square needs expected counts >= 5
        if keep.sum() < 2:                                         # the isolated label 3.0 pairs with itself
            assert counts[i, i] >= 0.99 * counts[i].sum()
            continue
        observed = counts[i][keep]
        exp = expected[keep] * observed.sum() / expected[keep].sum()
        assert chisquare(observed.numpy(), exp.numpy()).pvalue > 1e-3, i


def test_halves_pairing_is_an_involution():
    g = torch.Generator()
    for b in (1, 2, 7, 10):
        index = openmix.build_pairing("halves")(b, g)
        assert torch.equal(index[index], torch.arange(b))
    assert openmix.build_pairing("halves")(6, g).tolist() == [3, 4, 5, 0, 1, 2]


def test_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size must be an even int >= 2"):
        KernelPartnerSampler(torch.zeros(4), batch_size=5, sigma=1.0)


def test_trainer_runs_whole_dataset_cmixup(tmp_path):
    from openmix.train.app import compose_config, train
    cfg = compose_config(["data=diabetes", "mix=cmixup", "mix.pairing.scope=dataset", "trainer.epochs=2",
                          "trainer.progress=false", f"trainer.out_dir={tmp_path}"])
    summary = train(cfg)
    assert summary["task"] == "regression" and math.isfinite(summary["final"]["rmse"])
    cfg = compose_config(["data=diabetes", "mix=cmixup", "mix.pairing.scope=dataset", "trainer.batch_size=31",
                          f"trainer.out_dir={tmp_path / 'odd'}"])
    with pytest.raises(ValueError, match="even trainer.batch_size"):
        train(cfg)
