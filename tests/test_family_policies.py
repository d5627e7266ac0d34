"""Invariants shared by saliencymix, smoothmix and gridmix, and their YAML defaults."""
import inspect

import pytest
import torch
from omegaconf import OmegaConf

import openmix
from openmix.policies.base import MixPolicy

NAMES = ["saliencymix", "smoothmix", "gridmix"]
MODES = ["batch", "pair", "elem"]


def batch(b=6, shape=(3, 12, 10), dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((b,) + shape, generator=g, dtype=torch.float64).to(dtype), torch.randint(0, 5, (b,), generator=g)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("mode", MODES)
def test_mask_mean_is_lambda_and_output_follows_mask(name, mode):
    x, y = batch()
    mb = openmix.build_policy(name, mode=mode, seed=1)(x, y)
    assert mb.x.shape == x.shape and mb.x.dtype == x.dtype and mb.mask.shape == (6, 1, 12, 10)
    assert mb.lam.shape == (6,) and bool(((mb.lam >= 0) & (mb.lam <= 1)).all())
    torch.testing.assert_close(mb.lam.double(), mb.mask.reshape(6, -1).double().mean(1), rtol=0, atol=1e-6)
    torch.testing.assert_close(mb.x, x * mb.mask + x[mb.index] * (1 - mb.mask))
    assert not torch.equal(mb.x, x)
    if mode == "batch":
        assert bool((mb.lam == mb.lam[0]).all()) and bool((mb.mask == mb.mask[:1]).all())
    if mode == "pair":
        assert torch.equal(mb.index[mb.index], torch.arange(6))
    torch.testing.assert_close(mb.soft_targets(5).sum(1), torch.ones(6))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("mode", MODES)
def test_seeded_and_inplace(name, mode):
    x, y = batch(b=5)
    a = openmix.build_policy(name, mode=mode)(x, y, generator=torch.Generator().manual_seed(3))
    b = openmix.build_policy(name, mode=mode)(x.clone(), y, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.x, b.x) and torch.equal(a.lam, b.lam) and torch.equal(a.index, b.index)
    assert torch.equal(openmix.build_policy(name, mode=mode, seed=4)(x, y).x,
                       openmix.build_policy(name, mode=mode, seed=4)(x, y).x)
    original = x.clone()
    openmix.build_policy(name, mode=mode, seed=5)(x, y)
    assert torch.equal(x, original)                                  # out of place by default
    inplace = openmix.build_policy(name, mode=mode, seed=5, inplace=True)(x, y)
    assert inplace.x.data_ptr() == x.data_ptr()
    torch.testing.assert_close(inplace.x, openmix.build_policy(name, mode=mode, seed=5)(original, y).x)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_dtype_preserved(name, dtype):
    x, y = batch(dtype=dtype)
    mb = openmix.build_policy(name, mode="elem", seed=0)(x, y)
    assert mb.x.dtype == dtype and mb.mask.dtype == dtype
    assert mb.lam.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("b,h,w", [(1, 5, 7), (3, 16, 16), (7, 9, 31)])
def test_any_batch_and_image_size(name, b, h, w):
    x, y = batch(b=b, shape=(2, h, w))
    for mode in MODES:
        mb = openmix.build_policy(name, mode=mode, seed=2)(x, y)
        torch.testing.assert_close(mb.lam.double(), mb.mask.reshape(b, -1).double().mean(1), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_yaml_defaults_equal_constructor_defaults(name):
    from openmix.paths import config_dir
    cfg = OmegaConf.to_container(OmegaConf.load(config_dir() / "mix" / f"{name}.yaml"))
    assert cfg.pop("name") == name and cfg.pop("where") == "collate"
    cls = type(openmix.build_policy(name))
    defaults = {}
    for klass in (MixPolicy, cls):
        for key, param in inspect.signature(klass.__init__).parameters.items():
            if param.default is not inspect.Parameter.empty:
                defaults[key] = param.default
    for key, value in cfg.items():
        assert key in defaults, f"{name}.yaml key {key!r} is not a constructor argument"
        expected = list(defaults[key]) if isinstance(defaults[key], tuple) else defaults[key]
        assert value == expected, (name, key, value, expected)
    policy = openmix.build_policy(name, **cfg)
    assert name.replace("mix", "") in repr(policy).lower()
