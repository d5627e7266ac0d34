"""Layout mistakes are reported, never silently mixed: channels-last, grayscale without a channel,
a single image, 0-255 floats to DeviceMixer's normalisation, and `ce` on a mixed batch."""
import warnings

import pytest
import torch
import torch.nn.functional as F

import openmix
from openmix.checks import LayoutWarning, check_layout, layout_mistake

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.mark.parametrize("shape, fix", [
    ((8, 32, 32, 3), r"channels-last \(B, H, W, C\).*x.permute\(0, 3, 1, 2\)"),
    ((8, 28, 28, 1), r"channels-last.*permute"),
    ((16, 28, 28), r"grayscale \(B, H, W\).*x.unsqueeze\(1\) -> \(16, 1, 28, 28\)"),
    ((3, 32, 32), r"one \(C, H, W\) image.*x.unsqueeze\(0\) -> \(1, 3, 32, 32\)"),
    ((1, 64, 48), r"one \(C, H, W\) image.*x.unsqueeze\(0\) -> \(1, 1, 64, 48\)"),
])
def test_layout_mistakes_warn_with_the_fix(shape, fix):
    with pytest.warns(LayoutWarning, match=fix):
        check_layout(torch.zeros(shape))


@pytest.mark.parametrize("shape", [
    (8, 3, 32, 32), (8, 1, 28, 28), (2, 3, 224, 224),   # (B, C, H, W) images
    (8, 1, 40), (8, 12, 1000), (8, 2, 64),                # 1-D signals (mnist1d, ECG-like)
    (8, 10), (4, 1, 8, 8, 8), (8, 3, 4, 3),               # features, volumes, tiny images
])
def test_correct_layouts_pass_silently(shape):
    assert layout_mistake(shape) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_layout(torch.zeros(shape))


def test_channels_last_memory_format_is_not_a_mistake():
    x = torch.zeros(8, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    assert layout_mistake(tuple(x.shape)) is None


@pytest.mark.parametrize("name", ["mixup", "cutmix"])
def test_policies_warn_on_channels_last_input(name):
    with pytest.warns(LayoutWarning, match="channels-last"):
        openmix.build_policy(name, seed=0)(torch.rand(4, 16, 16, 3), torch.arange(4))


def test_device_mixer_refuses_0_255_floats_with_unit_statistics():
    pixels = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    mixer = openmix.DeviceMixer(openmix.build_policy("vanilla"), mean=MEAN, std=STD)
    with pytest.raises(ValueError, match=r"x is torch.float32 with values up to 2\d\d, but mean and std are in "
                                         r"\[0, 1\] units.*pass it as uint8.*divide it by 255"):
        mixer(pixels.float(), torch.arange(4))
    assert mixer(pixels, torch.arange(4)).x.shape == (4, 3, 8, 8)          # uint8 is scaled first
    assert mixer(pixels.float() / 255, torch.arange(4)).x.shape == (4, 3, 8, 8)
    in_pixel_units = openmix.DeviceMixer(openmix.build_policy("vanilla"), mean=[m * 255 for m in MEAN],
                                         std=[s * 255 for s in STD])
    torch.testing.assert_close(in_pixel_units(pixels.float(), torch.arange(4)).x,
                               mixer(pixels, torch.arange(4)).x)


def test_device_mixer_names_channels_last_when_the_channel_count_is_wrong():
    mixer = openmix.DeviceMixer(openmix.build_policy("vanilla"), mean=MEAN, std=STD)
    with pytest.raises(ValueError, match=r"mean has 3 values but x has 32 channels.*channels-last.*permute"):
        mixer(torch.zeros(2, 32, 32, 3, dtype=torch.uint8), torch.arange(2))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float64])
@pytest.mark.parametrize("mean, std", [(MEAN, STD), (MEAN, None), (None, STD), ((0.5,), (0.25,))])
def test_normalise_equals_the_plain_formula_bitwise(dtype, mean, std):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (4, 3, 8, 8), generator=g, dtype=torch.uint8)
    if dtype != torch.uint8:
        x = x.to(dtype) / 255
    original = x.clone()
    want = x.float() / 255 if dtype == torch.uint8 else x
    if mean is not None:
        want = want - torch.tensor(mean).view(1, -1, 1, 1)
    if std is not None:
        want = want / torch.tensor(std).view(1, -1, 1, 1)
    got = openmix.DeviceMixer(openmix.build_policy("vanilla"), mean=mean, std=std).normalise(x)
    assert got.dtype == want.dtype and torch.equal(got, want)
    assert torch.equal(x, original), "normalise changed the caller's tensor"


@pytest.mark.parametrize("name, mode", [("mixup", "elem"), ("cutmix", "pair"), ("fmix", "batch"),
                                        ("resizemix", "elem")])
def test_device_mixer_output_keeps_channels_last(name, mode):
    mixer = openmix.DeviceMixer(openmix.build_policy(name, mode=mode), mean=MEAN, std=STD, channels_last=True)
    mb = mixer(torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8), torch.arange(4))
    assert mb.x.is_contiguous(memory_format=torch.channels_last)


def test_ce_refuses_a_mixed_batch_and_names_soft_ce():
    x, y = torch.rand(6, 3, 8, 8), torch.arange(6) % 3
    logits = torch.randn(6, 3)
    with pytest.raises(ValueError, match=r"ce ignores the partner's label.*6 of 6 rows.*soft_ce.*loss=auto"):
        openmix.build_loss("ce")(logits, openmix.build_policy("mixup", mode="elem", seed=0)(x, y))
    unmixed = openmix.build_policy("vanilla")(x, y)
    torch.testing.assert_close(openmix.build_loss("ce", smoothing=0.1)(logits, unmixed),
                               F.cross_entropy(logits, y, label_smoothing=0.1))


@pytest.mark.parametrize("y", [torch.rand(4, 3), torch.rand(4), torch.rand(4, 1)])
def test_ce_on_float_labels_is_a_clear_error(y):
    mb = openmix.build_policy("vanilla")(torch.rand(4, 3, 8, 8), y)
    with pytest.raises(TypeError, match=r"ce takes class indices y: \(B,\) integer.*use soft_ce.*mse"):
        openmix.build_loss("ce")(torch.randn(4, 3), mb)
