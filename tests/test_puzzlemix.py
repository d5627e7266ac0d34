"""PuzzleMix: policy invariants, the labelling energy against the exact optimum, transport."""
import pytest
import torch
import torch.nn.functional as F

import openmix
from openmix.ops.puzzle import (block_saliency, boundary_differences, labelling_costs, labelling_energy,
                                move_blocks, solve_labelling, transport_order)
from openmix.policies.puzzlemix import PuzzleMix


def smooth_batch(b, h=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.rand(b, 3, 6, 6, generator=g), size=(h, h), mode="bilinear", align_corners=False)
    x = (x + 0.1 * torch.rand(b, 3, h, h, generator=g)).clamp(0, 1)
    s = F.interpolate(torch.rand(b, 1, 5, 5, generator=g) ** 3, size=(h, h), mode="bilinear",
                      align_corners=False).squeeze(1)
    y = torch.randint(0, 10, (b,), generator=g)
    return x, y, s, g


def random_problem(b, n, n_labels, seed):
    """Labelling problems of the sizes and scales PuzzleMix builds on 32x32 images."""
    x, _, s, g = smooth_batch(b, seed=seed)
    index = torch.randperm(b, generator=g)
    sal = block_saliency(s.double(), n)
    dv, dh = boundary_differences(x.double(), index, n, 4)
    prior = torch.rand(b, generator=g, dtype=torch.float64).clamp(0.02, 0.98)
    return labelling_costs(sal, sal[index], dv, dh, prior, n_labels)


# ------------------------------------------------------------------------------------ energy
@pytest.mark.parametrize("n_labels", [2, 3])
@pytest.mark.parametrize("n", [2, 4, 8, 16])
def test_energy_within_one_percent_of_exact_optimum(n, n_labels, record_property):
    """The batched solver against an exact min-cut (PyMaxflow; Ishikawa graph for 3 labels)."""
    reference = pytest.importorskip("puzzle_reference")
    pytest.importorskip("maxflow")
    b = 48 if n < 16 else 32
    unary, wv, wh = random_problem(b, n, n_labels, seed=10 * n + n_labels)
    exact = reference.solve_labelling_exact(unary, wv, wh)
    ours = solve_labelling(unary, wv, wh)
    e_exact = labelling_energy(exact, unary, wv, wh)
    e_ours = labelling_energy(ours, unary, wv, wh)
    gap = (e_ours - e_exact) / e_exact.abs()
    record_property("max_gap", float(gap.max()))
    record_property("mean_gap", float(gap.mean()))
    print(f"n={n} labels={n_labels}: max gap {float(gap.max()):.2e}, mean {float(gap.mean()):.2e}, "
          f"optimal in {float((gap <= 1e-9).double().mean()):.0%}")
    assert float(gap.min()) >= -1e-9, "the exact reference must not be beaten"
    assert float(gap.max()) < 0.01


def test_reference_matches_brute_force():
    reference = pytest.importorskip("puzzle_reference")
    pytest.importorskip("maxflow")
    for n_labels in (2, 3):
        unary, wv, wh = random_problem(32, 2, n_labels, seed=n_labels)
        codes = torch.arange(n_labels ** 4)
        cands = torch.stack([(codes // n_labels ** i) % n_labels for i in range(4)], -1).view(-1, 2, 2)
        energies = torch.stack([labelling_energy(c.expand(32, 2, 2), unary, wv, wh) for c in cands], 1)
        exact = reference.solve_labelling_exact(unary, wv, wh)
        assert torch.allclose(labelling_energy(exact, unary, wv, wh), energies.min(1).values, atol=1e-12)


def test_solver_is_batched_and_deterministic():
    unary, wv, wh = random_problem(16, 8, 3, seed=1)
    a = solve_labelling(unary, wv, wh)
    b = solve_labelling(unary, wv, wh)
    assert torch.equal(a, b) and a.shape == (16, 8, 8) and a.dtype == torch.long
    # solving rows one at a time gives the same labels: no coupling across the batch
    single = torch.cat([solve_labelling(unary[i:i + 1], wv[i:i + 1], wh[i:i + 1]) for i in range(3)])
    assert torch.equal(single, a[:3])


# --------------------------------------------------------------------------------- transport
def test_transport_identity_when_everything_visible():
    g = torch.Generator().manual_seed(0)
    sal = torch.rand(4, 4, 4, generator=g)
    sal = sal / sal.sum((1, 2), keepdim=True)
    src = transport_order(torch.ones(4, 4, 4, dtype=torch.bool), sal, eps=0.8)
    assert torch.equal(src, torch.arange(16).expand(4, 16))


def test_transport_moves_salient_block_into_visible_area():
    sal = torch.full((1, 4, 4), 0.001)
    sal[0, 0, 0] = 1.0                      # very salient block in a hidden corner
    visible = torch.zeros(1, 4, 4, dtype=torch.bool)
    visible[0, 1, 1] = True                 # the only visible position, next to it
    src = transport_order(visible, sal / sal.sum(), eps=0.8)
    assert int(src[0, 5]) == 0              # position (1, 1) now shows block (0, 0)
    x = torch.arange(16.).view(1, 1, 4, 4)
    moved = move_blocks(x, src, 4)
    assert moved[0, 0, 1, 1] == 0.0


# ------------------------------------------------------------------------------------ policy
@pytest.mark.parametrize("mode", ["batch", "elem"])
@pytest.mark.parametrize("n_labels", [2, 3])
def test_policy_invariants(mode, n_labels):
    x, y, s, _ = smooth_batch(9, seed=3)     # odd batch
    policy = openmix.build_policy("puzzlemix", n_labels=n_labels, mode=mode, seed=0)
    for step in range(4):
        mb = policy(x, y, generator=torch.Generator().manual_seed(step), saliency=s)
        assert mb.x.shape == x.shape and mb.x.dtype == x.dtype and mb.x.device == x.device
        assert mb.mask.shape == (9, 1, 32, 32) and mb.lam.shape == (9,) and mb.index.shape == (9,)
        assert torch.allclose(mb.lam.double(), mb.mask.double().mean(dim=(1, 2, 3)), atol=1e-6)
        levels = torch.linspace(0, 1, n_labels)
        assert bool(torch.isin(mb.mask.unique(), levels).all())
        # where the mask is 1 the pixel comes from the row's own (transported) image, where 0 from the partner
        assert float(mb.x.min()) >= 0.0 and float(mb.x.max()) <= 1.0
        t = mb.soft_targets(10)
        assert torch.allclose(t.sum(1), torch.ones(9))


def test_policy_determinism_with_seed():
    x, y, s, _ = smooth_batch(6, seed=4)
    a = PuzzleMix(seed=5)(x, y, saliency=s)
    b = PuzzleMix(seed=5)(x, y, saliency=s)
    assert torch.equal(a.x, b.x) and torch.equal(a.lam, b.lam) and torch.equal(a.index, b.index)
    c = PuzzleMix(seed=0)(x, y, generator=torch.Generator().manual_seed(9), saliency=s)
    d = PuzzleMix(seed=1)(x, y, generator=torch.Generator().manual_seed(9), saliency=s)
    assert torch.equal(c.x, d.x)


def test_without_transport_pixels_come_from_own_or_partner():
    x, y, s, _ = smooth_batch(8, seed=6)
    policy = PuzzleMix(transport=False, n_labels=2, seed=2)
    mb = policy(x, y, saliency=s)
    expected = mb.mask * x + (1 - mb.mask) * x[mb.index]
    assert torch.allclose(mb.x, expected)


def test_salient_regions_are_kept():
    # even rows are salient top-left, odd rows bottom-right; flip pairs an even row with an odd one:
    # each image must be shown where it is salient, the partner where the partner is
    b = 4
    x = torch.rand(b, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    s = torch.zeros(b, 32, 32)
    s[0::2, :16, :16] = 1.0
    s[1::2, 16:, 16:] = 1.0
    for n_labels in (2, 3):
        policy = PuzzleMix(grid_sizes=(4,), transport=False, n_labels=n_labels, pairing="flip", mode="elem", seed=0)
        mb = policy(x, torch.arange(b), saliency=s)
        own = (mb.mask[:, 0] * s).sum((1, 2)) / s.sum((1, 2))
        partner = ((1 - mb.mask[:, 0]) * s[mb.index]).sum((1, 2)) / s.sum((1, 2))
        assert bool((own > 0.5).all()) and bool((partner > 0.5).all()), (own, partner)


def test_normalised_inputs_and_unmixed_rows():
    x, y, s, _ = smooth_batch(5, seed=7)
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    xn = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    policy = PuzzleMix(mean=mean, std=std, p=0.0, seed=0)
    mb = policy(xn, y, saliency=s)
    assert torch.equal(mb.x, xn) and bool((mb.lam == 1).all())
    mb = PuzzleMix(mean=mean, std=std, mode="elem", seed=0)(xn, y, saliency=s)
    assert torch.allclose(mb.lam.double(), mb.mask.double().mean(dim=(1, 2, 3)), atol=1e-6)


def test_float64_and_224_grid():
    x, y, s, _ = smooth_batch(2, h=224, seed=8)
    mb = PuzzleMix(grid_sizes=(16,), seed=0)(x.double(), y, saliency=s.double())
    assert mb.x.dtype == torch.float64 and mb.lam.dtype == torch.float64
    assert torch.allclose(mb.lam, mb.mask.mean(dim=(1, 2, 3)))


def test_errors():
    x, y, s, _ = smooth_batch(4, seed=9)
    policy = PuzzleMix(seed=0)
    with pytest.raises(ValueError, match="needs the saliency"):
        policy(x, y)
    with pytest.raises(ValueError, match="saliency must have shape"):
        policy(x, y, saliency=s[:, :16])
    with pytest.raises(ValueError, match="n_labels must be 2 or 3"):
        PuzzleMix(n_labels=4)
    with pytest.raises(ValueError, match="grid_sizes"):
        PuzzleMix(grid_sizes=[])
    with pytest.raises(ValueError, match="divisible"):
        PuzzleMix(grid_sizes=(16,))(torch.rand(2, 3, 20, 20), torch.arange(2), saliency=torch.rand(2, 20, 20))
    with pytest.raises(ValueError, match="soft-target loss"):
        policy.check_loss(openmix.build_loss("ce"))
    policy.check_loss(openmix.build_loss("soft_ce"))
    assert policy.needs == "saliency"


def test_short_training_run(tmp_path):
    """End to end through the trainer (openmix.train.app.train) on an embedded dataset."""
    train_app = pytest.importorskip("openmix.train")
    fast = ["trainer.epochs=2", "trainer.batch_size=32", "trainer.progress=false", "trainer.summary=false",
            "trainer.tensorboard=false", "trainer.last_k=2", "model.width=8", "trainer.threads=1"]
    cfg = train_app.compose_config([*fast, f"trainer.out_dir={tmp_path / 'run'}", "data=synthetic", "mix=puzzlemix"])
    s = train_app.train(cfg)
    assert s["where"] == "engine" and s["final"]["top1"] > 50
    # clean_lam > 0: the clean-batch term joins the loss (a larger training loss than without it)
    cfg = train_app.compose_config([*fast, f"trainer.out_dir={tmp_path / 'clean'}", "data=synthetic",
                                    "mix=puzzlemix", "mix.clean_lam=5.0"])
    with_clean = train_app.train(cfg)
    assert with_clean["final"]["top1"] > 50 and with_clean["history"][0]["train_loss"] > s["history"][0]["train_loss"]


@pytest.mark.parametrize("adaptive", [True, False])
@pytest.mark.parametrize("levels", [2, 3])
def test_mix_moved_blocks_equals_moving_then_mixing(adaptive, levels):
    from openmix.ops.puzzle import mix_moved_blocks
    g = torch.Generator().manual_seed(3 + levels)
    x = torch.rand(5, 3, 16, 16, generator=g)
    index = torch.randperm(5, generator=g)
    src_own = torch.stack([torch.randperm(16, generator=g) for _ in range(5)])
    src_par = torch.stack([torch.randperm(16, generator=g) for _ in range(5)])
    weight = torch.randint(0, levels, (5, 16), generator=g).float() / (levels - 1)
    pixel_weight = weight.view(5, 4, 4).repeat_interleave(4, 1).repeat_interleave(4, 2).unsqueeze(1)
    expected = torch.lerp(move_blocks(x[index], src_par, 4), move_blocks(x, src_own, 4), pixel_weight)
    torch.testing.assert_close(mix_moved_blocks(x, index, src_own, src_par, weight, 4, adaptive=adaptive), expected)
    # a channels-last input gives the same pixels
    x_cl = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(mix_moved_blocks(x_cl, index, src_own, src_par, weight, 4, adaptive=adaptive), expected)


@pytest.mark.parametrize("adaptive", [True, False])
@pytest.mark.parametrize("t", [2, 4, 8, 16])
def test_transport_equals_full_matrix_greedy(t, adaptive):
    """The pruned, early-stopping transport gives exactly the authors' full-matrix greedy rounds."""
    from puzzle_reference import transport_order_full
    g = torch.Generator().manual_seed(t)
    for power in (1, 4, 12):                 # flat to peaked saliency: more blocks move when peaked
        sal = torch.rand(24, t, t, generator=g, dtype=torch.float64) ** power
        sal = sal / sal.sum((1, 2), keepdim=True)
        visible = F.interpolate(torch.rand(24, 1, 3, 3, generator=g), size=(t, t), mode="nearest")[:, 0] > 0.5
        ours = transport_order(visible, sal, eps=0.8, adaptive=adaptive)
        full = transport_order_full(visible, sal, eps=0.8)
        assert torch.equal(ours, full)
        if t > 2 and power == 12:
            assert (ours != torch.arange(t * t)).any(), "the check must include blocks that move"


def test_boundary_differences_against_pooled_images():
    """Both code paths (boundary strips for coarse grids, the pooled image for fine ones) against
    a direct computation from avg_pool2d of the whole image."""
    g = torch.Generator().manual_seed(5)
    x = torch.rand(3, 2, 64, 64, generator=g, dtype=torch.float64)
    index = torch.tensor([2, 0, 1])
    for grid in (2, 4, 8, 16):
        bh = 64 // grid
        d = min(4, bh)
        pooled = F.avg_pool2d(x, d)
        k = bh // d
        dv, dh = boundary_differences(x, index, grid, neigh_size=4)
        for i, src_a in enumerate((pooled[index], pooled)):
            for j, src_b in enumerate((pooled[index], pooled)):
                for r in range(grid - 1):
                    above = src_a[:, :, (r + 1) * k - 1, :]                 # (B, C, W/d)
                    below = src_b[:, :, (r + 1) * k, :]
                    expected = (above - below).abs().mean(1).view(3, grid, k).mean(-1)
                    torch.testing.assert_close(dv[:, i, j, r], expected)
                    left = src_a[:, :, :, (r + 1) * k - 1]
                    right = src_b[:, :, :, (r + 1) * k]
                    expected = (left - right).abs().mean(1).view(3, grid, k).mean(-1)
                    torch.testing.assert_close(dh[:, i, j, :, r], expected)


def test_saliency_pass_follows_the_authors_clean_lam():
    """clean_lam=0 (their default): eval-mode pass, BatchNorm statistics untouched, no loss term;
    clean_lam>0: train-mode pass and 2·clean_lam·CE/K added to the training loss."""
    import contextlib
    from openmix.train.engine import input_saliency
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4),
                                torch.nn.Flatten(), torch.nn.Linear(4 * 8 * 8, 5))
    x, y = torch.randn(6, 3, 8, 8) * 3 + 1, torch.arange(6) % 5
    before = model[1].running_mean.clone()
    s, extra = input_saliency(model, x, y, "classification", contextlib.nullcontext, clean_lam=0.0)
    assert extra is None and torch.equal(model[1].running_mean, before) and model.training
    model.eval()
    xe = x.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(model(xe), y).backward()
    model.train()
    assert torch.allclose(s, xe.grad.pow(2).mean(1).sqrt())              # the eval-mode gradient
    s1, extra1 = input_saliency(model, x, y, "classification", contextlib.nullcontext, clean_lam=1.0)
    assert not torch.equal(model[1].running_mean, before)                # train-mode pass
    ce = torch.nn.functional.cross_entropy(model(x), y)
    assert extra1.requires_grad and float(extra1.detach()) == pytest.approx(2.0 * float(ce.detach()) / 5, rel=1e-3)
    with pytest.raises(ValueError, match="clean_lam must be a finite number >= 0"):
        openmix.build_policy("puzzlemix", clean_lam=-1)
