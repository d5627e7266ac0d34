"""Learned mixers (automix, samix, adautomix): mixer output contract, where gradients flow, the
networks against hand computations, seeding, exact resume, timm CNNs, refusals, the mask figure."""
import contextlib
import math
import shutil

import pytest
import torch
import torch.nn.functional as F

import openmix
from openmix.features import MixNet
from openmix.policies.learned_mixer import (MultiMixBlock, PairMixBlock, mask_ratio_loss, mixed_label,
                                            rescale_lam, soft_cross_entropy)
from openmix.policies.samix import eta_balanced_loss
from openmix.train import compose_config, train
from openmix.train.engine import EngineContext
from openmix.train.models import SmallCNN

@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: intra-op threads only add synchronisation (100x slower on a busy 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


POLICIES = [("automix", {}), ("samix", {}), ("adautomix", {}), ("adautomix", {"mix_samples": 2})]
IDS = ["automix", "samix", "adautomix3", "adautomix2"]


def make_ctx(num_classes=4, channels=3, seed=0):
    torch.manual_seed(seed)
    model = SmallCNN(channels, num_classes, width=8)
    net = MixNet(model)
    return EngineContext(model=model, net=net, forward=net, loss_fn=openmix.build_loss("soft_ce"),
                         autocast=contextlib.nullcontext, device=torch.device("cpu"), task="classification",
                         num_classes=num_classes)


def batch(seed=0, b=8, num_classes=4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, 8, 8, generator=g), torch.randint(0, num_classes, (b,), generator=g)


def ready(name, kwargs, seed=1, ctx=None):
    ctx = ctx or make_ctx()
    policy = openmix.build_policy(name, seed=seed, **kwargs)
    policy.setup(ctx)
    return policy, ctx


@pytest.mark.parametrize("name,kwargs", POLICIES, ids=IDS)
def test_masks_in_unit_interval_sum_to_one_and_label_weights_are_mask_means(name, kwargs):
    policy, ctx = ready(name, kwargs)
    x, y = batch()
    out = policy.step_losses(x, y, ctx)
    k = policy.num_samples
    for masks in (out.mixer_masks, out.classifier_masks):
        assert masks.shape == (8, k, 8, 8)
        assert masks.min() >= 0 and masks.max() <= 1
        torch.testing.assert_close(masks.sum(dim=1), torch.ones(8, 8, 8))
    mb, masks = out.batch, out.classifier_masks
    means = masks.flatten(2).mean(dim=2)
    if k == 2:                      # the MixedBatch contract: lam == mask.mean per row
        torch.testing.assert_close(mb.mask, masks[:, :1])
        torch.testing.assert_close(mb.lam, mb.mask.flatten(1).mean(dim=1))
        assert bool((mb.index != torch.arange(8)).any())
    else:                           # K-way soft labels: sum_k mean(mask_k) one_hot(y[partner_k])
        soft = mb.y
        assert soft.shape == (8, 4) and torch.allclose(soft.sum(dim=1), torch.ones(8))
        mixed = float(soft.max(dim=1).values.min())
        assert mixed < 1.0                       # some row really holds several labels
        # the own label's weight is at least the own mask's mean (more if a partner shares the class)
        assert bool((soft.gather(1, y.view(-1, 1)).squeeze(1) >= means[:, 0] - 1e-6).all())
    assert mb.x.shape == x.shape and torch.isfinite(out.classifier_loss) and torch.isfinite(out.mixer_loss)


@pytest.mark.parametrize("name,kwargs", POLICIES, ids=IDS)
def test_gradients_reach_the_mixer_only_and_the_classifier_loss_not_the_mixer(name, kwargs):
    policy, ctx = ready(name, kwargs)
    x, y = batch()
    out = policy.step_losses(x, y, ctx)
    mixer_params = list(policy.mixer.parameters())
    classifier_params = list(ctx.model.parameters())
    assert not any(p.requires_grad for p in policy.encoder.module.parameters())   # momentum encoder frozen
    # the mixer's loss: gradient to every mixer parameter, none to the classifier
    grads = torch.autograd.grad(out.mixer_loss, mixer_params + classifier_params, allow_unused=True, retain_graph=True)
    assert all(g is not None for g in grads[:len(mixer_params)])
    assert sum(float(g.abs().sum()) for g in grads[:len(mixer_params)]) > 0
    assert all(g is None for g in grads[len(mixer_params):])
    # the classifier's loss: nothing reaches the mixer (its masks are detached), the classifier gets it
    grads = torch.autograd.grad(out.classifier_loss, mixer_params + classifier_params, allow_unused=True)
    assert all(g is None for g in grads[:len(mixer_params)])
    assert all(g is not None for g in grads[len(mixer_params):])
    assert out.mixer_masks.requires_grad and not out.classifier_masks.requires_grad
    assert not out.batch.x.requires_grad


@pytest.mark.parametrize("name,kwargs", POLICIES, ids=IDS)
def test_training_step_leaves_the_classifier_grads_to_the_engine_and_after_step_trains_the_mixer(name, kwargs):
    policy, ctx = ready(name, kwargs)
    x, y = batch()
    before = [p.detach().clone() for p in policy.mixer.parameters()]
    encoder_before = [p.clone() for p in policy.encoder.module.parameters()]
    mb, loss = policy.training_step(x, y, ctx)
    assert all(p.grad is None for p in ctx.model.parameters())
    assert all(p.grad is not None for p in policy.mixer.parameters())
    loss.backward()                                  # the engine's part: the classifier's gradient
    with torch.no_grad():
        for p in ctx.model.parameters():
            p.sub_(0.1 * p.grad)
    policy.after_step()
    assert policy.steps == 1
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.mixer.parameters()))
    assert all(p.grad is None for p in policy.mixer.parameters())
    # the momentum encoder moved towards the classifier (decay warm-up: (1 + 1) / (10 + 1))
    decay = min(policy.ema_decay, 2 / 11)
    for e0, e1, m in zip(encoder_before, policy.encoder.module.parameters(), ctx.model.parameters()):
        torch.testing.assert_close(e1, decay * e0 + (1 - decay) * m.detach())


@pytest.mark.parametrize("name,kwargs", POLICIES, ids=IDS)
def test_seeded_steps_repeat_and_seeds_differ(name, kwargs):
    x, y = batch()
    losses = []
    for seed in (3, 3, 4):
        policy, ctx = ready(name, kwargs, seed=seed, ctx=make_ctx(seed=0))
        out = policy.step_losses(x, y, ctx)
        losses.append((out.classifier_masks, float(out.mixer_loss.detach())))
    torch.testing.assert_close(losses[0][0], losses[1][0])
    assert losses[0][1] == losses[1][1]
    assert not torch.equal(losses[0][0], losses[2][0])


def test_pair_mix_block_equals_a_hand_computed_cross_attention():
    torch.manual_seed(0)
    block = PairMixBlock(channels=3, reduction=1, lam_concat=True, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for p in block.parameters():
            p.normal_()
    feats, index, lam = torch.randn(2, 3, 2, 2), torch.tensor([1, 0]), torch.tensor([0.3, 0.8])
    out = block(feats, index, lam)
    wq, bq, wv, bv = block.query.weight, block.query.bias, block.value.weight, block.value.bias
    for b in range(2):
        own = [torch.cat([feats[b, :, i // 2, i % 2], lam[b:b + 1]]) for i in range(4)]
        partner = [torch.cat([feats[index[b], :, i // 2, i % 2], 1 - lam[b:b + 1]]) for i in range(4)]
        for i in range(4):
            q = wq @ own[i] + bq
            scores = torch.stack([q @ (wq @ partner[j] + bq) / math.sqrt(3) for j in range(4)])
            weights = scores.softmax(dim=0)
            expected = sum(weights[j] * (wv @ partner[j] + bv) for j in range(4))
            torch.testing.assert_close(out[b, 0, i // 2, i % 2], expected.squeeze(), rtol=1e-5, atol=1e-5)


def test_multi_mix_block_attends_to_the_sum_of_the_other_samples_keys():
    block = MultiMixBlock(channels=2, reduction=1, lam_concat=False, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(generator=torch.Generator().manual_seed(p.numel()))
    feats = torch.randn(3, 2, 1, 3)
    indices, lams = torch.tensor([[0, 1, 2], [1, 2, 0], [2, 0, 1]]), torch.full((3, 3), 1 / 3)
    out = block(feats, indices, lams)
    pos = feats.flatten(2).transpose(1, 2)                       # (B, N, C)
    for b in range(3):
        samples = [pos[indices[b, k]] for k in range(3)]
        keys = [block.key(s) for s in samples]
        for k in range(3):
            other = sum(keys[j] for j in range(3) if j != k)
            attn = (block.query(samples[k]) @ other.T / math.sqrt(2)).softmax(dim=-1)
            torch.testing.assert_close(out[b, k].flatten(), (attn @ block.value(samples[k])).flatten())


def test_eta_balanced_loss_splits_the_mixup_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits, lam = torch.randn(6, 5, generator=g), torch.rand(6, generator=g)
    a, b = torch.tensor([0, 1, 2, 3, 4, 2]), torch.tensor([1, 1, 4, 0, 2, 3])   # row 1: a == b
    targets = lam.view(-1, 1) * F.one_hot(a, 5) + (1 - lam.view(-1, 1)) * F.one_hot(b, 5)
    # eta = 1: exactly the mixup soft cross-entropy
    torch.testing.assert_close(eta_balanced_loss(logits, a, b, lam, 1.0), soft_cross_entropy(logits, targets))
    # eta = 0: the two-class cross-entropy only (a == b rows: 0); by hand for each row
    local = []
    for i in range(6):
        if a[i] == b[i]:
            local.append(torch.tensor(0.0))
            continue
        two = torch.stack([logits[i, a[i]], logits[i, b[i]]]).log_softmax(dim=0)
        local.append(-(lam[i] * two[0] + (1 - lam[i]) * two[1]))
    torch.testing.assert_close(eta_balanced_loss(logits, a, b, lam, 0.0), torch.stack(local).mean())
    # global: -log(p_a + p_b)
    p = logits.softmax(dim=1)
    pair = torch.where(a == b, p.gather(1, a.view(-1, 1)).squeeze(1),
                       p.gather(1, a.view(-1, 1)).squeeze(1) + p.gather(1, b.view(-1, 1)).squeeze(1))
    torch.testing.assert_close(eta_balanced_loss(logits, a, b, lam, 0.5) - eta_balanced_loss(logits, a, b, lam, 0.0),
                               0.5 * (-pair.log()).mean())


def test_rescale_lam_and_mask_ratio_loss_by_hand():
    lam = torch.tensor([0.0, 0.25, 0.5, 1.0])
    # c = 1.25: (4/3 * 0.015625 - 2 * 0.0625 + 1.25 * 0.25) / (1.25 - 2/3) = 0.2083333 / 0.5833333
    torch.testing.assert_close(rescale_lam(lam, 0.25), torch.tensor([0.0, 0.2083333 / 0.5833333, 0.5, 1.0]))
    own = torch.stack([torch.full((1, 2, 2), 0.5), torch.full((1, 2, 2), 0.9)])
    # |0.5 - 0.3| - 0.1 = 0.1; |0.9 - 0.85| - 0.1 < 0 -> 0
    torch.testing.assert_close(mask_ratio_loss(own, torch.tensor([0.3, 0.85]), 0.1), torch.tensor(0.05))
    labels = mixed_label(torch.tensor([0, 1]), torch.tensor([[0, 1], [1, 1]]),
                         torch.tensor([[0.7, 0.3], [0.4, 0.6]]), 3)
    torch.testing.assert_close(labels, torch.tensor([[0.7, 0.3, 0.0], [0.0, 1.0, 0.0]]))


def test_lam_margin_and_unmixed_rows_use_constant_masks():
    policy, ctx = ready("automix", {"lam_margin": 0.49, "mode": "elem"})     # nearly every row is "extreme"
    x, y = batch()
    out = policy.step_losses(x, y, ctx)
    masks = out.classifier_masks
    constant = (masks.flatten(2).std(dim=2) < 1e-7).all(dim=1)
    assert int(constant.sum()) >= 7
    policy, ctx = ready("adautomix", {"p": 0.0 + 1e-9, "mode": "elem"})
    out = policy.step_losses(x, y, ctx)
    torch.testing.assert_close(out.batch.y, F.one_hot(y, 4).float())       # no row mixed: own label only


ARGS = ["data=synthetic", "model.width=8", "trainer.epochs=3", "trainer.batch_size=32", "trainer.progress=false",
        "trainer.summary=false", "trainer.tensorboard=false", "trainer.threads=1", "trainer.deterministic=true",
        "seed=2", "eval.calibration=false"]


@pytest.mark.parametrize("name", ["automix", "samix", "adautomix"])
def test_engine_run_resumes_exactly(tmp_path, name):
    full = train(compose_config([*ARGS, f"mix={name}", f"trainer.out_dir={tmp_path / 'full'}"]))
    assert full["where"] == "engine" and full["final"]["top1"] > 40
    part = tmp_path / "part"
    shutil.copytree(tmp_path / "full", part)
    (part / "checkpoints" / "last.pt").unlink()     # last.prev.pt (epoch 2) is then the newest intact one
    resumed = train(compose_config([*ARGS, f"mix={name}", f"trainer.out_dir={part}", "trainer.resume=true"]))
    assert resumed["resumed_from_epoch"] == 2
    drop = {"train_seconds", "eval_seconds", "samples_per_second"}
    assert [{k: v for k, v in h.items() if k not in drop} for h in resumed["history"]] == \
           [{k: v for k, v in h.items() if k not in drop} for h in full["history"]]
    a = torch.load(tmp_path / "full" / "checkpoints" / "last.pt", weights_only=True)["per_rank"][0]["policy"]
    b = torch.load(part / "checkpoints" / "last.pt", weights_only=True)["per_rank"][0]["policy"]
    for key in a["mixer"]:
        assert torch.equal(a["mixer"][key], b["mixer"][key]), key
    for key in a["encoder"]["module"]:
        assert torch.equal(a["encoder"]["module"][key], b["encoder"]["module"][key]), key
    assert a["steps"] == b["steps"] and a["snapshots"]["epochs"] == b["snapshots"]["epochs"] == [0, 1, 2, 3]


@pytest.mark.parametrize("name", ["automix", "samix", "adautomix"])
def test_tiny_timm_resnet_trains_a_step(tmp_path, name):
    pytest.importorskip("timm")
    s = train(compose_config([*ARGS, f"mix={name}", "model.name=resnet10t", "model.width=null", "trainer.epochs=1",
                              "data.num_train=72", "data.num_test=16", f"trainer.out_dir={tmp_path}"]))
    assert len(s["history"]) == 1 and math.isfinite(s["history"][0]["train_loss"])
    ck = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["per_rank"][0]["policy"]
    # stage -2 of a timm ResNet is layer3 (256 channels); the masks cover the 8x8 input
    assert ck["snapshots"]["masks"][0].shape[-2:] == (8, 8)
    assert any(v.shape[-1] in (256, 257, 512) for v in ck["mixer"].values() if v.ndim == 2)


def test_refusals_name_the_argument():
    bad = [("automix", {"feature_stage": 0}, "feature_stage"), ("automix", {"upsample": "cubic"}, "upsample"),
           ("automix", {"lam_margin": 0.5}, "lam_margin"), ("samix", {"value_dropout": 1.0}, "value_dropout"),
           ("adautomix", {"mix_samples": 1}, "mix_samples"), ("adautomix", {"mode": "pair"}, "mode"),
           ("automix", {"ema_decay": 1.0}, "ema_decay"), ("samix", {"eta": -1}, "eta")]
    for name, kwargs, word in bad:
        with pytest.raises(ValueError, match=word):
            openmix.build_policy(name, **kwargs)
    with pytest.raises(TypeError, match="trains with the model"):
        openmix.build_policy("automix")(*batch())
    policy = openmix.build_policy("automix", feature_stage=5)
    with pytest.raises(ValueError, match="feature_stage must be in 1..3"):
        policy.setup(make_ctx())
    ctx = make_ctx()
    ctx.task = "regression"
    with pytest.raises(ValueError, match="classification"):
        openmix.build_policy("samix").setup(ctx)
    with pytest.raises(ValueError, match="decoupled"):
        openmix.build_policy("adautomix").check_loss(openmix.build_loss("decoupled"))
    openmix.build_policy("adautomix", mix_samples=2).check_loss(openmix.build_loss("decoupled"))


def test_trainer_refuses_the_mlp_and_the_decoupled_loss_with_three_samples(tmp_path):
    from openmix.train.settings import ConfigError
    with pytest.raises(ValueError, match="convolutional model"):
        train(compose_config([*ARGS, "mix=automix", "model=mlp", f"trainer.out_dir={tmp_path / 'a'}"]))
    with pytest.raises(ConfigError, match="decoupled"):
        train(compose_config([*ARGS, "mix=adautomix", "loss=decoupled", f"trainer.out_dir={tmp_path / 'b'}"]))


def test_snapshots_keep_powers_of_two_and_the_latest():
    policy, ctx = ready("automix", {})
    policy.training_step(*batch(), ctx)
    for epoch in range(7):
        policy.set_epoch(epoch)
        policy.state_dict()
    assert policy.state_dict()["snapshots"]["epochs"] == [0, 1, 2, 4, 7]
    masks = policy.state_dict()["snapshots"]["masks"]
    assert all(m.shape == (8, 2, 8, 8) and m.dtype == torch.float16 for m in masks)


def test_mask_figure_from_a_run(tmp_path):
    from openmix.bench.learned_masks import load_mask_history, main, mixed_images
    train(compose_config([*ARGS, "mix=adautomix", "trainer.epochs=2", f"trainer.out_dir={tmp_path}"]))
    history = load_mask_history(tmp_path)
    assert history.epochs == (0, 1, 2) and history.masks.shape == (3, 8, 3, 8, 8)
    # the mixed probe images are the mask-weighted sums of the probe rows
    x = history.probe_x
    by_hand = sum(history.masks[2, 1, k] * x[history.indices[1, k]] for k in range(3))
    torch.testing.assert_close(mixed_images(history)[2, 1], by_hand)
    path = main([str(tmp_path), "--samples", "3"])
    assert path == tmp_path / "learned_masks.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit):
        main([str(tmp_path / "nowhere")])
