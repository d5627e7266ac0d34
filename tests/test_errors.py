"""Bad input gets a clear error naming the argument, the value and what is accepted."""
import pytest
import torch

import openmix


X = torch.randn(4, 3, 8, 8)
Y = torch.tensor([0, 1, 2, 3])


@pytest.mark.parametrize("kwargs, error, pattern", [
    (dict(alpha=-1.0), ValueError, r"alpha must be a finite real number >= 0, got -1.0"),
    (dict(p=1.5), ValueError, r"p must be a probability in \[0, 1\], got 1.5"),
    (dict(mode="sample"), ValueError, r"mode must be one of \['batch', 'pair', 'elem'\], got 'sample'"),
    (dict(pairing="shuffle"), ValueError, r"unknown pairing 'shuffle'; known pairings: .*flip.*random.*roll"),
    (dict(seed="a"), TypeError, r"seed must be an int or None"),
])
def test_constructor_errors(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        openmix.build_policy("mixup", **kwargs)


def test_unknown_policy_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown policy 'cutmixx'; known policies: .*cutmix.*fmix.*mixup.*resizemix"):
        openmix.build_policy("cutmixx")


def test_scale_range_out_of_order():
    with pytest.raises(ValueError, match=r"scale must satisfy 0.0 <= min <= max <= 1.0, got \(0.8, 0.1\)"):
        openmix.build_policy("resizemix", scale=(0.8, 0.1))


@pytest.mark.parametrize("x, y, error, pattern", [
    (torch.randn(4, 8), Y, ValueError, r"x must have shape .*\(B, C, H, W\).*got shape \(4, 8\)"),
    (torch.randint(0, 255, (4, 3, 8, 8), dtype=torch.uint8), Y, TypeError, r"x must be a floating-point tensor.*uint8"),
    (X, torch.tensor([0, 1, 2]), ValueError, r"y must have one row per sample: expected 4 rows, got 3"),
    (X, torch.zeros(4, 2, 2), ValueError, r"y must have shape \(B,\) or \(B, K\), got shape \(4, 2, 2\)"),
    (X, [0, 1, 2, 3], TypeError, r"y must be a torch.Tensor"),
    (torch.randn(0, 3, 8, 8), torch.zeros(0, dtype=torch.long), ValueError, r"at least one sample"),
])
def test_call_errors(x, y, error, pattern):
    with pytest.raises(error, match=pattern):
        openmix.build_policy("cutmix")(x, y)


def test_resizemix_rejects_volumes_and_generator_type():
    with pytest.raises(ValueError, match=r"x must have shape \(B, C, L\) or \(B, C, H, W\)"):
        openmix.build_policy("resizemix")(torch.randn(2, 1, 4, 4, 4), torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        openmix.build_policy("mixup")(X, Y, generator=0)


def test_class_indices_out_of_range_in_soft_targets():
    mb = openmix.build_policy("mixup", seed=0)(X, Y)
    with pytest.raises(ValueError, match=r"class indices in \[0, 3\], outside \[0, 2\] for num_classes=3"):
        mb.soft_targets(3)
    with pytest.raises(ValueError, match=r"soft y must have shape \(B, 5\)"):
        openmix.build_policy("mixup", seed=0)(X, torch.rand(4, 4)).soft_targets(5)


def test_pair_mode_refuses_a_pairing_that_does_not_swap():
    with pytest.raises(ValueError, match="mode='pair' needs a pairing where partners swap"):
        openmix.build_policy("mixup", mode="pair", pairing="roll", seed=0)(X, Y)


def test_collate_refuses_policies_that_need_the_model():
    class NeedsSaliency:
        needs = "saliency"

        def __call__(self, x, y, generator=None):
            return None
    with pytest.raises(ValueError, match="needs saliency from the model"):
        openmix.MixCollate(NeedsSaliency())


@pytest.mark.parametrize("name, kwargs, pattern", [
    ("mixup", dict(alhpa=1.0), r"policy 'mixup' got unknown keyword\(s\) 'alhpa'; accepted: alpha, mode, p, "
                               r"pairing, stop_epoch, seed, inplace\n  alhpa: did you mean 'alpha'\?"),
    ("fmix", dict(decay_pwr=3), r"accepted: alpha, decay_power, max_soft, mode.*did you mean 'decay_power'"),
    ("resizemix", dict(scal=(0.1, 0.5)), r"accepted: scale, interpolation, placement, .*did you mean 'scale'"),
    ("mixup", dict(mixup_alpha=0.8, prob=0.5),
     r"'mixup_alpha', 'prob'.*mixup_alpha is alpha of build_policy\('mixup'.*prob is p "),
    ("cutmix", dict(cutmix_alpha=1.0), r"cutmix_alpha is alpha of build_policy\('cutmix'"),
    ("mixup", dict(switch_prob=0.5), r"build_policy\('choice', policies=.*probs=\[1 - switch_prob, switch_prob\]"),
    ("cutmix", dict(label_smoothing=0.1), r"label smoothing belongs to the loss: build_loss\('soft_ce', smoothing"),
])
def test_wrong_policy_keyword_lists_the_accepted_ones_and_the_closest(name, kwargs, pattern):
    with pytest.raises(TypeError, match="(?s)" + pattern):
        openmix.build_policy(name, **kwargs)


def test_timm_mode_name_is_ours_too():
    assert openmix.build_policy("mixup", mode="elem").mode == "elem"


def test_wrong_loss_keyword_and_name():
    with pytest.raises(TypeError, match=r"(?s)loss .soft_ce. got unknown keyword.*label_smoothing is smoothing"):
        openmix.build_loss("soft_ce", label_smoothing=0.1)
    with pytest.raises(ValueError, match=r"unknown loss 'softce'; known losses: bce, ce, .*; did you mean 'soft_ce'\?"):
        openmix.build_loss("softce")


def test_missing_schedule_keyword_is_named():
    with pytest.raises(TypeError, match=r"schedule 'linear' needs keyword\(s\) 'end', 'epochs'"):
        openmix.build_policy("mixup", alpha={"schedule": "linear", "start": 0.0})
