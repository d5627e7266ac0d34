"""Policies that own their training step: learned mixers and methods that need more than one
forward pass (AutoMix, RegMixup, TransMix, ...).

The engine hands such a policy (``needs = "step"``) each clean batch, already on the device and
normalised, and a ``StepContext``; the policy returns the ``MixedBatch`` it trained on and the
loss of the CLASSIFIER. The engine then back-propagates that loss, steps the classifier's
optimiser and scheduler, updates the EMA, and calls ``after_step()`` (where a policy steps its own
optimiser, updates a momentum encoder, ...). A policy that trains its own parameters computes
their gradients itself (``torch.autograd.grad`` or a separate backward) inside ``training_step``
and keeps them out of the classifier's loss (detach what the classifier must not train).

Lifecycle: ``setup(ctx)`` once, after the model exists and before a checkpoint is restored
(create modules and optimisers there, on ``ctx.device``); ``set_epoch``; ``training_step`` per
batch; ``after_step`` per batch; ``state_dict``/``load_state_dict`` hold everything a resumed run
needs (parameters, optimiser state, generators).
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Protocol, Tuple

import torch
from torch import nn

from ..batch import MixedBatch
from .base import MixPolicy

__all__ = ["StepContext", "StepPolicy"]


class StepContext(Protocol):
    """What the engine gives a step policy (``openmix.train.engine.EngineContext`` implements it).

    model: the classifier (``nn.Module``; (B, C, *spatial) -> (B, K)); net: ``openmix.features.MixNet``
    around it (``net.split``: stages + head, or None; ``net(x, stage=k, mix=fn)`` mixes inside the
    forward); forward: the training forward (DDP-synchronised; same signature as ``net``); loss_fn:
    the configured loss, ``loss_fn(logits, mb) -> scalar``; autocast(): the AMP context; device;
    task ("classification" | "regression"); num_classes; epoch (0-based); generator: the policy's
    generator on the CPU."""

    model: nn.Module
    net: Any
    forward: Callable[..., torch.Tensor]
    loss_fn: Callable[[torch.Tensor, MixedBatch], torch.Tensor]
    autocast: Callable[[], Any]
    device: torch.device
    task: str
    num_classes: int
    epoch: int


class StepPolicy(MixPolicy):
    """Base of the policies that own their training step (see the module docstring)."""

    needs = "step"
    spatial_dims = (0, 3)

    def __call__(self, x, y, generator=None, **context):
        raise TypeError(f"{type(self).__name__} trains with the model (needs='step'): it runs inside the openmix "
                        f"training engine (openmix-train mix=...), not in MixCollate or DeviceMixer")

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        inner = getattr(self, "inner", None)   # the input-level policy a step policy wraps, if any
        if inner is not None:
            inner.set_epoch(epoch)

    def setup(self, ctx: StepContext) -> None:
        """Create modules and optimisers (on ``ctx.device``); called once before any step."""

    def training_step(self, x: torch.Tensor, y: torch.Tensor, ctx: StepContext) -> Tuple[MixedBatch, torch.Tensor]:
        """x: (B, C, *spatial) normalised, on the device; y: (B,) labels or (B,) targets.
        -> (the MixedBatch trained on, the classifier's scalar loss to back-propagate)."""
        raise NotImplementedError

    def after_step(self) -> None:
        """After the classifier's optimiser step (the policy's own optimiser step, EMA updates)."""

    def cost_model_forwards(self) -> Optional[int]:
        """Classifier forward passes per step (for the cost tables; None: not stated)."""
        return None
