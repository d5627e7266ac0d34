"""Models: small default networks, timm by name with a CIFAR stem, and the stage split."""
import pytest
import torch
from torch import nn

from openmix.train.models import MixNet, build_model, split_model


@pytest.mark.parametrize("name,shape", [("small_cnn", (1, 8, 8)), ("conv1d", (1, 40)), ("mlp", (1, 10)),
                                        ("resnet18", (3, 32, 32))])
def test_split_reproduces_forward(name, shape):
    torch.manual_seed(0)
    model = build_model(name, shape, 7, width=8 if name != "resnet18" else None).eval()
    x = torch.randn(3, *shape)
    split = split_model(model)
    h = x
    for stage in split.stages:
        h = stage(h)
        assert h.ndim >= 3 and h.shape[0] == 3           # (B, C, *spatial) at every stage
    assert torch.allclose(split.head(h), model(x), atol=1e-5)
    # MixNet mixing an identity at each stage is the plain forward
    net = MixNet(model)
    for k in range(1, len(split.stages) + 1):
        assert torch.allclose(net(x, stage=k, mix=lambda t: t), model(x), atol=1e-5)
    doubled = net(x, stage=1, mix=lambda t: 2 * t)
    assert not torch.allclose(doubled, model(x))


def test_resnet18_cifar_stem_keeps_resolution():
    model = build_model("resnet18", (3, 32, 32), 10)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    assert [s(torch.zeros(1, 3, 32, 32)).shape[-1] for s in split_model(model).stages[:1]] == [32]
    big = build_model("resnet18", (3, 224, 224), 10)
    assert big.conv1.stride == (2, 2)


def test_unsplittable_model_and_bad_shapes():
    assert split_model(nn.Sequential(nn.Flatten(), nn.Linear(4, 2))) is None
    with pytest.raises(ValueError, match="unknown model.*close matches"):
        build_model("resnet181", (3, 32, 32), 10)
    with pytest.raises(ValueError, match="conv1d needs 1-D inputs"):
        build_model("conv1d", (1, 8, 8), 10)
