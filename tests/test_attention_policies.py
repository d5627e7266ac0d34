"""Attention reading (openmix.features) and the ViT policies TransMix and SMMix, checked against
timm's own (unfused) attention and hand-computed cases."""
import contextlib
import math
from types import SimpleNamespace

import pytest
import timm
import torch
import torch.nn.functional as F

import openmix
from openmix.features import ClassifierInput, LastBlockAttention, MixNet
from openmix.policies.smmix import attention_windows, paste_windows
from openmix.policies.transmix import patch_share, transmix_lambda


def tiny_vit(**kwargs):
    torch.manual_seed(0)
    args = dict(img_size=8, patch_size=2, depth=2, embed_dim=32, num_heads=2, num_classes=5, in_chans=1)
    return timm.create_model("vit_tiny_patch16_224", **{**args, **kwargs})


def make_ctx(model, num_classes=5):
    net = MixNet(model)
    return SimpleNamespace(model=model, net=net, forward=net, loss_fn=openmix.build_loss("soft_ce"),
                           autocast=contextlib.nullcontext, device=torch.device("cpu"), task="classification",
                           num_classes=num_classes, epoch=0)


class TimmAttention:
    """timm's own attention matrix: the unfused path, read at the input of attn_drop."""

    def __init__(self, model):
        self.attn = model.blocks[-1].attn
        self.attn.fused_attn = False
        self.seen = []
        self.handle = self.attn.attn_drop.register_forward_hook(lambda m, a, o: self.seen.append(a[0].detach()))


@pytest.mark.parametrize("qk_norm", [False, True])
def test_last_block_attention_equals_timms_attention_matrix(qk_norm):
    model = tiny_vit(qk_norm=qk_norm).eval()
    ref = TimmAttention(model)
    x = torch.randn(3, 1, 8, 8)
    with LastBlockAttention(model, "cls") as cls, LastBlockAttention(model, "patches") as patches:
        model(x)
    full = ref.seen[-1]                                             # (B, H, N, N), softmax over all N
    torch.testing.assert_close(cls.attention, full[:, :, 0, 1:].mean(1))
    torch.testing.assert_close(patches.attention, full[:, :, 1:, 1:].mean((1, 2)))
    assert cls.attention.shape == (3, 16) and not cls.attention.requires_grad
    # the hook is gone after the context
    model(x)
    assert len(model.blocks[-1].attn._forward_hooks) == 0


def test_attention_reading_refuses_models_it_cannot_read():
    with pytest.raises(ValueError, match="no class token"):
        LastBlockAttention(tiny_vit(class_token=False, global_pool="avg"), "cls")
    LastBlockAttention(tiny_vit(class_token=False, global_pool="avg"), "patches")     # patches need no class token
    with pytest.raises(ValueError, match="timm vision transformer"):
        LastBlockAttention(torch.nn.Sequential(torch.nn.Linear(3, 3)), "cls")
    with pytest.raises(ValueError, match="query must be one of"):
        LastBlockAttention(tiny_vit(), "heads")


def test_classifier_input_is_what_the_last_linear_sees():
    from openmix.train.models import build_model
    torch.manual_seed(0)
    model = build_model("small_cnn", (1, 8, 8), 10)
    x = torch.randn(4, 1, 8, 8)
    with ClassifierInput(model) as tap:
        logits = model(x)
    layer = model.head[-1]
    torch.testing.assert_close(F.linear(tap.features, layer.weight, layer.bias), logits)
    assert tap.features.requires_grad


# ---- TransMix ------------------------------------------------------------------------------------------------
def test_transmix_lambda_hand_case():
    attention = torch.tensor([[0.1, 0.2, 0.3, 0.4]])               # class token on a 2x2 grid
    share = torch.tensor([[1.0, 0.0, 0.0, 0.0]])                   # the partner's box is the top-left patch
    area_lam = torch.tensor([0.75])
    # authors' code: λ_src = (area 0.25 + attention 0.1) / 2 = 0.175 -> own 0.825
    torch.testing.assert_close(transmix_lambda(area_lam, attention, share, 0.5), torch.tensor([0.825]))
    # paper: λ_src = A · M = 0.1
    torch.testing.assert_close(transmix_lambda(area_lam, attention, share, 1.0), torch.tensor([0.9]))
    # attention not normalised (softmax also covered the class token): divided by its sum over patches
    torch.testing.assert_close(transmix_lambda(area_lam, attention * 0.5, share, 1.0), torch.tensor([0.9]))


def test_patch_share_equals_the_authors_nearest_sampling_for_grid_boxes():
    mask = torch.ones(2, 1, 8, 8)
    mask[0, :, 2:6, 0:4] = 0                                       # box on the 2-px patch grid
    mask[1, :, 4:8, 6:8] = 0
    nearest = 1 - F.interpolate(mask, size=(4, 4), mode="nearest").flatten(1)
    torch.testing.assert_close(patch_share(mask, (4, 4)), nearest)
    mask[0, :, 1, 1] = 0                                           # off-grid pixel: counted by area
    assert patch_share(mask, (4, 4))[0, 0] == pytest.approx(0.25)


def test_transmix_step_uses_the_attention_of_the_mixed_batch():
    model = tiny_vit().train()
    ref = TimmAttention(model)
    ctx = make_ctx(model)
    policy = openmix.build_policy("transmix", mode="elem", seed=3)
    policy.setup(ctx)
    x, y = torch.randn(6, 1, 8, 8), torch.randint(0, 5, (6,))
    mb, loss = policy.training_step(x, y, ctx)
    attention = ref.seen[-1][:, :, 0, 1:].mean(1)                  # timm's, on the mixed input
    share = 1 - F.adaptive_avg_pool2d(mb.mask, 4).flatten(1)
    area_src = 1 - mb.mask.flatten(1).mean(1)
    attention_src = (attention * share).sum(1) / attention.sum(1)
    expected = 1 - (0.5 * attention_src + 0.5 * area_src)
    torch.testing.assert_close(mb.lam, expected)
    assert not torch.allclose(mb.lam, 1 - area_src)                # the attention did change λ
    logits = model(mb.x)
    targets = expected.unsqueeze(1) * F.one_hot(y, 5) + (1 - expected.unsqueeze(1)) * F.one_hot(y[mb.index], 5)
    torch.testing.assert_close(loss, torch.sum(-targets * F.log_softmax(logits, 1), 1).mean())
    assert torch.equal(mb.x, x * mb.mask + x[mb.index] * (1 - mb.mask))


def test_transmix_refuses_models_without_a_class_token_and_non_mask_policies():
    with pytest.raises(ValueError, match="no class token"):
        openmix.build_policy("transmix").setup(make_ctx(tiny_vit(class_token=False, global_pool="avg")))
    from openmix.train.models import build_model
    with pytest.raises(ValueError, match="timm vision transformer|patch grid"):
        openmix.build_policy("transmix").setup(make_ctx(build_model("small_cnn", (1, 8, 8), 5)))
    with pytest.raises(ValueError, match="mask_policy must return a mask"):
        openmix.build_policy("transmix", mask_policy="mixup")
    with pytest.raises(ValueError, match="attention_weight must be a probability"):
        openmix.build_policy("transmix", attention_weight=2.0)
    with pytest.raises(TypeError, match="trains with the model"):
        openmix.build_policy("transmix")(torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.long))


# ---- SMMix ---------------------------------------------------------------------------------------------------
def test_attention_windows_hand_case():
    attention = torch.tensor([[0.0, 0.0, 5.0, 5.0],
                              [0.0, 0.0, 5.0, 5.0],
                              [1.0, 1.0, 1.0, 1.0],
                              [1.0, 9.0, 1.0, 1.0]]).view(1, 16)
    least, most = attention_windows(attention, (4, 4), 2)
    assert least.tolist() == [[0, 1, 4, 5]]                        # top-left window, sum 0
    assert most.tolist() == [[2, 3, 6, 7]]                         # top-right, sum 20 (vs 12 for the 9)


def test_paste_windows_moves_patches_in_order():
    x = torch.arange(2 * 16 * 4, dtype=torch.float32).view(2, 1, 8, 8)
    index = torch.tensor([1, 0])
    target = torch.tensor([[0, 1], [14, 15]])
    source = torch.tensor([[5, 6], [2, 3]])
    out = paste_windows(x, index, target, source, (2, 2))
    patch = lambda t, k: t[:, (k // 4) * 2:(k // 4) * 2 + 2, (k % 4) * 2:(k % 4) * 2 + 2]   # noqa: E731
    assert torch.equal(patch(out[0], 0), patch(x[1], 5)) and torch.equal(patch(out[0], 1), patch(x[1], 6))
    assert torch.equal(patch(out[1], 14), patch(x[0], 2)) and torch.equal(patch(out[1], 15), patch(x[0], 3))
    untouched = torch.ones(2, 16, dtype=torch.bool)
    untouched[0, [0, 1]] = untouched[1, [14, 15]] = False
    for b in range(2):
        for k in untouched[b].nonzero().flatten().tolist():
            assert torch.equal(patch(out[b], k), patch(x[b], k))


def test_smmix_step_follows_the_authors_definition():
    model = tiny_vit().train()
    ctx = make_ctx(model)
    policy = openmix.build_policy("smmix", switch_prob=1.0, seed=1)
    policy.setup(ctx)
    assert policy.sides == [1, 2, 3]                               # int(4 * 0.25) .. int(4 * 0.75)
    x, y = torch.randn(6, 1, 8, 8), torch.randint(0, 5, (6,))
    model.eval()
    with LastBlockAttention(model, "patches") as tap, torch.no_grad():
        clean = model(x)
    model.train()
    mb, loss = policy.training_step(x, y, ctx)
    assert model.training
    side = round(math.sqrt((1 - float(mb.lam[0])) * 16))
    least, most = attention_windows(tap.attention, (4, 4), side)
    torch.testing.assert_close(mb.x, paste_windows(x, mb.index, least, most[mb.index], (2, 2)))
    torch.testing.assert_close(mb.lam.double(), mb.mask.flatten(1).double().mean(1))
    # the three terms, recomputed from the model's outputs
    tokens = model.forward_features(mb.x)[:, 1:]
    logits = model.forward_head(model.forward_features(mb.x))
    pasted = mb.mask[:, 0, ::2, ::2].flatten(1) == 0
    lam = float(mb.lam[0])
    region = lambda keep: model.head(((tokens * keep[..., None]).sum(1) / keep.sum(1, keepdim=True)))  # noqa: E731
    ce = lambda z, t: torch.sum(-t * F.log_softmax(z, 1), 1).mean()                                    # noqa: E731
    one_hot = F.one_hot(y, 5).float()
    mixed_t = lam * one_hot + (1 - lam) * one_hot[mb.index]
    fine = 0.5 * (ce(region((~pasted).float()), one_hot) + ce(region(pasted.float()), one_hot[mb.index]))
    target = torch.softmax(lam * clean + (1 - lam) * clean[mb.index], 1)
    kl = torch.sum(target * (target.log() - F.log_softmax(logits, 1)), 1).mean()
    torch.testing.assert_close(loss, ce(logits, mixed_t) + fine + kl, rtol=1e-5, atol=1e-5)


def test_smmix_mixup_branch_and_refusals():
    model = tiny_vit().train()
    ctx = make_ctx(model)
    policy = openmix.build_policy("smmix", switch_prob=0.0, seed=2)
    policy.setup(ctx)
    x, y = torch.randn(4, 1, 8, 8), torch.randint(0, 5, (4,))
    mb, loss = policy.training_step(x, y, ctx)
    lam = mb.lam[0]
    torch.testing.assert_close(mb.x, lam * x + (1 - lam) * x[mb.index])
    assert mb.mask is None and torch.isfinite(loss)
    with pytest.raises(ValueError, match="mode must be one of"):
        openmix.build_policy("smmix", mode="elem")
    from openmix.train.models import build_model
    with pytest.raises(ValueError):
        openmix.build_policy("smmix").setup(make_ctx(build_model("small_cnn", (1, 8, 8), 5)))
