"""Models: small default networks for the embedded datasets, timm models by name, and the
stage split that feature-level policies need.

Every model maps x: (B, C, *spatial) -> (B, K) logits (classification) or (B, D) predictions
(regression). ``split_model`` returns ``stages`` (callables; each maps a hidden state to the
next) and a ``head`` such that ``model(x) == head(stages[-1](...stages[0](x)))``, plus the
``layouts`` of the stage outputs: channels-first (B, C_i, *spatial_i) for CNNs, tokens (B, N, C)
with ``num_prefix_tokens`` class/register tokens for vision transformers.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from ..policies.manifoldmix import CHANNELS_FIRST, FeatureLayout

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


@dataclass
class ModelSplit:
    """``model(x) == head(stages[-1](...stages[0](x)))``.

    layouts[i]: how the output of stages[i] is laid out (a ``FeatureLayout``): channels-first
    (B, C_i, *spatial_i), the default for every stage when not given, or
    ``FeatureLayout.tokens(p)`` for (B, N, C) tokens of which the first p are prefix tokens."""
    stages: list[Callable[[torch.Tensor], torch.Tensor]]
    head: Callable[[torch.Tensor], torch.Tensor]
    description: str
    layouts: Optional[list[FeatureLayout]] = field(default=None)

    def __post_init__(self) -> None:
        if self.layouts is None:
            self.layouts = [CHANNELS_FIRST] * len(self.stages)
        self.layouts = list(self.layouts)
        if len(self.layouts) != len(self.stages) or not all(isinstance(l, FeatureLayout) for l in self.layouts):
            raise ValueError(f"ModelSplit layouts must be one FeatureLayout per stage ({len(self.stages)} stages), "
                             f"got {self.layouts!r}")


def _is_vit(model: nn.Module) -> bool:
    """timm VisionTransformer-like: patch_embed -> _pos_embed -> [patch_drop, norm_pre] -> blocks
    (an nn.Sequential) -> norm is forward_features, then forward_head."""
    return (isinstance(getattr(model, "patch_embed", None), nn.Module)
            and isinstance(getattr(model, "blocks", None), nn.Sequential) and len(model.blocks) > 0
            and callable(getattr(model, "_pos_embed", None))
            and isinstance(getattr(model, "norm", None), nn.Module)
            and callable(getattr(model, "forward_head", None))
            and isinstance(getattr(model, "num_prefix_tokens", None), int)
            and not isinstance(model.num_prefix_tokens, bool))


def _split_vit(model: nn.Module, groups: int = 4) -> ModelSplit:
    """Stage 1: patch embedding + position embedding (+ patch_drop, norm_pre) + the first group of
    blocks; then the blocks in ``groups`` near-equal groups (fewer when there are fewer blocks),
    the final ``norm`` in the last stage; head = ``forward_head``. Every stage outputs tokens
    (B, N, C) with ``model.num_prefix_tokens`` prefix tokens."""
    depth = len(model.blocks)
    n = min(groups, depth)
    base, extra = divmod(depth, n)
    bounds = [0]
    for i in range(n):
        bounds.append(bounds[-1] + base + (1 if i < extra else 0))

    def embed(x, m=model):
        x = m._pos_embed(m.patch_embed(x))
        if isinstance(getattr(m, "patch_drop", None), nn.Module):
            x = m.patch_drop(x)
        if isinstance(getattr(m, "norm_pre", None), nn.Module):
            x = m.norm_pre(x)
        return x

    def make_stage(lo: int, hi: int, first: bool, last: bool):
        def stage(x, m=model):
            if first:
                x = embed(x)
            for i in range(lo, hi):
                x = m.blocks[i](x)
            return m.norm(x) if last else x
        return stage

    stages = [make_stage(bounds[i], bounds[i + 1], i == 0, i == n - 1) for i in range(n)]
    names = [f"blocks[{bounds[i]}:{bounds[i + 1]}]" for i in range(n)]
    names[0] = "patch_embed+pos_embed+" + names[0]
    names[-1] += "+norm"
    layout = FeatureLayout.tokens(int(model.num_prefix_tokens))
    return ModelSplit(stages, model.forward_head, ", ".join(names) + " + forward_head (tokens)",
                      [layout] * n)


def split_model(model: nn.Module) -> ModelSplit | None:
    """Split a model into stages and a head, or None when the model cannot be split."""
    if getattr(model, "output_fmt", None) == "NHWC":
        # channels-last feature maps (timm's Swin, MambaOut, ...): no layout describes them yet, and
        # reading them as channels-first would mix the wrong axes, so feature mixing is refused
        return None
    if isinstance(getattr(model, "stages", None), nn.ModuleList) and isinstance(getattr(model, "head", None), nn.Module):
        return ModelSplit(list(model.stages), model.head, f"{len(model.stages)} stages + head")
    if all(hasattr(model, a) for a in ("conv1", "bn1", "act1", "maxpool", "layer1", "layer2", "layer3", "layer4",
                                       "forward_head")):
        def stem_layer1(x, m=model):
            return m.layer1(m.maxpool(m.act1(m.bn1(m.conv1(x)))))
        return ModelSplit([stem_layer1, model.layer2, model.layer3, model.layer4], model.forward_head,
                          "stem+layer1, layer2, layer3, layer4 + forward_head")
    if _is_vit(model):
        return _split_vit(model)
    if callable(getattr(model, "forward_features", None)) and callable(getattr(model, "forward_head", None)):
        # transformers with prefix tokens (timm sets num_prefix_tokens) output tokens (B, N, C)
        p = getattr(model, "num_prefix_tokens", None)
        tokens = isinstance(p, int) and not isinstance(p, bool) and p >= 0
        return ModelSplit([model.forward_features], model.forward_head,
                          "forward_features + forward_head" + (" (tokens)" if tokens else ""),
                          [FeatureLayout.tokens(p) if tokens else CHANNELS_FIRST])
    return None


class MixNet(nn.Module):
    """The module the engine trains (and DDP wraps): ``model`` plus an optional mixing hook.

    forward(x) -> model(x); forward(x, stage=k, mix=fn) runs the split model and replaces the
    output h of stages[k-1] by fn(h) (k >= 1). Going through this one forward keeps DDP's
    gradient hooks intact for feature-level policies."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self._split = split_model(model)

    @property
    def split(self) -> ModelSplit | None:
        return self._split

    def forward(self, x: torch.Tensor, stage: int | None = None,
                mix: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        if mix is None or stage is None or stage == 0:
            return self.model(x)
        if self._split is None:
            raise ValueError(f"{type(self.model).__name__} cannot be split into stages for feature mixing")
        h = x
        for i, stage_fn in enumerate(self._split.stages, start=1):
            h = stage_fn(h)
            if i == stage:
                h = mix(h)
        return self._split.head(h)
