"""Shared parts of the learned mixers (AutoMix, SAMix, AdAutoMix): the momentum encoder, the mixer
networks, their losses, and the base class that trains a mixer beside the classifier.

A learned mixer owns its training step (``needs = "step"``, see ``openmix.policies.step``). Per
batch it draws two sets of partners and ratios: one to train the MIXER (its mask goes through a
frozen momentum copy of the classifier, and only the mixer's parameters get the gradient), one to
train the CLASSIFIER (the mixer's mask is detached: the classifier's loss never reaches the
mixer). This is the authors' design (OpenMixup ``AutoMixup``/``AdAutoMix``: ``index_mb``/``lam[0]``
train the Mix Block through ``backbone_k``, ``index_bb``/``lam[1]`` train ``backbone_q``).

Masks: ``(B, K, *spatial)`` weights of the K mixed samples per pixel, in [0, 1], summing to 1 over K.
Column 0 is the row's own sample; ``indices[:, k]`` says which row column k takes. The label of a
mixed row weighs sample k by the MEAN of its mask (so ``MixedBatch.lam == mask.mean`` per row).

What they learn at small scale (measured, ``benchmarks/learned_mixers_digits.py``: digits, small
CNN, 20 epochs, ~400 steps, seeds 0-2): the mask RATIO follows λ (AutoMix own-mask mean 0.28 /
0.51 / 0.74 for λ = 0.1 / 0.5 / 0.9), but the masks are spatially almost uniform (within-row std
0.000 AutoMix, 0.02 SAMix, 0.001 AdAutoMix): the attention starts at the authors' N(0, 0.01^2)
initialisation, where q.k ~ 0, so P is uniform and ``P v`` is constant over positions, and a few
hundred steps do not move it off that point (the authors train 10^5 steps and more). On such runs
these policies act as a learned-ratio mixup; do not read the digits figures as the papers' masks.

Everything here runs on any channels-first feature map ``(B, C, *spatial)`` with 1 to 3 spatial
dims: the authors' 1x1 convolutions are linear maps over the channels of the flattened positions.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..batch import MixedBatch
from ..checks import check_choice, check_non_negative, check_probability
from ..features import split_model
from .base import lam_dtype
from .step import StepPolicy

__all__ = ["MomentumEncoder", "PairMixBlock", "SAMixBlock", "MultiMixBlock", "LearnedMixer", "StepLosses",
           "mix_samples_with_masks", "mask_ratio_loss", "soft_cross_entropy", "UPSAMPLE_MODES"]

UPSAMPLE_MODES = ("nearest", "bilinear")
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


# ------------------------------------------------------------------------------- encoder
class MomentumEncoder:
    """A frozen copy of the classifier whose parameters follow the classifier's as an exponential
    moving average (AutoMix's "momentum pipeline"; ``backbone_k`` in the authors' code).

    The decay warms up as ``min(decay, (1 + t) / (10 + t))`` after t updates (the authors start at
    0.999 with no warm-up, which suits 10^5-step runs but leaves the copy at its initialisation for
    the first ~1000 steps; the warm-up lets short runs feed the mixer useful features). Buffers
    (BatchNorm statistics) are not averaged: as in the authors' code the copy runs in train mode
    and keeps the statistics of its own forwards."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = float(decay)
        self.updates = 0
        self.module = copy.deepcopy(model)
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.split = split_model(self.module)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for mine, theirs in zip(self.module.parameters(), model.parameters()):
            mine.lerp_(theirs.detach(), 1.0 - decay)

    def features(self, x: torch.Tensor, stage: int, with_logits: bool = False):
        """x: (B, C, *spatial) -> the output of ``stages[stage - 1]`` (B, C', *spatial'), and the
        logits (B, K) when ``with_logits`` (one pass through the split model)."""
        h = x
        stages = self.split.stages
        for fn in stages[:stage]:
            h = fn(h)
        if not with_logits:
            return h
        out = h
        for fn in stages[stage:]:
            out = fn(out)
        return h, self.split.head(out)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])


# ------------------------------------------------------------------------------- networks
def _linear(in_features: int, out_features: int, bias: bool, generator: torch.Generator) -> nn.Linear:
    """A 1x1 convolution as a linear map over channels, initialised as the authors' Mix Blocks
    (weights ~ N(0, 0.01^2), bias 0), from ``generator``."""
    layer = nn.Linear(in_features, out_features, bias=bias)
    with torch.no_grad():
        layer.weight.normal_(0.0, 0.01, generator=generator)
        if bias:
            layer.bias.zero_()
    return layer


def _positions(feats: torch.Tensor) -> torch.Tensor:
    """(B, C, *spatial) -> (B, N, C) with N = prod(spatial)."""
    return feats.flatten(2).transpose(1, 2)


def _attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v in float32 (the authors force fp32 here).
    query, key: (B, N, d); value: (B, N, 1) -> (B, N, 1)."""
    scores = torch.matmul(query.float(), key.float().transpose(1, 2)) / math.sqrt(query.shape[-1])
    return torch.matmul(scores.softmax(dim=-1), value.float())


def _lam_channel(lam: torch.Tensor, n: int) -> torch.Tensor:
    """(B,) -> (B, N, 1): λ as an extra input channel at every position."""
    return lam.float().view(-1, 1, 1).expand(-1, n, 1)


class PairMixBlock(nn.Module):
    """AutoMix's Mix Block (Liu et al., ECCV 2022; OpenMixup ``PixelMixBlock``): cross-attention
    from the row's features (queries) to its partner's (keys, values); the values give one logit
    per partner position, so ``P v`` is the partner's mask logit at each position of the row.

    With ``lam_concat`` λ is appended as a channel to the row's features and 1 - λ to the
    partner's (the paper's λ embedding; OpenMixup's ImageNet configs; its CIFAR configs turn it
    off). Query and key share one projection, as in the authors' block.

    forward(feats (B, C, *s), index (B,), lam (B,)) -> partner mask logits (B, 1, *s)."""

    def __init__(self, channels: int, reduction: int = 2, lam_concat: bool = True,
                 generator: Optional[torch.Generator] = None):
        super().__init__()
        generator = generator or torch.Generator().manual_seed(0)
        inner = max(channels // reduction, 1)
        width = channels + int(lam_concat)
        self.lam_concat = lam_concat
        self.query = _linear(width, inner, True, generator)
        self.value = _linear(width, 1, True, generator)

    def forward(self, feats: torch.Tensor, index: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        own = _positions(feats)
        partner = own[index]
        if self.lam_concat:
            n = own.shape[1]
            own = torch.cat([own, _lam_channel(lam, n)], dim=2)
            partner = torch.cat([partner, _lam_channel(1.0 - lam, n)], dim=2)
        logits = _attend(self.query(own), self.query(partner), self.value(partner))
        return logits.transpose(1, 2).reshape(feats.shape[0], 1, *feats.shape[2:])


def rescale_lam(lam: torch.Tensor, k: float) -> torch.Tensor:
    """SAMix's λ rescaling (OpenMixup ``rescale_lam_mult``): with c = k + 1,
    (4/3 λ^3 - 2 λ^2 + c λ) / (c - 2/3): fixes 0, 1/2 and 1; steeper at the ends for small k."""
    c = float(k) + 1.0
    return (4.0 / 3.0 * lam ** 3 - 2.0 * lam ** 2 + c * lam) / (c - 2.0 / 3.0)


class SAMixBlock(nn.Module):
    """SAMix's Mixer (Li et al., "Boosting Discriminative Visual Representation Learning with
    Scenario-Agnostic Mixup"; OpenMixup ``PixelMixBlock`` with ``lam_mul``, ``lam_residual``,
    ``x_qk_concat`` and a ``ConvNeck`` value network):

    - λ embedding by residual scaling: row features * (1 + λ'), partner features * (1 + 1 - λ'),
      λ' = ``rescale_lam(λ, lam_mul_k)`` (``lam_mul_k`` < 0: λ' = λ);
    - queries and keys both from the concatenated pair [row; partner] (separate projections);
    - values from the partner through a small network: 1x1 conv (C -> C/2, no bias), BatchNorm,
      ELU, 1x1 conv (C/2 -> 1, no bias), dropout (the authors' 128 hidden channels are C/2 for
      their 256-channel ResNet stage; here C/2 for any C).

    forward(feats (B, C, *s), index (B,), lam (B,)) -> partner mask logits (B, 1, *s)."""

    def __init__(self, channels: int, reduction: int = 2, lam_mul_k: float = 0.25, dropout: float = 0.0,
                 generator: Optional[torch.Generator] = None):
        super().__init__()
        generator = generator or torch.Generator().manual_seed(0)
        inner = max(channels // reduction, 1)
        hidden = max(channels // 2, 1)
        self.lam_mul_k = float(lam_mul_k)
        self.query = _linear(2 * channels, inner, True, generator)
        self.key = _linear(2 * channels, inner, True, generator)
        self.value_in = _linear(channels, hidden, False, generator)
        self.value_norm = nn.BatchNorm1d(hidden)
        self.value_out = _linear(hidden, 1, False, generator)
        self.dropout = nn.Dropout(dropout)

    def value(self, partner: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, N, 1)."""
        h = self.value_in(partner)
        h = self.value_norm(h.transpose(1, 2)).transpose(1, 2)
        return self.dropout(self.value_out(F.elu(h)))

    def forward(self, feats: torch.Tensor, index: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        lam = lam.float()
        lam_r = rescale_lam(lam, self.lam_mul_k) if self.lam_mul_k >= 0 else lam
        own = _positions(feats)
        partner = own[index] * (2.0 - lam_r).view(-1, 1, 1)
        own = own * (1.0 + lam_r).view(-1, 1, 1)
        pair = torch.cat([own, partner], dim=2)
        logits = _attend(self.query(pair), self.key(pair), self.value(partner))
        return logits.transpose(1, 2).reshape(feats.shape[0], 1, *feats.shape[2:])


class MultiMixBlock(nn.Module):
    """AdAutoMix's generator (Qin et al., ICLR 2024; OpenMixup ``AdaptiveMask``) for K >= 2 samples:
    sample k's queries attend to the sum of the OTHER samples' keys, over its own values:
    ``m_k = softmax(q_k (sum_{j != k} k_j)^T / sqrt(d)) v_k``; the K logit maps are then upsampled and
    normalised with a softmax over k (done by the caller). With ``lam_concat`` λ_k is appended as a
    channel to sample k's features.

    forward(feats (B, C, *s), indices (B, K), lams (B, K)) -> mask logits (B, K, *s)."""

    def __init__(self, channels: int, reduction: int = 2, lam_concat: bool = True,
                 generator: Optional[torch.Generator] = None):
        super().__init__()
        generator = generator or torch.Generator().manual_seed(0)
        inner = max(channels // reduction, 1)
        width = channels + int(lam_concat)
        self.lam_concat = lam_concat
        self.query = _linear(width, inner, True, generator)
        self.key = _linear(width, inner, True, generator)
        self.value = _linear(width, 1, True, generator)

    def forward(self, feats: torch.Tensor, indices: torch.Tensor, lams: torch.Tensor) -> torch.Tensor:
        pos = _positions(feats)
        samples = [pos[indices[:, k]] for k in range(indices.shape[1])]
        if self.lam_concat:
            samples = [torch.cat([s, _lam_channel(lams[:, k], s.shape[1])], dim=2) for k, s in enumerate(samples)]
        queries = [self.query(s) for s in samples]
        keys = [self.key(s) for s in samples]
        key_sum = torch.stack(keys).sum(dim=0)
        logits = [_attend(q, key_sum - k, self.value(s)) for q, k, s in zip(queries, keys, samples)]
        return torch.cat(logits, dim=2).transpose(1, 2).reshape(feats.shape[0], len(samples), *feats.shape[2:])


def upsample(logits: torch.Tensor, size: torch.Size, mode: str) -> torch.Tensor:
    """(B, K, *s) -> (B, K, *size); ``bilinear`` means the linear interpolation of the data's
    dimensionality (linear, bilinear or trilinear)."""
    if tuple(logits.shape[2:]) == tuple(size):
        return logits
    if mode == "nearest":
        return F.interpolate(logits, size=tuple(size), mode="nearest")
    linear = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(size)]
    return F.interpolate(logits, size=tuple(size), mode=linear, align_corners=False)


# ------------------------------------------------------------------------------- mixing and losses
def mix_samples_with_masks(x: torch.Tensor, indices: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """sum_k masks[:, k] * x[indices[:, k]]. x: (B, C, *s); indices: (B, K); masks: (B, K, *s)."""
    out = masks[:, :1] * x[indices[:, 0]]
    for k in range(1, indices.shape[1]):
        out = out + masks[:, k:k + 1] * x[indices[:, k]]
    return out


def mixed_label(y: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, num_classes) = sum_k weights[:, k] * one_hot(y[indices[:, k]]); y: (B,) or (B, num_classes)."""
    onehot = F.one_hot(y.long(), num_classes).float() if not y.is_floating_point() else y.float()
    return sum(weights[:, k:k + 1].float() * onehot[indices[:, k]] for k in range(indices.shape[1]))


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """mean over rows of -sum_c targets * log softmax(logits). logits, targets: (B, num_classes)."""
    return torch.sum(-targets * F.log_softmax(logits.float(), dim=1), dim=1).mean()


def mask_ratio_loss(own_mask: torch.Tensor, lam: torch.Tensor, margin: float) -> torch.Tensor:
    """AutoMix's mask loss: mean over rows of max(|mean(own_mask) - λ| - margin, 0).
    own_mask: (B, 1, *s); lam: (B,). (The authors compare the BATCH mean with their batch-level λ;
    per row is the same in ``mode='batch'`` up to the order of mean and absolute value.)"""
    ratio = own_mask.flatten(1).mean(dim=1)
    return torch.clamp((ratio - lam.float()).abs() - margin, min=0.0).mean()


# ------------------------------------------------------------------------------- base policy
@dataclass
class StepLosses:
    """One learned-mixer step: the batch and loss of the classifier, the mixer's loss (None when
    the mixer does not train this step), and the masks each one used: (B, K, *spatial)."""
    batch: MixedBatch
    classifier_loss: torch.Tensor
    mixer_loss: Optional[torch.Tensor]
    mixer_masks: Optional[torch.Tensor] = None
    classifier_masks: Optional[torch.Tensor] = None


@dataclass
class Draw:
    """Partners and ratios of one mixed batch: indices (B, K) long (column 0 = the row itself),
    lams (B, K) summing to 1, constant (B,) bool: rows mixed with constant masks (lams), not the mixer."""
    indices: torch.Tensor
    lams: torch.Tensor
    constant: torch.Tensor

    def to(self, device: torch.device) -> "Draw":
        return Draw(self.indices.to(device), self.lams.to(device), self.constant.to(device))


def _distributed_world() -> int:
    import torch.distributed as dist
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class LearnedMixer(StepPolicy):
    """Base of the learned mixers (see the module docstring). Subclasses give ``build_mixer`` and
    ``step_losses``; this class owns set-up, the mixer's optimiser, the momentum encoder, DDP
    synchronisation, checkpoint state and the mask snapshots the figure module reads.

    Args:
        alpha, mode, p, pairing, stop_epoch, seed: see ``MixPolicy`` (rows left unmixed by ``p``
            train the classifier with λ = 1; the mixer trains on every row).
        feature_stage: the stage whose output feeds the mixer: k >= 1 is the output of
            ``stages[k-1]`` of the model split (``openmix.features``), -1 the last stage, -2 the one
            before (default: AutoMix's layer 3 of a 4-stage ResNet).
        ema_decay: decay of the momentum encoder (0.999 in all three papers).
        lam_margin: rows whose smallest ratio is <= lam_margin train the classifier on plain
            (constant-mask) mixing instead of the mixer's mask (the authors' ``lam_margin``).
        upsample: ``nearest`` or ``bilinear`` (linear interpolation of the data's dimensionality).
        mixer_lr, mixer_momentum, mixer_weight_decay: the mixer's SGD (the authors train it with the
            classifier's SGD, lr 0.1, momentum 0.9, weight decay 1e-4; constant lr here).
        snapshot_samples: rows of the first batch kept to record the mixer's masks at a few epochs
            (0: none); see ``openmix.bench.learned_masks``.
    """

    uses_mask = True
    num_samples = 2

    def __init__(self, alpha: Any = 1.0, mode: str = "batch", p: Any = 1.0, pairing: Any = "random",
                 stop_epoch: Optional[int] = None, seed: Optional[int] = None, feature_stage: int = -2,
                 ema_decay: float = 0.999, lam_margin: float = 0.08, upsample: str = "nearest",
                 mixer_lr: float = 0.1, mixer_momentum: float = 0.9, mixer_weight_decay: float = 1e-4,
                 snapshot_samples: int = 8) -> None:
        super().__init__(alpha=alpha, mode=mode, p=p, pairing=pairing, stop_epoch=stop_epoch, seed=seed)
        if isinstance(feature_stage, bool) or not isinstance(feature_stage, int) or feature_stage == 0:
            raise ValueError(f"feature_stage must be a non-zero int (k >= 1: output of stage k; -1: the last "
                             f"stage, -2: the one before), got {feature_stage!r}")
        if not 0.0 <= float(ema_decay) < 1.0 or isinstance(ema_decay, bool):
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay!r}")
        self.feature_stage = feature_stage
        self.ema_decay = float(ema_decay)
        self.lam_margin = check_probability(lam_margin, "lam_margin")
        if self.lam_margin >= 0.5:
            raise ValueError(f"lam_margin must be in [0, 0.5), got {lam_margin!r}")
        self.upsample = check_choice(upsample, "upsample", UPSAMPLE_MODES)
        self.mixer_lr = check_non_negative(mixer_lr, "mixer_lr")
        self.mixer_momentum = check_probability(mixer_momentum, "mixer_momentum")
        self.mixer_weight_decay = check_non_negative(mixer_weight_decay, "mixer_weight_decay")
        if isinstance(snapshot_samples, bool) or not isinstance(snapshot_samples, int) or snapshot_samples < 0:
            raise ValueError(f"snapshot_samples must be an int >= 0, got {snapshot_samples!r}")
        self.snapshot_samples = snapshot_samples
        self.mixer: Optional[nn.Module] = None
        self.encoder: Optional[MomentumEncoder] = None
        self.steps = 0
        self._probe: Optional[Dict[str, torch.Tensor]] = None
        self._snapshots: Dict[str, List] = {"epochs": [], "masks": []}

    # -- set-up ------------------------------------------------------------------------------
    def build_mixer(self, channels: int, generator: torch.Generator) -> nn.Module:
        raise NotImplementedError

    def setup(self, ctx: Any) -> None:
        name = type(self).__name__
        if ctx.task != "classification":
            raise ValueError(f"{name} trains its mixer with a classification loss; data.task must be "
                             f"'classification', got {ctx.task!r}")
        split = ctx.net.split
        if split is None:
            raise ValueError(f"{name} reads feature maps inside the model, but {type(ctx.model).__name__} cannot be "
                             f"split into stages and a head; use a CNN with forward_features/forward_head (timm) "
                             f"or small_cnn/conv1d")
        self.stage = self._resolve_stage(len(split.stages))
        if split.layouts[self.stage - 1].is_tokens:
            raise ValueError(f"{name} needs channels-first feature maps (B, C, *spatial) at feature_stage="
                             f"{self.feature_stage}, but this model's stage {self.stage} outputs tokens (B, N, C); "
                             f"use a CNN (any timm CNN, small_cnn, conv1d)")
        self._model, self._device = ctx.model, ctx.device
        self.encoder = MomentumEncoder(ctx.model, self.ema_decay)
        channels = self._probe_channels(ctx.model)
        init = torch.Generator().manual_seed(int(torch.randint(0, 2 ** 62, (1,), generator=self.generator)))
        with torch.random.fork_rng(devices=[]):   # module constructors draw from the global RNG
            self.mixer = self.build_mixer(channels, init).to(ctx.device)
        self.optimizer = torch.optim.SGD(self.mixer.parameters(), lr=self.mixer_lr, momentum=self.mixer_momentum,
                                         weight_decay=self.mixer_weight_decay)
        if _distributed_world() > 1:   # one mixer for all ranks: rank 0's initial state, then averaged gradients
            import torch.distributed as dist
            for t in [*self.mixer.state_dict().values(), *self.encoder.module.state_dict().values()]:
                dist.broadcast(t, src=0)

    def _resolve_stage(self, num_stages: int) -> int:
        k = self.feature_stage
        if 1 <= k <= num_stages:
            return k
        if -num_stages <= k <= -1:
            return num_stages + 1 + k
        raise ValueError(f"feature_stage must be in 1..{num_stages} or -{num_stages}..-1 for this model "
                         f"({num_stages} stages), got {k}")

    def _probe_channels(self, model: nn.Module) -> int:
        """Channels of the mixer's feature map: one zero batch through the encoder (eval mode, no grad)."""
        conv = next((m for m in model.modules() if isinstance(m, _CONVS)), None)
        if conv is None:
            raise ValueError(f"{type(self).__name__} mixes feature maps of a convolutional model; "
                             f"{type(model).__name__} has no convolution (use small_cnn, conv1d or a timm CNN)")
        dims = _CONVS.index(type(conv)) + 1
        probe = torch.zeros(2, conv.in_channels, *([64] * dims), device=self._device)
        module = self.encoder.module
        was_training = module.training
        module.eval()
        try:
            with torch.no_grad():
                h = self.encoder.features(probe, self.stage)
        except RuntimeError as exc:   # e.g. the MLP: its 1x1 convolutions see flattened inputs
            raise ValueError(f"{type(self).__name__} mixes feature maps of a convolutional model over the input's "
                             f"spatial dims; {type(model).__name__} does not take (B, {conv.in_channels}, "
                             f"*spatial) inputs to convolutions (use small_cnn, conv1d or a timm CNN): "
                             f"{str(exc).splitlines()[0]}") from exc
        finally:
            module.train(was_training)
        if h.ndim < 3:
            raise ValueError(f"stage {self.stage} of {type(model).__name__} outputs shape {tuple(h.shape)}, not a "
                             f"feature map (B, C, *spatial); choose an earlier feature_stage")
        return int(h.shape[1])

    # -- draws -------------------------------------------------------------------------------
    def draw_pair(self, shape: torch.Size, y: torch.Tensor) -> Draw:
        """Partner and λ per row (``MixPolicy.sample_params``: mode, p and pairing apply)."""
        params = self.sample_params(shape, self.generator, y)
        lam = params["lam"].float()
        indices = torch.stack([torch.arange(shape[0]), params["index"].cpu()], dim=1)
        constant = ~params["mixed"] | (torch.minimum(lam, 1.0 - lam) <= self.lam_margin)
        return Draw(indices, torch.stack([lam, 1.0 - lam], dim=1), constant)

    @staticmethod
    def constant_rows(masks: torch.Tensor, draw: Draw) -> torch.Tensor:
        """masks (B, K, *s) with the rows of ``draw.constant`` replaced by constant masks ``draw.lams``."""
        shape = (masks.shape[0], masks.shape[1]) + (1,) * (masks.ndim - 2)
        lam_map = draw.lams.to(masks.dtype).view(shape).expand_as(masks)
        return torch.where(draw.constant.view(-1, *([1] * (masks.ndim - 1))), lam_map, masks)

    @staticmethod
    def pair_batch(x: torch.Tensor, y: torch.Tensor, draw: Draw, masks: torch.Tensor) -> MixedBatch:
        """The MixedBatch of a two-sample mix: partner ``indices[:, 1]``, own mask ``masks[:, :1]``
        (B, 1, *s), λ = its mean per row."""
        own = masks[:, :1]
        lam = own.flatten(1).mean(dim=1).to(lam_dtype(x))
        return MixedBatch(x=mix_samples_with_masks(x, draw.indices, masks).to(x.dtype), y=y,
                          index=draw.indices[:, 1], lam=lam, mask=own.to(x.dtype))

    # -- the step ----------------------------------------------------------------------------
    def step_losses(self, x: torch.Tensor, y: torch.Tensor, ctx: Any) -> StepLosses:
        raise NotImplementedError

    def training_step(self, x: torch.Tensor, y: torch.Tensor, ctx: Any) -> Tuple[MixedBatch, torch.Tensor]:
        """x: (B, C, *spatial) normalised; y: (B,) -> (MixedBatch, classifier loss). The mixer's
        gradient is computed here (kept out of the classifier's loss) and applied in after_step."""
        if self.mixer is None:
            raise RuntimeError(f"{type(self).__name__}.setup(ctx) must run before training_step (the engine calls it)")
        if x.ndim < 3:
            raise ValueError(f"{type(self).__name__} mixes inputs with spatial dims (B, C, *spatial), got shape "
                             f"{tuple(x.shape)}")
        self._record_probe(x, y)
        self.encoder.module.train()
        if not self.active or self.alpha == 0.0 or self.p == 0.0:
            mb = self.identity(x, y)
            with ctx.autocast():
                logits = ctx.forward(x).float()
            return mb, ctx.loss_fn(logits, mb)
        out = self.step_losses(x, y, ctx)
        if out.mixer_loss is not None:
            params = list(self.mixer.parameters())
            grads = torch.autograd.grad(out.mixer_loss, params, allow_unused=True)
            for p, g in zip(params, grads):
                p.grad = torch.zeros_like(p) if g is None else g
        return out.batch, out.classifier_loss

    def classifier_loss(self, mb: MixedBatch, x: torch.Tensor, y: torch.Tensor, ctx: Any,
                        clean_weight: float) -> torch.Tensor:
        """loss_fn(classifier(mb.x), mb) + clean_weight * loss_fn(classifier(x), unmixed batch)."""
        with ctx.autocast():
            loss = ctx.loss_fn(ctx.forward(mb.x).float(), mb)
            if clean_weight > 0:
                loss = loss + clean_weight * ctx.loss_fn(ctx.forward(x).float(), self.identity(x, y))
        return loss

    def after_step(self) -> None:
        """The mixer's optimiser step (gradients averaged across DDP ranks), then the momentum encoder's update."""
        if self.mixer is None:
            return
        if self.active and self.alpha > 0.0 and self.p > 0.0:
            params = [p for p in self.mixer.parameters()]
            if _distributed_world() > 1:
                _average_gradients(params)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.encoder.update(self._model)
        self.steps += 1

    # -- masks of a fixed probe (for the figure) ----------------------------------------------
    def masks(self, feats: torch.Tensor, draw: Draw, size: torch.Size) -> torch.Tensor:
        """The mixer's masks (B, K, *size) for features (B, C, *s) of the rows and a draw."""
        raise NotImplementedError

    def _record_probe(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if self._probe is not None or self.snapshot_samples == 0 or x.shape[0] < 2:
            return
        n = min(self.snapshot_samples, x.shape[0])
        k = self.num_samples
        indices = torch.stack([(torch.arange(n) + j) % n for j in range(k)], dim=1)
        self._probe = {"x": x[:n].detach().float().cpu().clone(), "y": y[:n].detach().cpu().clone(),
                       "indices": indices, "lams": torch.full((n, k), 1.0 / k)}
        self._snapshot(0)

    @torch.no_grad()
    def _snapshot(self, epochs_done: int) -> None:
        """Masks of the probe rows (eval mode, no gradient, no random draw) after ``epochs_done``
        epochs; the snapshots after 0 epochs and after powers of two are kept, plus the latest."""
        epochs, stored = self._snapshots["epochs"], self._snapshots["masks"]
        if self._probe is None or self.mixer is None or (epochs and epochs[-1] == epochs_done):
            return
        modules = [self.mixer, self.encoder.module]
        modes = [m.training for m in modules]
        for m in modules:
            m.eval()
        x = self._probe["x"].to(self._device)
        draw = Draw(self._probe["indices"], self._probe["lams"], torch.zeros(x.shape[0], dtype=torch.bool))
        feats = self.encoder.features(x, self.stage).float()
        masks = self.masks(feats, draw.to(self._device), x.shape[2:]).to("cpu", torch.float16)
        for m, mode in zip(modules, modes):
            m.train(mode)
        epochs.append(epochs_done)
        stored.append(masks)
        keep = [i for i, e in enumerate(epochs) if e == 0 or (e & (e - 1)) == 0 or i == len(epochs) - 1]
        self._snapshots = {"epochs": [epochs[i] for i in keep], "masks": [stored[i] for i in keep]}

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        """Generator, epoch, mixer, its optimiser, the momentum encoder, the step count, the probe
        and the mask snapshots (a snapshot of the masks after this epoch is taken here: the trainer
        asks for the state at the end of every epoch)."""
        state = super().state_dict()
        if self.mixer is None:
            return state
        self._snapshot(self.epoch + 1)
        state.update(mixer=self.mixer.state_dict(), optimizer=self.optimizer.state_dict(),
                     encoder=self.encoder.state_dict(), steps=self.steps, probe=self._probe,
                     snapshots={"epochs": list(self._snapshots["epochs"]), "masks": list(self._snapshots["masks"])},
                     policy=type(self).__name__, num_samples=self.num_samples)
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        super().load_state_dict(state)
        if "mixer" not in state:
            return
        if self.mixer is None:
            raise RuntimeError(f"{type(self).__name__}.setup(ctx) must run before load_state_dict "
                               f"(it builds the mixer)")
        self.mixer.load_state_dict(state["mixer"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.encoder.load_state_dict(state["encoder"])
        self.steps = int(state["steps"])
        self._probe = state["probe"]
        snaps = state["snapshots"]
        self._snapshots = {"epochs": list(snaps["epochs"]), "masks": list(snaps["masks"])}

    def cost_model_forwards(self) -> Optional[int]:
        return None

    def extra_repr(self) -> str:
        return (f"feature_stage={self.feature_stage}, ema_decay={self.ema_decay}, lam_margin={self.lam_margin}, "
                f"upsample={self.upsample!r}, mixer_lr={self.mixer_lr}")


def _average_gradients(params: List[torch.Tensor]) -> None:
    """All-reduce the mixer's gradients (one flat tensor) and divide by the world size."""
    import torch.distributed as dist
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset:offset + n].view_as(g).clone()
        offset += n
