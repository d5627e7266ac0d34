"""MixCollate (in the DataLoader workers) and DeviceMixer (after the copy)."""
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import openmix


class Images(Dataset):
    """Deterministic uint8 images with labels."""

    def __init__(self, n=24, dtype=torch.uint8):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8)
        if dtype != torch.uint8:
            self.x = self.x.to(dtype) / 255
        self.y = torch.randint(0, 10, (n,), generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def epoch_batches(loader, collate, epoch):
    collate.set_epoch(epoch)
    return [(mb.x.clone(), mb.index.clone(), mb.lam.clone()) for mb in loader]


def same(a, b):
    return all(torch.equal(p, q) for u, v in zip(a, b) for p, q in zip(u, v))


@pytest.mark.parametrize("persistent", [False, True])
def test_workers_repeat_exactly_and_epochs_differ(persistent):
    policy = openmix.build_policy("cutmix", mode="elem")
    collate = openmix.MixCollate(policy, seed=5)
    loader = DataLoader(Images(), batch_size=6, num_workers=2, collate_fn=collate,
                        persistent_workers=persistent)
    e0, e1 = epoch_batches(loader, collate, 0), epoch_batches(loader, collate, 1)
    assert not same(e0, e1), "epoch 1 repeated epoch 0's mixes"
    fresh_collate = openmix.MixCollate(openmix.build_policy("cutmix", mode="elem"), seed=5)
    fresh = DataLoader(Images(), batch_size=6, num_workers=2, collate_fn=fresh_collate)
    assert same(epoch_batches(fresh, fresh_collate, 0), e0)
    assert same(epoch_batches(fresh, fresh_collate, 1), e1)
    other_collate = openmix.MixCollate(openmix.build_policy("cutmix", mode="elem"), seed=6)
    other = DataLoader(Images(), batch_size=6, num_workers=2, collate_fn=other_collate)
    assert not same(epoch_batches(other, other_collate, 0), e0)


def test_uint8_fast_path_rounds_the_float_mix():
    ds = Images()
    collate = openmix.MixCollate(openmix.build_policy("mixup", mode="elem"), seed=1)
    mb = collate([ds[i] for i in range(6)])
    assert mb.x.dtype == torch.uint8 and mb.y.dtype == torch.long
    ref = openmix.build_policy("mixup", mode="elem")(ds.x[:6].float(), ds.y[:6],
                                                     generator=openmix.data.derive_generator(1, 0, 0))
    assert torch.equal(mb.x, ref.x.round().to(torch.uint8))
    assert torch.equal(mb.lam, ref.lam)


@pytest.mark.parametrize("name", ["mixup", "cutmix", "fmix", "resizemix"])
def test_collate_path_and_device_path_agree(name):
    ds = Images()
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    collate = openmix.MixCollate(openmix.build_policy(name, mode="elem"), seed=3)
    mixer = openmix.DeviceMixer(openmix.build_policy(name, mode="elem"), device="cpu", mean=mean, std=std, seed=3)
    for epoch in (0, 2):
        collate.set_epoch(epoch)
        mixer.set_epoch(epoch)
        via_collate = collate([ds[i] for i in range(8)])
        via_device = mixer(ds.x[:8], ds.y[:8])
        assert torch.equal(via_collate.index, via_device.index)
        assert torch.equal(via_collate.lam, via_device.lam)
        normalised = mixer.normalise(via_collate.x)
        # the collate path rounds to uint8: at most half a grey level apart
        tol = 0.5 / 255 / min(std) + 1e-5
        assert (normalised - via_device.x).abs().max() <= tol


def test_device_mixer_normalises_and_prefetcher_iterates():
    ds = Images()
    mixer = openmix.DeviceMixer(openmix.build_policy("vanilla"), device="cpu", mean=(0.5,), std=(0.25,))
    mb = mixer(ds.x[:2], ds.y[:2])
    torch.testing.assert_close(mb.x, (ds.x[:2].float() / 255 - 0.5) / 0.25)
    loader = DataLoader(Images(), batch_size=5)
    batches = list(openmix.DevicePrefetcher(loader, mixer))
    assert len(batches) == 5 and batches[-1].x.shape[0] == 4
    with pytest.raises(ValueError, match="mean has 2 values but x has 3 channels"):
        openmix.DeviceMixer(openmix.build_policy("vanilla"), mean=(0.1, 0.2))(ds.x[:2], ds.y[:2])
    with pytest.raises(ValueError, match="std must be positive"):
        openmix.DeviceMixer(openmix.build_policy("vanilla"), std=(0.0,))


def test_collate_accepts_float_inputs_and_keeps_mask_on_request():
    ds = Images(dtype=torch.float32)
    collate = openmix.MixCollate(openmix.build_policy("fmix", mode="elem"), seed=0, keep_mask=True)
    mb = collate([ds[i] for i in range(4)])
    assert mb.x.dtype == torch.float32 and mb.mask.shape == (4, 1, 8, 8)
    assert openmix.MixCollate(openmix.build_policy("fmix"), seed=0)([ds[i] for i in range(4)]).mask is None


def test_pinned_memory_loader_accepts_mixed_batches():
    # DataLoader(pin_memory=True) calls MixedBatch.pin_memory; it needs an accelerator to pin
    mb = openmix.MixCollate(openmix.build_policy("mixup"), seed=0)([Images()[i] for i in range(3)])
    moved = mb.to("cpu")
    assert torch.equal(moved.x, mb.x) and moved.mask is None


def test_for_x_target_in_loader_unpacks_a_mixed_batch():
    """``x, target = mb`` gives the mixed input and the MixedBatch itself: the usual loop works
    with an openmix loss, and a plain cross-entropy on it fails instead of ignoring the mix."""
    collate = openmix.MixCollate(openmix.build_policy("mixup", mode="elem"), seed=0)
    loader = DataLoader(Images(dtype=torch.float32), batch_size=6, collate_fn=collate)
    loss_fn = openmix.build_loss("soft_ce")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
    for x, target in loader:
        assert isinstance(target, openmix.MixedBatch) and x is target.x
        loss = loss_fn(model(x), target)
        assert loss.ndim == 0 and torch.isfinite(loss)
    with pytest.raises(TypeError):
        torch.nn.functional.cross_entropy(model(x), target)
