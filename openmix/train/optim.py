"""Optimisers (sgd, adamw) and per-step learning-rate schedules (cosine with warm-up, multistep)."""
from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

__all__ = ["build_optimizer", "build_scheduler", "OPTIMIZERS", "SCHEDULES"]

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "multistep", "constant")


def _param_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool):
    if decay_norm_and_bias or weight_decay == 0:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)  # biases and norm scales are 1-D
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(name: str, model: nn.Module, lr: float, weight_decay: float = 0.0, momentum: float = 0.9,
                    nesterov: bool = False, betas: Iterable[float] = (0.9, 0.999), eps: float = 1e-8,
                    decay_norm_and_bias: bool = True) -> torch.optim.Optimizer:
    """optim.name in OPTIMIZERS; unknown -> ValueError listing them."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimiser optim.name={name!r}; choose one of {list(OPTIMIZERS)}")
    if lr <= 0:
        raise ValueError(f"optim.lr must be > 0, got {lr}")
    groups = _param_groups(model, weight_decay, decay_norm_and_bias)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps)


def build_scheduler(name: str, optimizer: torch.optim.Optimizer, epochs: int, steps_per_epoch: int,
                    warmup_epochs: float = 0.0, min_lr_ratio: float = 0.0, milestones: Iterable[int] = (),
                    gamma: float = 0.1, warmup_start_ratio: float = 0.01) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepped once per optimiser step.

    cosine: linear warm-up from ``warmup_start_ratio * lr`` over ``warmup_epochs``, then cosine to
    ``min_lr_ratio * lr`` at the end. multistep: same warm-up, then x``gamma`` at each epoch in
    ``milestones``. constant: warm-up then flat."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule sched.name={name!r}; choose one of {list(SCHEDULES)}")
    total = max(1, epochs * steps_per_epoch)
    warm = int(round(warmup_epochs * steps_per_epoch))
    steps = sorted(int(m) * steps_per_epoch for m in milestones)

    def factor(step: int) -> float:
        if step < warm:
            return warmup_start_ratio + (1 - warmup_start_ratio) * step / warm
        if name == "cosine":
            t = min(1.0, (step - warm) / max(1, total - warm))
            return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))
        if name == "multistep":
            return gamma ** sum(step >= m for m in steps)
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
