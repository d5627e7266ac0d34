"""Feature-level policies on vision-transformer tokens (B, N, C): the timm ViT split, the layout
the engine hands to the policy, AlignMix on patch tokens with linearly mixed prefix tokens."""
import pytest
import torch

import openmix
from openmix.ops import blend_with_partner
from openmix.policies.alignmix import AlignMix
from openmix.policies.manifoldmix import CHANNELS_FIRST, FeatureLayout, FeatureMixPlan, ManifoldMix
from openmix.train.models import MixNet, build_model, split_model

timm = pytest.importorskip("timm")


def tiny_vit(**kw):
    cfg = dict(img_size=32, patch_size=4, num_classes=10, depth=6, embed_dim=48, num_heads=3)
    cfg.update(kw)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, **cfg)


# ------------------------------------------------------------------------------ the ViT split
@pytest.mark.parametrize("kw,prefix,groups", [
    ({}, 1, [2, 2, 1, 1]),                                               # class token; 6 blocks in 4 groups
    ({"reg_tokens": 4, "depth": 8}, 5, [2, 2, 2, 2]),                     # class + 4 register tokens
    ({"class_token": False, "global_pool": "avg", "depth": 3}, 0, [1, 1, 1]),   # fewer blocks than groups
    ({"depth": 12, "embed_dim": 192}, 1, [3, 3, 3, 3]),                   # vit_tiny as published (12 blocks)
])
def test_vit_split_equals_forward(kw, prefix, groups):
    torch.manual_seed(0)
    model = tiny_vit(**kw).eval()
    x = torch.randn(2, 3, 32, 32)
    split = split_model(model)
    assert split is not None and len(split.stages) == len(groups) == len(split.layouts)
    assert all(lay == FeatureLayout.tokens(prefix) for lay in split.layouts)
    bounds = [0]
    for g in groups:
        bounds.append(bounds[-1] + g)
    for lo, hi in zip(bounds, bounds[1:]):
        assert f"blocks[{lo}:{hi}]" in split.description
    assert split.description.startswith("patch_embed+pos_embed+blocks[0:")
    h = x
    with torch.no_grad():
        for stage in split.stages:
            h = stage(h)
            assert h.shape == (2, prefix + 64, model.embed_dim)       # tokens (B, N, C) at every stage
        # the split is the model's own computation, bit for bit
        assert torch.equal(split.head(h), model(x))
        assert torch.equal(h, model.forward_features(x))
        net = MixNet(model)
        for k in range(1, len(split.stages) + 1):
            assert torch.equal(net(x, stage=k, mix=lambda t: t), model(x))
        assert not torch.allclose(net(x, stage=2, mix=lambda t: 2 * t), model(x))


def test_cnn_splits_stay_channels_first():
    for name, shape in [("small_cnn", (1, 8, 8)), ("conv1d", (1, 40)), ("mlp", (1, 10))]:
        split = split_model(build_model(name, shape, 7, width=8))
        assert split.layouts == [CHANNELS_FIRST] * len(split.stages)
    cnn = timm.create_model("resnet10t", pretrained=False, num_classes=3)
    assert split_model(cnn).layouts == [CHANNELS_FIRST] * 4


# ------------------------------------------------------------------------ AlignMix on tokens
def make_plan(b, seed=0):
    """A plan with mixed and unmixed rows and both alignment directions."""
    g = torch.Generator().manual_seed(seed)
    index = torch.randperm(b, generator=g)
    lam = torch.rand(b, generator=g) * 0.8 + 0.1
    mixed = torch.arange(b) % 3 != 2
    lam = torch.where(mixed, lam, torch.ones(b))
    direction = torch.arange(b) % 2 == 0
    return FeatureMixPlan(1, index, lam, mixed, kind="align", extra={"direction": direction})


def test_channels_last_models_are_not_split():
    """timm models whose features are channels-last (B, H, W, C) (Swin, MambaOut) have no layout yet:
    feature mixing is refused with a clear error instead of mixing the wrong axes."""
    timm = pytest.importorskip("timm")
    swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=10, img_size=32,
                             window_size=2, embed_dim=24, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1))
    assert swin.output_fmt == "NHWC" and split_model(swin) is None
    with pytest.raises(ValueError, match="cannot be split into stages"):
        MixNet(swin)(torch.rand(2, 3, 32, 32), stage=1, mix=lambda h: h)


@pytest.mark.parametrize("prefix", [0, 1, 3])
def test_alignmix_tokens_align_patches_and_mix_prefix_linearly(prefix):
    b, n_patch, c = 6, 16, 8
    g = torch.Generator().manual_seed(prefix)
    h = torch.randn(b, prefix + n_patch, c, generator=g)
    plan = make_plan(b)
    policy = AlignMix(eps=0.1, max_iter=50, tol=1e-3, cost_scale="mean", check_every=1)
    out = policy.mix_features(h, plan, layout=FeatureLayout.tokens(prefix))
    assert out.shape == h.shape and out.dtype == h.dtype
    # the patch tokens: exactly the channels-first path on the patches seen as (B, C, N - p)
    patches_cf = h[:, prefix:].transpose(1, 2).contiguous()
    expected = policy.mix_features(patches_cf, plan).transpose(1, 2)
    assert torch.allclose(out[:, prefix:], expected, atol=1e-6, rtol=1e-5)
    mixed = plan.mixed
    # alignment did something: the mixed rows are not the plain linear mix of the patch tokens
    linear = blend_with_partner(h, plan.index, plan.lam.view(-1, 1, 1))
    assert not torch.allclose(out[mixed, prefix:], linear[mixed, prefix:], atol=1e-3)
    # the prefix tokens: λ h + (1 − λ) h[index], exactly
    lam = plan.lam.view(-1, 1, 1)
    assert torch.allclose(out[:, :prefix], lam * h[:, :prefix] + (1 - lam) * h[plan.index, :prefix], atol=1e-6)
    assert torch.equal(out[:, :prefix], linear[:, :prefix])
    # rows that do not mix keep their own tokens exactly; the mixing rows change
    assert torch.equal(out[~mixed], h[~mixed])
    assert all(not torch.allclose(out[i, prefix:], h[i, prefix:], atol=1e-3) for i in torch.nonzero(mixed)[:, 0])


def test_alignmix_tokens_hand_built_permuted_partner():
    # row 1's patch tokens are row 0's in another order (well separated): alignment undoes the
    # permutation, so the aligned mix of the patches is row 0's own patches; the class token
    # has nothing to align and is mixed linearly
    g = torch.Generator().manual_seed(0)
    patches = torch.randn(9, 4, generator=g) * 10
    perm = torch.tensor([3, 7, 0, 8, 1, 5, 2, 6, 4])
    cls = torch.tensor([[[1.0, 2.0, 3.0, 4.0]], [[-3.0, 0.0, 5.0, 1.0]]])
    h = torch.cat([cls, torch.stack([patches, patches[perm]])], dim=1)          # (2, 10, 4)
    lam = torch.tensor([0.7, 0.4])
    plan = FeatureMixPlan(1, torch.tensor([1, 0]), lam, torch.tensor([True, True]), kind="align",
                          extra={"direction": torch.tensor([False, True])})
    out = AlignMix().mix_features(h, plan, layout=FeatureLayout.tokens(1))
    # row 0, towards its own arrangement: λ A + (1 − λ) R A' with R A' == A
    assert torch.allclose(out[0, 1:], patches, atol=1e-3)
    # row 1, towards the partner's arrangement: λ Rᵀ A + (1 − λ) A' with Rᵀ A == A' (row 0's patches)
    assert torch.allclose(out[1, 1:], patches, atol=1e-3)
    # without alignment the same λ would blur the two orders
    assert not torch.allclose(0.7 * patches + 0.3 * patches[perm], patches, atol=1.0)
    assert torch.allclose(out[0, 0], 0.7 * cls[0, 0] + 0.3 * cls[1, 0])
    assert torch.allclose(out[1, 0], 0.4 * cls[1, 0] + 0.6 * cls[0, 0])


def test_alignmix_tokens_gradient_and_channels_first_default_unchanged():
    h = torch.randn(4, 5, 6, requires_grad=True)
    plan = make_plan(4, seed=1)
    out = AlignMix().mix_features(h, plan, layout=FeatureLayout.tokens(1))
    out.square().sum().backward()
    assert h.grad is not None and torch.isfinite(h.grad).all() and h.grad.abs().sum() > 0
    # channels-first: layout omitted, None and CHANNELS_FIRST are the same call
    fmap = torch.randn(4, 6, 3, 3)
    a = AlignMix().mix_features(fmap, plan)
    assert torch.equal(a, AlignMix().mix_features(fmap, plan, layout=None))
    assert torch.equal(a, AlignMix().mix_features(fmap, plan, layout=CHANNELS_FIRST))


# --------------------------------------------------------------------- ManifoldMix on tokens
def test_manifoldmix_tokens_is_the_elementwise_mix():
    h = torch.randn(6, 17, 8)
    plan = make_plan(6, seed=2)
    out = ManifoldMix().mix_features(h, plan, layout=FeatureLayout.tokens(1))
    lam = plan.lam.view(-1, 1, 1)
    assert torch.allclose(out, lam * h + (1 - lam) * h[plan.index], atol=1e-6)
    assert torch.equal(out, ManifoldMix().mix_features(h, plan))
    assert torch.equal(out[~plan.mixed], h[~plan.mixed])


# -------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("policy", [AlignMix(), ManifoldMix()], ids=["alignmix", "manifoldmix"])
def test_token_layout_errors(policy):
    plan = make_plan(2)
    with pytest.raises(ValueError, match=r"h must have shape \(B, N, C\).*got shape \(2, 3, 4, 5\).*accepted"):
        policy.mix_features(torch.randn(2, 3, 4, 5), plan, layout=FeatureLayout.tokens(1))
    with pytest.raises(ValueError, match=r"num_prefix_tokens=3 must be smaller than the token count N=3.*accepted"):
        policy.mix_features(torch.randn(2, 3, 4), plan, layout=FeatureLayout.tokens(3))
    with pytest.raises(TypeError, match=r"layout must be a FeatureLayout.*got str"):
        policy.mix_features(torch.randn(2, 3, 4), plan, layout="tokens")


def test_feature_layout_validation():
    with pytest.raises(ValueError, match=r"kind must be one of \['channels_first', 'tokens'\], got 'nhwc'"):
        FeatureLayout("nhwc")
    with pytest.raises(ValueError, match=r"num_prefix_tokens must be an int >= 0, got -1"):
        FeatureLayout.tokens(-1)
    with pytest.raises(ValueError, match=r"kind='tokens' only.*num_prefix_tokens=1"):
        FeatureLayout("channels_first", 1)


# ---------------------------------------------------------------- end to end in the trainer
VIT_DIGITS = ["data=digits", "data.train_size=192", "data.test_size=64", "trainer.epochs=1", "trainer.batch_size=32",
              "trainer.progress=false", "trainer.summary=false", "trainer.tensorboard=false", "trainer.last_k=1",
              "trainer.threads=1", "trainer.save_checkpoints=false",
              "model.name=vit_tiny_patch16_224", "+model.kwargs.img_size=8", "+model.kwargs.patch_size=2",
              "+model.kwargs.depth=4", "+model.kwargs.embed_dim=32", "+model.kwargs.num_heads=2"]


@pytest.mark.parametrize("mix,extra", [("manifoldmix", ["mix.layers=[1,2,3]"]), ("alignmix", ["mix.p_align=1.0"])])
def test_trainer_runs_feature_policies_on_a_tiny_vit(tmp_path, monkeypatch, mix, extra):
    from openmix.train import compose_config, train
    cls = type(openmix.build_policy(mix))
    original = cls.mix_features
    seen = []

    def recording(self, h, plan, layout=None):
        seen.append((tuple(h.shape), int(plan.stage), layout))
        out = original(self, h, plan, layout=layout)
        assert out.shape == h.shape and not torch.equal(out, h)
        return out

    monkeypatch.setattr(cls, "mix_features", recording)
    s = train(compose_config([*VIT_DIGITS, *extra, f"mix={mix}", f"trainer.out_dir={tmp_path / mix}"]))
    assert s["policy"] == mix and s["model"] == "vit_tiny_patch16_224" and s["where"] == "engine"
    assert s["final"]["top1"] >= 0 and s["history"][0]["train_loss"] > 0
    # every step mixed tokens (B, 1 + 4·4 patches, 32) with the class token as prefix
    assert len(seen) == 192 // 32
    assert all(shape == (32, 17, 32) and lay == FeatureLayout.tokens(1) for shape, _, lay in seen)
    stages = {st for _, st, _ in seen}
    if mix == "manifoldmix":
        assert stages <= {1, 2, 3} and len(stages) >= 2      # inner stages of the 4-stage split
    else:
        assert stages == {4}                                  # AlignMix: the last stage


def test_engine_refuses_tokens_for_a_policy_without_layout(tmp_path, monkeypatch):
    from openmix.train import compose_config, train

    def old_style(self, h, plan):                      # a mix_features written before layouts existed
        return h

    monkeypatch.setattr(ManifoldMix, "mix_features", old_style)
    monkeypatch.setattr(ManifoldMix, "choose_stage", lambda self, n, g: 2)
    with pytest.raises(ValueError, match=r"takes no layout argument.*FeatureLayout.tokens\(num_prefix_tokens=1\)"):
        train(compose_config([*VIT_DIGITS, "mix=manifoldmix", f"trainer.out_dir={tmp_path / 'old'}"]))
