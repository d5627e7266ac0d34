"""Attentive CutMix (Walawalkar et al., ICASSP 2020): the most activated cells of the source's
feature map pasted onto the target."""
from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..batch import MixedBatch
from ..checks import check_positive_int
from ..features import patch_grid
from ..ops import blend_with_partner
from .base import lam_dtype, register_policy
from .gridmix import grid_cells
from .input_mixing import logits_of, require_classification
from .step import StepPolicy

__all__ = ["AttentiveMix", "activation_grid", "top_cells_mask"]

TRAINED = "trained"


def activation_grid(features: torch.Tensor, grid: int) -> torch.Tensor:
    """features: (B, C, h, w) -> (B, grid, grid) channel-mean activation, resampled to the grid
    (area averaging when shrinking, bilinear when growing)."""
    if features.ndim != 4:
        raise ValueError(f"features must have shape (B, C, h, w), got {tuple(features.shape)}")
    act = features.float().mean(dim=1, keepdim=True)
    if act.shape[2] == grid and act.shape[3] == grid:
        return act.squeeze(1)
    if act.shape[2] >= grid and act.shape[3] >= grid:
        return F.adaptive_avg_pool2d(act, grid).squeeze(1)
    return F.interpolate(act, size=(grid, grid), mode="bilinear", align_corners=False).squeeze(1)


def top_cells_mask(activation: torch.Tensor, top_k: int, size: tuple) -> torch.Tensor:
    """activation: (B, g, g) -> (B, 1, H, W) float mask, 0 on the pixels of each row's ``top_k``
    most activated cells (cells of floor/ceil(H/g) x floor/ceil(W/g) pixels), 1 elsewhere."""
    b, g, _ = activation.shape
    top = activation.flatten(1).topk(top_k, dim=1).indices                       # (B, k)
    chosen = torch.zeros(b, g * g, dtype=torch.bool, device=activation.device).scatter_(1, top, True).view(b, g, g)
    n = torch.full((b,), g, device=activation.device, dtype=torch.long)
    rows, cols = grid_cells(n, size[0]), grid_cells(n, size[1])                     # (B, H), (B, W)
    picked = chosen.gather(1, rows.unsqueeze(2).expand(b, size[0], g))             # (B, H, g)
    picked = picked.gather(2, cols.unsqueeze(1).expand(b, size[0], size[1]))       # (B, H, W)
    return (~picked).float().unsqueeze(1)


@register_policy("attentivemix")
class AttentiveMix(StepPolicy):
    """The ``top_k`` most activated cells of a ``grid`` x ``grid`` split of the SOURCE's feature
    map (the partner, x[index]) are pasted from the source at the same place; λ = 1 − pasted pixel
    share (paper: 6 of 7x7 cells from an ImageNet-pretrained ResNet-50, λ = 1 − 6/49).

    Where the features come from is the ``feature_model`` argument:
    - ``"trained"`` (default): the model being trained, the output of its last stage (CNN feature
      maps, or a ViT's patch tokens on its grid), in eval mode without gradients: one extra
      forward pass per step, no download. The default because no weights can be fetched offline;
    - a timm model name (e.g. ``"resnet50"``, the paper's): created once, frozen, in eval mode;
      ``pretrained=True`` loads timm's weights, which must already be in the local cache (there is
      no download here; a clear error says so). Without weights its activations are random.
    The activation of a cell is the channel mean of the map resampled to the grid.

    Args:
        top_k: cells pasted (paper 6); grid: cells per side (paper 7).
        feature_model, pretrained: see above.
        mode, p, pairing, stop_epoch, seed: as for every policy (``alpha`` is unused: λ is fixed).
    """

    needs = "step"
    spatial_dims = (2, 2)
    uses_alpha = False

    def __init__(self, top_k: int = 6, grid: int = 7, feature_model: str = TRAINED, pretrained: bool = False,
                 mode: str = "batch", p: Any = 1.0, pairing: Any = "random", stop_epoch: Optional[int] = None,
                 seed: Optional[int] = None) -> None:
        super().__init__(alpha=1.0, mode=mode, p=p, pairing=pairing, stop_epoch=stop_epoch, seed=seed)
        self.grid = check_positive_int(grid, "grid")
        self.top_k = check_positive_int(top_k, "top_k")
        if self.top_k > self.grid ** 2:
            raise ValueError(f"top_k must be at most grid**2 = {self.grid ** 2}, got top_k={top_k!r}")
        if not isinstance(feature_model, str) or not feature_model:
            raise ValueError(f"feature_model must be 'trained' or a timm model name, got {feature_model!r}")
        if not isinstance(pretrained, bool):
            raise ValueError(f"pretrained must be a bool, got {pretrained!r}")
        if feature_model == TRAINED and pretrained:
            raise ValueError("pretrained=True applies to a named feature_model (e.g. 'resnet50'); with "
                             "feature_model='trained' the features come from the model being trained")
        self.feature_model, self.pretrained = feature_model, pretrained
        self.extractor: Optional[nn.Module] = None

    def setup(self, ctx) -> None:
        require_classification(ctx, "attentivemix")
        if self.feature_model == TRAINED and ctx.net.split is None:
            raise ValueError(f"attentivemix feature_model='trained' reads the last stage of the model, but "
                             f"{type(ctx.model).__name__} cannot be split into stages; name a timm model "
                             f"instead (mix.feature_model=resnet18)")
        if self.feature_model != TRAINED:
            import timm
            if not timm.is_model(self.feature_model):
                raise ValueError(f"feature_model must be 'trained' or a timm model name, got {self.feature_model!r}")

    def build_extractor(self, device, in_chans: int) -> nn.Module:
        """The named timm model, frozen, eval mode, on ``device`` (weights only from the local cache)."""
        import timm
        if not timm.is_model(self.feature_model):
            raise ValueError(f"feature_model must be 'trained' or a timm model name, got {self.feature_model!r}")
        try:
            model = timm.create_model(self.feature_model, pretrained=self.pretrained, num_classes=0, in_chans=in_chans)
        except Exception as exc:  # noqa: BLE001 - timm raises many kinds when weights are missing
            hint = ("; this machine cannot download weights: put them in the timm / Hugging Face cache or use "
                    "pretrained=false") if self.pretrained else ""
            raise ValueError(f"feature_model={self.feature_model!r} (pretrained={self.pretrained}) could not be "
                             f"created: {type(exc).__name__}: {exc}{hint}") from exc
        model.eval().requires_grad_(False)
        return model.to(device)

    @torch.no_grad()
    def features(self, x: torch.Tensor, ctx) -> torch.Tensor:
        """x: (B, C, H, W) -> feature maps (B, C', h, w) of the feature model, no gradients."""
        if self.feature_model != TRAINED:
            if self.extractor is None:        # built on first use, for the data's channel count
                self.extractor = self.build_extractor(x.device, in_chans=x.shape[1])
            return self._as_map(self.extractor.forward_features(x), self.extractor)
        model, was_training = ctx.model, ctx.model.training
        model.eval()
        try:
            with ctx.autocast():
                h = x
                for stage in ctx.net.split.stages:
                    h = stage(h)
        finally:
            model.train(was_training)
        return self._as_map(h, model)

    @staticmethod
    def _as_map(h: torch.Tensor, model: nn.Module) -> torch.Tensor:
        """Tokens (B, N, C) of a ViT -> (B, C, h, w) on its patch grid; feature maps pass."""
        if h.ndim == 3:
            gh, gw = patch_grid(model)
            return h[:, h.shape[1] - gh * gw:].transpose(1, 2).reshape(h.shape[0], h.shape[2], gh, gw)
        return h

    def mix_with_features(self, x: torch.Tensor, y: torch.Tensor, features: torch.Tensor,
                          generator: Optional[torch.Generator] = None) -> MixedBatch:
        """x: (B, C, H, W), y, features: (B, C', h, w) of x (each row's own) -> the MixedBatch."""
        if not self.active or self.p == 0.0:
            return self.identity(x, y)
        generator = self.generator if generator is None else generator
        params = self.sample_params(x.shape, generator, y)
        index, mixed = params["index"].to(x.device), params["mixed"].to(x.device)
        mask = top_cells_mask(activation_grid(features, self.grid)[index], self.top_k, tuple(x.shape[2:]))
        mask = torch.where(mixed.view(-1, 1, 1, 1), mask, torch.ones_like(mask)).to(x.dtype)
        lam = mask.flatten(1).to(torch.float64).mean(dim=1)
        return MixedBatch(x=blend_with_partner(x, index, mask), y=y, index=index, lam=lam.to(lam_dtype(x)), mask=mask)

    def training_step(self, x, y, ctx):
        if not self.active or self.p == 0.0:     # no extra forward once mixing is off (stop_epoch, p = 0)
            mb = self.identity(x, y)
        else:
            mb = self.mix_with_features(x, y, self.features(x, ctx))
        return mb, ctx.loss_fn(logits_of(ctx, mb.x), mb)

    def preview(self, x, y, generator=None):
        """For openmix-show: the image's own brightness stands in for the feature map.
        -> (MixedBatch, note)."""
        mb = self.mix_with_features(x, y, x.float().mean(1, keepdim=True), generator)
        return mb, "cells chosen by a stand-in activation (brightness); in training: the feature model's"

    def cost_model_forwards(self) -> int:
        return 2 if self.feature_model == TRAINED else 1

    def extra_repr(self) -> str:
        return (f"top_k={self.top_k}, grid={self.grid}, feature_model={self.feature_model!r}, "
                f"pretrained={self.pretrained}")
