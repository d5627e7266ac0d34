"""Models: small default networks for the embedded datasets and timm models by name.

Every model maps x: (B, C, *spatial) -> (B, K) logits (classification) or (B, D) predictions
(regression). The small networks expose ``stages`` and ``head`` so that ``openmix.features``
can split them for feature-level policies (as it splits timm models).
"""
from __future__ import annotations

import difflib
from typing import Sequence

from torch import nn

from ..features import FeatureLayout, MixNet, ModelSplit, split_model

__all__ = ["SmallCNN", "SmallConv1d", "SmallMLP", "build_model", "split_model", "ModelSplit", "MixNet",
           "FeatureLayout", "SMALL_MODELS"]


def _conv_bn_act(conv: nn.Module, bn: nn.Module) -> nn.Sequential:
    return nn.Sequential(conv, bn, nn.ReLU(inplace=True))


class SmallConvNet(nn.Module):
    """Three conv stages (widths w, 2w, 4w; the last two halve the resolution) and a pooled
    linear head, in 1-D or 2-D: (B, C, *spatial) -> (B, K)."""

    def __init__(self, dims: int, in_chans: int, num_outputs: int, width: int = 32,
                 drop_rate: float = 0.0, kernel: int = 3):
        super().__init__()
        conv = {1: nn.Conv1d, 2: nn.Conv2d}[dims]
        norm = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}[dims]
        pool = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d}[dims]
        w = width
        self.stages = nn.ModuleList([
            nn.Sequential(_conv_bn_act(conv(in_chans, w, kernel, padding=kernel // 2, bias=False), norm(w)),
                          _conv_bn_act(conv(w, w, kernel, padding=kernel // 2, bias=False), norm(w))),
            _conv_bn_act(conv(w, 2 * w, 3, stride=2, padding=1, bias=False), norm(2 * w)),
            _conv_bn_act(conv(2 * w, 4 * w, 3, stride=2, padding=1, bias=False), norm(4 * w)),
        ])
        self.head = nn.Sequential(pool(1), nn.Flatten(), nn.Dropout(drop_rate), nn.Linear(4 * w, num_outputs))

    def forward(self, x):
        for stage in self.stages:
            x = stage(x)
        return self.head(x)


class SmallCNN(SmallConvNet):
    """For small images (8x8 digits .. 32x32): (B, C, H, W) -> (B, K).
    Stage outputs: (B, w, H, W), (B, 2w, H/2, W/2), (B, 4w, H/4, W/4)."""

    def __init__(self, in_chans: int, num_outputs: int, width: int = 32, drop_rate: float = 0.0):
        super().__init__(2, in_chans, num_outputs, width, drop_rate, kernel=3)


class SmallConv1d(SmallConvNet):
    """For 1-D signals (mnist1d): (B, C, L) -> (B, K). Stage outputs: (B, w, L), (B, 2w, L/2), (B, 4w, L/4)."""

    def __init__(self, in_chans: int, num_outputs: int, width: int = 32, drop_rate: float = 0.0):
        super().__init__(1, in_chans, num_outputs, width, drop_rate, kernel=5)


class _FlattenToChannels(nn.Module):
    """(B, C, F) -> (B, C*F, 1): a tabular row as channels of a length-1 map."""

    def forward(self, x):
        return x.reshape(x.shape[0], -1, 1)


class SmallMLP(nn.Module):
    """MLP for tabular rows given as (B, C, F) signals -> (B, K).
    Hidden layers are 1x1 convolutions on (B, width, 1), so that the stage outputs keep the
    (B, C, *spatial) shape that feature-level policies expect."""

    def __init__(self, in_features: int, num_outputs: int, width: int = 128, depth: int = 3, drop_rate: float = 0.0):
        super().__init__()
        stages = [nn.Sequential(_FlattenToChannels(), nn.Conv1d(in_features, width, 1), nn.ReLU(inplace=True))]
        for _ in range(depth - 1):
            stages.append(nn.Sequential(nn.Conv1d(width, width, 1), nn.ReLU(inplace=True)))
        self.stages = nn.ModuleList(stages)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(drop_rate), nn.Linear(width, num_outputs))

    def forward(self, x):
        for stage in self.stages:
            x = stage(x)
        return self.head(x)


SMALL_MODELS = ("small_cnn", "conv1d", "mlp")


def _cifar_stem(model: nn.Module, in_chans: int) -> None:
    """Replace an ImageNet stem (7x7 stride-2 conv + max-pool) by a 3x3 stride-1 conv for 32x32 inputs."""
    if not (hasattr(model, "conv1") and isinstance(model.conv1, nn.Conv2d) and hasattr(model, "maxpool")):
        raise ValueError(f"model.cifar_stem=true is supported for ResNet-style timm models (conv1 + maxpool); "
                         f"{type(model).__name__} has no such stem. Set model.cifar_stem=false.")
    out = model.conv1.out_channels
    model.conv1 = nn.Conv2d(in_chans, out, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()


def build_model(name: str, input_shape: Sequence[int], num_outputs: int, width: int | None = None,
                drop_rate: float = 0.0, pretrained: bool = False, cifar_stem: bool | str = "auto",
                default: str = "small_cnn", kwargs: dict | None = None) -> nn.Module:
    """Build ``name`` for inputs of shape ``input_shape`` = (C, *spatial) with ``num_outputs`` outputs.
    ``name="auto"`` takes ``default`` (the dataset's default network)."""
    kwargs = dict(kwargs or {})
    if name == "auto":
        name = default
    C = int(input_shape[0])
    if name == "small_cnn":
        if len(input_shape) != 3:
            raise ValueError(f"model.name=small_cnn needs image inputs (C, H, W), got {tuple(input_shape)}; "
                             f"use model.name=conv1d for 1-D signals or mlp for tabular rows")
        return SmallCNN(C, num_outputs, width=width or 32, drop_rate=drop_rate)
    if name == "conv1d":
        if len(input_shape) != 2:
            raise ValueError(f"model.name=conv1d needs 1-D inputs (C, L), got {tuple(input_shape)}")
        return SmallConv1d(C, num_outputs, width=width or 32, drop_rate=drop_rate)
    if name == "mlp":
        n_in = 1
        for s in input_shape:
            n_in *= int(s)
        return SmallMLP(n_in, num_outputs, width=width or 128, drop_rate=drop_rate)
    import timm
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        raise ValueError(f"unknown model model.name={name!r}; choose one of {['auto', *SMALL_MODELS]} or a timm "
                         f"model name (timm.list_models(), {len(timm.list_models())} models, e.g. resnet18)"
                         + (f"; close matches: {close}" if close else ""))
    if len(input_shape) != 3:
        raise ValueError(f"timm model {name!r} needs image inputs (C, H, W), got {tuple(input_shape)}; "
                         f"use model.name=conv1d or mlp")
    model = timm.create_model(name, pretrained=pretrained, num_classes=num_outputs, in_chans=C,
                              drop_rate=drop_rate, **kwargs)
    small_input = max(input_shape[1:]) <= 64
    if cifar_stem is True or (cifar_stem == "auto" and small_input and hasattr(model, "maxpool")
                              and isinstance(getattr(model, "conv1", None), nn.Conv2d)):
        _cifar_stem(model, C)
    return model


