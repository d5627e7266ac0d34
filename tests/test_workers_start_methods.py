"""MixCollate under every worker start method: picklable, seeded per worker, epochs reach
persistent workers, and the same seed gives the same batches under fork, spawn and forkserver."""
import copy
import multiprocessing
import pickle

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import openmix

METHODS = [m for m in ("fork", "spawn", "forkserver") if m in multiprocessing.get_all_start_methods()]


def dataset() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 8, 8), generator=g, dtype=torch.uint8)
    return TensorDataset(images, torch.randint(0, 10, (16,), generator=g))


def two_epochs(method: str, seed: int = 3) -> list:
    """Every batch's (x, index, lam) of epochs 0 and 1 through 2 persistent workers."""
    policy = openmix.build_policy("choice", policies=[{"name": "cutmix", "mode": "elem"}, {"name": "mixup"}], seed=1)
    collate = openmix.MixCollate(policy, seed=seed)
    loader = DataLoader(dataset(), batch_size=4, num_workers=2, collate_fn=collate, persistent_workers=True,
                        multiprocessing_context=method)
    batches = []
    for epoch in (0, 1):
        collate.set_epoch(epoch)
        batches.append([(mb.x, mb.index, mb.lam) for mb in loader])
    return batches


def same(a, b) -> bool:
    return all(torch.equal(p, q) for u, v in zip(a, b) for p, q in zip(u, v)) and len(a) == len(b)


def in_main_process(seed: int = 3) -> list:
    """The batches computed without workers: batch k is drawn by worker k % 2 (DataLoader's order),
    each worker from one generator per epoch derived from (seed, worker id, epoch)."""
    policy = openmix.build_policy("choice", policies=[{"name": "cutmix", "mode": "elem"}, {"name": "mixup"}], seed=1)
    data = dataset()
    out = []
    for epoch in (0, 1):
        rows, generators = [], [openmix.data.derive_generator(seed, worker, epoch) for worker in (0, 1)]
        for k in range(4):
            x, y = data[4 * k:4 * k + 4]
            mb = policy(x.float(), y, generator=generators[k % 2])
            rows.append((mb.x.round().clamp(0, 255).to(torch.uint8), mb.index, mb.lam))
        out.append(rows)
    return out


@pytest.fixture(scope="module")
def reference():
    return in_main_process()


@pytest.mark.parametrize("method", METHODS)
def test_same_batches_under_every_start_method(method, reference):
    batches = two_epochs(method)
    for epoch in (0, 1):
        assert same(batches[epoch], reference[epoch]), f"{method}: epoch {epoch} differs from the per-worker draws"
    assert not same(batches[0], batches[1]), f"{method}: set_epoch did not reach the persistent workers"


def test_collate_pickles_with_its_policy_generator_state():
    policy = openmix.build_policy("mixup", seed=7)
    policy(torch.rand(4, 3, 8, 8), torch.arange(4))            # advance the policy's own generator
    collate = openmix.MixCollate(policy, seed=2)
    collate.set_epoch(5)
    clone = pickle.loads(pickle.dumps(collate))
    assert clone.epoch == 5 and clone.seed == 2
    assert torch.equal(clone.policy.generator.get_state(), policy.generator.get_state())
    x, y = torch.rand(4, 3, 8, 8), torch.arange(4)
    assert torch.equal(clone.policy(x, y).x, policy(x, y).x)    # draws from the restored own generator
    assert torch.equal(copy.deepcopy(collate)([(x[i], y[i]) for i in range(4)]).x,
                       collate([(x[i], y[i]) for i in range(4)]).x)
