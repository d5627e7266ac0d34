"""RegMixup, RankMixup, SUMix and AttentiveMix: their losses against the authors' formulas (hand
cases and loops written from the released code), and the steps against independent recomputation."""
import contextlib
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import openmix
from openmix.features import MixNet
from openmix.policies.attentivemix import activation_grid, top_cells_mask
from openmix.policies.rankmixup import margin_ranking_loss, mixup_ndcg_loss
from openmix.policies.sumix import semantic_distance, sumix_lambda, uncertainty_loss


class Tiny(nn.Module):
    """No normalisation layers, so one forward of a concatenated batch equals two forwards."""

    def __init__(self, k=5):
        super().__init__()
        torch.manual_seed(0)
        self.stages = nn.ModuleList([nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())])
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, k))

    def forward(self, x):
        return self.head(self.stages[0](x))


def make_ctx(model, k=5):
    net = MixNet(model)
    return SimpleNamespace(model=model, net=net, forward=net, loss_fn=openmix.build_loss("soft_ce"),
                           autocast=contextlib.nullcontext, device=torch.device("cpu"), task="classification",
                           num_classes=k, epoch=0)


def soft_ce(logits, targets):
    return torch.sum(-targets * F.log_softmax(logits, 1), 1).mean()


def batch(b=8, k=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 1, 6, 6, generator=g), torch.randint(0, k, (b,), generator=g)


# ---- RegMixup ------------------------------------------------------------------------------------------------
def test_regmixup_loss_is_clean_ce_plus_eta_mixed():
    model, (x, y) = Tiny(), batch()
    ctx = make_ctx(model)
    policy = openmix.build_policy("regmixup", eta=0.7, mode="elem", seed=0)
    mb, loss = policy.training_step(x, y, ctx)
    lam = mb.lam.view(-1, 1, 1, 1)
    torch.testing.assert_close(mb.x, lam * x + (1 - lam) * x[mb.index])
    assert 0.2 < float(mb.lam.mean()) < 0.8                        # Beta(20, 20) stays near 0.5
    z = model(mb.x)
    mixed = mb.lam[:, None] * F.one_hot(y, 5) + (1 - mb.lam[:, None]) * F.one_hot(y[mb.index], 5)
    torch.testing.assert_close(loss, F.cross_entropy(model(x), y) + 0.7 * soft_ce(z, mixed))
    off = openmix.build_policy("regmixup", p=0.0, seed=0)          # mixing off: the clean loss only
    _, clean_only = off.training_step(x, y, ctx)
    torch.testing.assert_close(clean_only, F.cross_entropy(model(x), y))


# ---- RankMixup -----------------------------------------------------------------------------------------------
def test_margin_ranking_loss_hand_case():
    clean = torch.tensor([3.0, 1.0])
    mixed = torch.tensor([[2.5, 2.0]])
    weight = torch.tensor([[0.7, 1.0]])                             # row 1 mixed with its own class: skipped
    # row 0: max(0, 2.5 - 3 + 1) = 0.5; the mean runs over both rows (authors' code)
    assert float(margin_ranking_loss(clean, mixed, weight, margin=1.0)) == pytest.approx(0.25)


def test_mixup_ndcg_hand_case():
    clean = torch.tensor([0.9])
    mixed = torch.tensor([[0.6], [0.8]])                            # two copies of one row
    relevance = torch.tensor([[0.7], [0.9]])
    # ordered by relevance: clean (1), copy 2 (0.9), copy 1 (0.7); discounts log2(2), log2(3), log2(4)
    dcg = 0.9 / 1 + 0.8 / math.log2(3) + 0.6 / 2
    idcg = 1.0 / 1 + 0.9 / math.log2(3) + 0.7 / 2
    assert float(mixup_ndcg_loss(clean, mixed, relevance)) == pytest.approx(1 - dcg / idcg, rel=1e-6)
    # over-confident mixed copies: DCG > IDCG -> the inverse ratio (authors' symmetric form)
    high = torch.tensor([[1.0], [1.0]])
    dcg = 0.9 + 1 / math.log2(3) + 1 / 2
    assert float(mixup_ndcg_loss(clean, high, relevance)) == pytest.approx(1 - idcg / dcg, rel=1e-6)


@pytest.mark.parametrize("ranking", ["mrl", "mndcg"])
def test_rankmixup_step_is_clean_ce_plus_weighted_ranking(ranking):
    model, (x, y) = Tiny(), batch()
    ctx = make_ctx(model)
    policy = openmix.build_policy("rankmixup", ranking=ranking, seed=0)
    assert policy.num_mixup == (1 if ranking == "mrl" else 3)
    state = policy.generator.get_state()
    mb, loss = policy.training_step(x, y, ctx)
    assert torch.equal(mb.x, x) and bool((mb.lam == 1).all())
    g = torch.Generator().set_state(state)                         # the same mixup draws again
    copies = [policy.inner(x, y, generator=g) for _ in range(policy.num_mixup)]
    z, zm = model(x), torch.stack([model(c.x) for c in copies])
    weight = torch.stack([c.soft_targets(5).amax(1) for c in copies])
    if ranking == "mrl":
        rank = margin_ranking_loss(z.amax(1), zm.amax(2), weight, 2.0)
    else:
        rank = mixup_ndcg_loss(z.softmax(1).amax(1), zm.softmax(2).amax(2), weight)
    assert float(rank.detach()) > 0
    torch.testing.assert_close(loss, F.cross_entropy(z, y) + 0.1 * rank)


def test_rankmixup_arguments_are_checked():
    with pytest.raises(ValueError, match="ranking must be one of"):
        openmix.build_policy("rankmixup", ranking="ndcg")
    with pytest.raises(ValueError, match="num_mixup must be an int >= 1"):
        openmix.build_policy("rankmixup", num_mixup=0)
    with pytest.raises(ValueError, match="score must be one of"):
        openmix.build_policy("rankmixup", score="confidence")


# ---- SUMix ---------------------------------------------------------------------------------------------------
def test_sumix_lambda_hand_case():
    lam = torch.tensor([0.5, 1.0, 0.3])
    alpha_a = torch.tensor([[1.0, 9.0], [5.0, 5.0], [0.0, 0.0]])
    alpha_b = torch.tensor([[9.0, 2.0], [5.0, 5.0], [0.0, 0.0]])
    y_a, y_b = torch.tensor([0, 0, 0]), torch.tensor([1, 1, 1])
    got = sumix_lambda(lam, alpha_a, alpha_b, y_a, y_b)
    # row 0: 0.5 e^-1 / (0.5 e^-1 + 0.5 e^-2); row 1: λ = 1 stays; row 2: equal distances keep λ
    torch.testing.assert_close(got, torch.tensor([1 / (1 + math.exp(-1)), 1.0, 0.3]))
    big = sumix_lambda(torch.tensor([0.5]), torch.tensor([[800.0]]), torch.tensor([[900.0]]), y_a[:1], y_a[:1])
    assert float(big) == pytest.approx(1.0)                        # exp(-800) underflows; the log form does not


def authors_semantic_and_uncertainty(z_clean, z_mix, u_clean, u_mix, y_a, y_b, index, lam, scale):
    """The released IN_loss written out with its per-row loops (scalar λ, batch-size scale)."""
    def unit(t):
        return t / t.pow(2).sum(1).sqrt().view(-1, 1)
    s_one, s_mix = F.softmax(z_clean, -1), F.softmax(z_mix, -1)
    s_one_ = s_one[index]
    for i in range(len(y_a)):
        s_one[i, y_b[i]] = 0
        s_one_[i, y_a[i]] = 0
    alpha, alpha_ = unit(F.softmax(s_mix - s_one, -1)) * scale, unit(F.softmax(s_mix - s_one_, -1)) * scale
    beta, beta_ = u_clean + u_mix, u_clean[index] + u_mix
    ina_f, inb_f = torch.exp(-(beta + alpha)), torch.exp(-(beta_ + alpha_))
    reg = F.cross_entropy(ina_f, y_a) * lam + F.cross_entropy(inb_f, y_b) * (1 - lam)
    return alpha, alpha_, reg


def test_sumix_terms_equal_the_authors_formulas():
    g = torch.Generator().manual_seed(0)
    z_clean, z_mix = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    u_clean, u_mix = torch.rand(6, 4, generator=g), torch.rand(6, 4, generator=g)
    y_a = torch.randint(0, 4, (6,), generator=g)
    index = torch.randperm(6, generator=g)
    y_b = y_a[index]
    for scale in (6.0, 1.0):
        alpha, alpha_, reg = authors_semantic_and_uncertainty(z_clean, z_mix, u_clean, u_mix, y_a, y_b, index, 0.3,
                                                              scale)
        torch.testing.assert_close(semantic_distance(z_mix, z_clean, y_b, scale), alpha)
        torch.testing.assert_close(semantic_distance(z_mix, z_clean[index], y_a, scale), alpha_)
        got = uncertainty_loss(u_clean + u_mix, u_clean[index] + u_mix, alpha, alpha_, y_a, y_b, torch.full((6,), 0.3))
        torch.testing.assert_close(got, reg)


def test_sumix_step_trains_its_head_and_resumes():
    model, (x, y) = Tiny(), batch()
    ctx = make_ctx(model)
    policy = openmix.build_policy("sumix", alpha=1.0, mode="elem", scale=1.0, seed=0)
    policy.setup(ctx)
    before = policy.head.weight.detach().clone()
    mb, loss = policy.training_step(x, y, ctx)
    loss.backward()                                                # as the engine does
    policy.after_step()
    assert not torch.equal(before, policy.head.weight)             # the uncertainty head learnt
    assert bool(((mb.lam >= 0) & (mb.lam <= 1)).all()) and mb.mask is not None
    state = policy.state_dict()
    other = openmix.build_policy("sumix", alpha=1.0, mode="elem", scale=1.0, seed=9)
    other.setup(ctx)
    other.load_state_dict(state)
    assert torch.equal(other.head.weight, policy.head.weight)
    assert torch.equal(other.generator.get_state(), policy.generator.get_state())


# ---- AttentiveMix --------------------------------------------------------------------------------------------
def test_top_cells_mask_hand_cases():
    activation = torch.tensor([[[0.0, 3.0], [1.0, 2.0]]])           # 2x2 grid, top-1 = the top-right cell
    mask = top_cells_mask(activation, 1, (4, 4))
    expected = torch.ones(1, 1, 4, 4)
    expected[..., 0:2, 2:4] = 0
    assert torch.equal(mask, expected)
    # the paper's case: 6 of 7x7 cells on a 224 image -> λ = 1 - 6/49 exactly
    act = torch.rand(2, 7, 7, generator=torch.Generator().manual_seed(0))
    mask = top_cells_mask(act, 6, (224, 224))
    assert torch.allclose(mask.flatten(1).double().mean(1), torch.full((2,), 1 - 6 / 49, dtype=torch.float64))
    assert torch.equal(activation_grid(torch.ones(1, 3, 14, 14), 7), torch.ones(1, 7, 7))


def test_attentivemix_pastes_the_sources_most_activated_cells():
    policy = openmix.build_policy("attentivemix", top_k=2, grid=3, mode="elem", seed=0)
    x, y = batch(b=5)
    feats = torch.rand(5, 4, 3, 3, generator=torch.Generator().manual_seed(1))
    mb = policy.mix_with_features(x, y, feats)
    torch.testing.assert_close(mb.x, x * mb.mask + x[mb.index] * (1 - mb.mask))
    for i in range(5):
        source = int(mb.index[i])
        top = set(feats[source].mean(0).flatten().topk(2).indices.tolist())
        pasted = {r * 3 + c for r in range(3) for c in range(3) if mb.mask[i, 0, r * 2, c * 2] == 0}
        assert pasted == top                                        # 6 px / 3 cells: 2 px per cell
    torch.testing.assert_close(mb.lam, torch.full((5,), 1 - 8 / 36))


def test_attentivemix_trained_features_leave_the_model_as_it_was():
    from openmix.train.models import build_model
    torch.manual_seed(0)
    model = build_model("small_cnn", (1, 8, 8), 5).train()
    ctx = make_ctx(model)
    policy = openmix.build_policy("attentivemix", seed=0)
    policy.setup(ctx)
    stats = [b.clone() for b in model.buffers()]
    x, y = torch.randn(6, 1, 8, 8), torch.randint(0, 5, (6,))
    feats = policy.features(x, ctx)
    assert feats.shape[:2] == (6, 128) and model.training and not feats.requires_grad
    assert all(torch.equal(a, b) for a, b in zip(stats, model.buffers()))    # eval-mode pass: BN stats kept
    mb, loss = policy.training_step(x, y, ctx)
    torch.testing.assert_close(mb.lam, mb.mask.flatten(1).mean(1))
    assert bool((mb.lam < 1).all()) and bool((mb.lam > 0.7).all())    # 6 of 49 cells (1-2 px each) pasted
    assert torch.isfinite(loss)


def test_attentivemix_runs_no_feature_pass_once_mixing_is_off():
    from openmix.train.models import build_model
    model = build_model("small_cnn", (1, 8, 8), 5).train()
    ctx = make_ctx(model)
    policy = openmix.build_policy("attentivemix", seed=0, stop_epoch=1)
    policy.setup(ctx)
    policy.set_epoch(1)
    policy.features = lambda *a, **k: pytest.fail("feature pass after stop_epoch")
    x, y = torch.randn(6, 1, 8, 8), torch.randint(0, 5, (6,))
    mb, loss = policy.training_step(x, y, ctx)
    assert mb.x is x and bool((mb.lam == 1).all()) and torch.isfinite(loss)


def test_attentivemix_arguments_are_checked():
    with pytest.raises(ValueError, match="top_k must be at most grid"):
        openmix.build_policy("attentivemix", top_k=50, grid=7)
    with pytest.raises(ValueError, match="pretrained=True applies to a named feature_model"):
        openmix.build_policy("attentivemix", pretrained=True)
    with pytest.raises(ValueError, match="feature_model must be 'trained' or a timm model name"):
        openmix.build_policy("attentivemix", feature_model="no_such_net").setup(make_ctx(Tiny()))
    policy = openmix.build_policy("attentivemix", feature_model="resnet18", seed=0)
    policy.setup(make_ctx(Tiny()))
    feats = policy.features(torch.randn(2, 1, 32, 32), make_ctx(Tiny()))
    assert feats.shape == (2, 512, 1, 1)                           # a named timm model, random weights


def test_sumix_correction_direction_with_confident_predictions():
    """The documented behaviour of the released formula: a row that is 95% image a, with confident
    predictions (p = 0.95 on the own class) and a mixed prediction that blends them, gets λ̂ near 0
    at the authors' scale (the batch size, 64) and stays near λ at scale 1."""
    k, b = 10, 64
    y_a = torch.arange(b) % k
    y_b = (y_a + 1) % k
    lam = torch.full((b,), 0.95)

    def confident(y):
        p = torch.full((b, k), 0.05 / (k - 1))
        p[torch.arange(b), y] = 0.95
        return p

    p_a, p_b = confident(y_a), confident(y_b)
    p_mix = lam[:, None] * p_a + (1 - lam[:, None]) * p_b
    for scale, low, high in ((64.0, 0.0, 0.01), (1.0, 0.9, 0.95)):
        alpha_a = semantic_distance(p_mix.log(), p_a.log(), y_b, scale)
        alpha_b = semantic_distance(p_mix.log(), p_b.log(), y_a, scale)
        got = sumix_lambda(lam, alpha_a, alpha_b, y_a, y_b)
        assert bool(((got > low) & (got < high)).all()), (scale, got[:3])
