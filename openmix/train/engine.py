"""The training engine: one step for input-level, saliency, feature-level and step policies.

Dispatch on ``policy.needs``:

- ``"input"``: the batch arrives mixed from ``MixCollate`` (mix.where=collate) or is mixed by
  ``DeviceMixer`` after the copy (mix.where=device).
- ``"saliency"``: the clean batch goes through an extra forward/backward (model in eval mode,
  gradients taken w.r.t. the input only, as PuzzleMix's default ``clean_lam=0``) to get
  ``s = sqrt(mean_c (dL/dx)^2)``: (B, *spatial); then ``policy(x, y, saliency=s)``.
- ``"features"``: ``plan = policy.plan(x, y, num_stages, generator)``; stage 0 mixes the input,
  stage k mixes the output of ``stages[k-1]`` inside the model's forward (``MixNet``) with
  ``policy.mix_features(h, plan, layout=split.layouts[k-1])`` (channels-first or tokens).
- ``"step"``: the policy computes the mixed batch and the classifier's loss itself
  (``policy.training_step(x, y, context)``, see ``openmix.policies.step``); the engine
  back-propagates it, steps the optimiser, then calls ``policy.after_step()``.
"""
from __future__ import annotations

import contextlib
import copy
import inspect
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..batch import MixedBatch
from .distributed import all_reduce_sum
from .metrics import ClassificationMeter, RegressionMeter

__all__ = ["ModelEma", "Engine", "EpochStats", "NonFiniteLossError", "normalise_input", "input_saliency"]


class ModelEma:
    """Exponential moving average of a model's parameters and buffers (integer buffers copied).

    The decay warms up as min(decay, (1 + t) / (10 + t)) after t updates, so that short runs
    do not evaluate weights still close to the initialisation."""

    def __init__(self, model: nn.Module, decay: float = 0.999):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"trainer.ema.decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for e, m in zip(self.module.state_dict().values(), model.state_dict().values()):
            if e.is_floating_point():
                e.lerp_(m.detach(), 1.0 - decay)
            else:
                e.copy_(m)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])


def normalise_input(x: torch.Tensor, mean: Optional[torch.Tensor], std: Optional[torch.Tensor]) -> torch.Tensor:
    """x: (B, C, *spatial); uint8 -> float in [0, 1] -> (x - mean) / std (per channel); floats pass."""
    if x.dtype == torch.uint8:
        x = x.float().div_(255.0)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        if mean is not None:
            x = x - mean.view(shape)
        if std is not None:
            x = x / std.view(shape)
    return x


def input_saliency(model: nn.Module, x: torch.Tensor, y: torch.Tensor, task: str,
                   autocast: Callable[[], Any], clean_lam: float = 0.0) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Saliency of the clean batch: x (B, C, *spatial) -> s (B, *spatial) = sqrt(mean_c (dL/dx)^2),
    and the clean-batch loss term to add to the training loss (or None).

    As PuzzleMix's code: with ``clean_lam == 0`` the model is in eval mode for this pass and the
    parameters get nothing from it; with ``clean_lam > 0`` it stays in train mode and
    ``2 · clean_lam · L / num_classes`` is returned, its graph kept for the step's backward."""
    x_ = x.detach().requires_grad_(True)
    was_training = model.training
    if clean_lam == 0:
        model.eval()
    try:
        with autocast():
            out = model(x_)
    finally:
        model.train(was_training)
    out = out.float()
    if task == "regression":
        loss = F.mse_loss(out.reshape(y.shape), y.float())
    elif y.is_floating_point():  # soft labels (B, K)
        loss = torch.sum(-y * F.log_softmax(out, dim=1), dim=1).mean()
    else:
        loss = F.cross_entropy(out, y)
    (grad,) = torch.autograd.grad(loss, x_, retain_graph=clean_lam > 0)
    saliency = grad.float().pow(2).mean(dim=1).sqrt()
    if clean_lam == 0:
        return saliency, None
    return saliency, 2.0 * clean_lam * loss / max(out.shape[1], 1)


@dataclass
class EpochStats:
    train_loss: float
    samples: int
    seconds: float
    lr: float


@dataclass
class EngineContext:
    """The ``StepContext`` (``openmix.policies.step``) the engine gives policies with needs="step"."""
    model: nn.Module
    net: Any
    forward: Callable[..., torch.Tensor]
    loss_fn: Callable
    autocast: Callable[[], Any]
    device: torch.device
    task: str
    num_classes: int
    epoch: int = 0


class NonFiniteLossError(ValueError):
    """The training loss became NaN or inf; says at which batch and whether the data caused it."""


def _accepts_keyword(fn: Callable, name: str) -> bool:
    params = inspect.signature(fn).parameters
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


class Engine:
    """One training step and one evaluation pass, for every kind of policy.

    Built from a ``Run`` (``openmix.train.build``): reads the parts it touches (model, policy,
    loss, optimiser, scheduler, scaler, EMA, mixers, device, AMP settings) once."""

    def __init__(self, run: Any):
        t = run.settings.trainer
        data = run.data
        self.net, self.train_module, self.policy, self.loss_fn = run.net, run.train_module, run.policy, run.loss_fn
        self.optimizer, self.scheduler, self.scaler = run.optimizer, run.scheduler, run.scaler
        self.device, self.task, self.device_mixer = run.device, data.task, run.device_mixer
        self.mean = None if data.mean is None else torch.as_tensor(data.mean, dtype=torch.float32, device=run.device)
        self.std = None if data.std is None else torch.as_tensor(data.std, dtype=torch.float32, device=run.device)
        self.amp_dtype, self.channels_last, self.clip_grad = run.amp_dtype, t.channels_last, t.clip_grad
        self.ema, self.eval_ema = run.ema, t.ema["eval"]
        self.target_mean, self.target_std, self.num_classes = data.target_mean, data.target_std, data.num_classes
        self.dist = run.dist
        self.needs = getattr(self.policy, "needs", "input")
        self._extra_loss: Optional[torch.Tensor] = None     # a loss term the saliency pass adds
        # feature policies written against the older contract take no layout argument
        self._mix_takes_layout = self.needs == "features" and _accepts_keyword(self.policy.mix_features, "layout")
        self.context = EngineContext(model=self.net.model, net=self.net, forward=self.train_module,
                                     loss_fn=self.loss_fn, autocast=self.autocast, device=self.device,
                                     task=self.task, num_classes=self.num_classes)
        if self.needs == "step":
            self.policy.setup(self.context)

    # ------------------------------------------------------------------------------- helpers
    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _format(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.ndim == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def prepare(self, batch: Any) -> tuple[MixedBatch, dict]:
        """A loader batch -> (MixedBatch on the device, extra forward kwargs)."""
        if isinstance(batch, MixedBatch):  # mixed in the collate (uint8 stays uint8 until here)
            mb = batch.to(self.device, non_blocking=True)
            return replace(mb, x=self._format(normalise_input(mb.x, self.mean, self.std))), {}
        if self.needs == "input":
            return self.device_mixer(*batch), {}
        x, y = self.to_device(batch)
        if self.needs == "saliency":
            s, clean_loss = input_saliency(self.net.model, x, y, self.task, self.autocast,
                                           float(getattr(self.policy, "clean_lam", 0.0)))
            self._extra_loss = clean_loss
            return self.policy(x, y, saliency=s), {}
        if self.needs == "features":
            split = self.net.split
            plan = self.policy.plan(x, y, num_stages=len(split.stages), generator=self.policy.generator)
            if int(plan.stage) == 0:
                x_used = plan.mix_input(x)
                return plan.batch(x_used, y), {}
            mix = self._feature_mixer(plan, split.layouts[int(plan.stage) - 1])
            return plan.batch(x, y), {"stage": int(plan.stage), "mix": mix}
        raise ValueError(f"policy.needs must be 'input', 'saliency', 'features' or 'step', got {self.needs!r}")

    def to_device(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """A clean loader batch (x, y) -> on the device, x normalised (B, C, *spatial)."""
        x, y = batch
        x = self._format(normalise_input(x.to(self.device, non_blocking=True), self.mean, self.std))
        return x, torch.as_tensor(y).to(self.device, non_blocking=True)

    def _feature_mixer(self, plan, layout) -> Callable[[torch.Tensor], torch.Tensor]:
        """h -> policy.mix_features(h, plan, layout=layout); policies whose mix_features takes no
        ``layout`` get channels-first feature maps only."""
        policy = self.policy
        if self._mix_takes_layout:
            return lambda h: policy.mix_features(h, plan, layout=layout)
        if getattr(layout, "kind", "channels_first") != "channels_first":
            raise ValueError(f"{type(policy).__name__}.mix_features(h, plan) takes no layout argument, but stage "
                             f"{int(plan.stage)} of this model outputs {layout}; accepted: channels-first feature "
                             f"maps, or a mix_features(h, plan, layout=None) that handles tokens (B, N, C)")
        return lambda h: policy.mix_features(h, plan)

    def _output(self, out: torch.Tensor) -> torch.Tensor:
        out = out.float()
        if self.task == "regression" and out.ndim == 2 and out.shape[1] == 1:
            out = out.squeeze(1)
        return out

    # ---------------------------------------------------------------------------------- train
    def train_epoch(self, loader: Iterable, progress=None, epoch: int = 0) -> EpochStats:
        """One pass over ``loader``; returns the mean training loss (reduced across ranks).

        A non-finite loss stops training with ``NonFiniteLossError`` naming the batch: at once on
        the CPU; on accelerators at the next host sync the loop makes anyway (the progress bar's,
        every 10 steps, and the end of the epoch), so that the check adds no synchronisation."""
        self.net.train()
        self.context.epoch = epoch
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        first_bad = torch.full((), -1, dtype=torch.long, device=self.device)
        count = 0
        t0 = time.perf_counter()
        for step, batch in enumerate(loader):
            mb, loss = self.train_step(batch)
            if self.device.type == "cpu":
                if not torch.isfinite(loss):
                    raise self._non_finite(epoch, step, mb)
            else:
                first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), step, first_bad)
            n = mb.x.shape[0]
            loss_sum += loss.detach().double() * n
            count += n
            if progress is not None:
                progress.update(1)
                if step % 10 == 0:  # a host sync, so not every step; the loss check rides on it
                    self._check_bad(first_bad, epoch)
                    progress.set_postfix(loss=f"{float(loss_sum) / max(count, 1):.4f}", refresh=False)
        self._check_bad(first_bad, epoch)
        totals = all_reduce_sum(torch.stack([loss_sum.cpu(), torch.tensor(float(count), dtype=torch.float64)]),
                                self.dist, self.device)
        seconds = time.perf_counter() - t0
        return EpochStats(train_loss=float(totals[0] / totals[1].clamp_min(1)), samples=int(totals[1]),
                          seconds=seconds, lr=float(self.optimizer.param_groups[0]["lr"]))

    def train_step(self, batch: Any) -> tuple[MixedBatch, torch.Tensor]:
        """Mix, forward, loss, backward, optimiser and schedule step, EMA update; -> (batch, loss).
        Policies with needs="step" compute the mixed batch and the loss themselves."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.needs == "step":
            x, y = self.to_device(batch)
            mb, loss = self.policy.training_step(x, y, self.context)
        else:
            self._extra_loss = None
            mb, fwd = self.prepare(batch)
            with self.autocast():
                out = self.train_module(mb.x, **fwd) if fwd else self.train_module(mb.x)
            loss = self.loss_fn(self._output(out), mb)
            if self._extra_loss is not None:      # PuzzleMix's clean-batch term (clean_lam > 0)
                loss = loss + self._extra_loss
        self.scaler.scale(loss).backward()
        if self.clip_grad:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.net.parameters(), self.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.net.model)
        if self.needs == "step":
            self.policy.after_step()
        return mb, loss

    def _check_bad(self, first_bad: torch.Tensor, epoch: int) -> None:
        step = int(first_bad)
        if step >= 0:
            raise self._non_finite(epoch, step, None)

    def _non_finite(self, epoch: int, step: int, mb: Optional[MixedBatch]) -> NonFiniteLossError:
        where = f"the training loss is not finite at epoch {epoch + 1}, batch {step}"
        if mb is None:
            return NonFiniteLossError(f"{where} (found at the next host sync); check the data for NaN/inf, "
                                      f"or lower optim.lr / set trainer.clip_grad if the model diverged")
        if not bool(torch.isfinite(mb.x).all()):
            return NonFiniteLossError(f"{where}: the batch's inputs hold NaN or inf values; clean the dataset")
        if mb.y.is_floating_point() and not bool(torch.isfinite(mb.y).all()):
            return NonFiniteLossError(f"{where}: the batch's labels hold NaN or inf values; clean the dataset")
        return NonFiniteLossError(f"{where} although its inputs and labels are finite: the model diverged; "
                                  f"lower optim.lr or set trainer.clip_grad")

    # ------------------------------------------------------------------------------- evaluate
    def eval_model(self) -> nn.Module:
        """The model that evaluation uses: the EMA weights when trainer.ema.eval, else the model."""
        return self.ema.module if (self.ema is not None and self.eval_ema) else self.net.model

    @torch.no_grad()
    def evaluate(self, loader: Iterable, model: Optional[nn.Module] = None, corrupt: Optional[Callable] = None,
                 temperature: float = 1.0) -> dict[str, float]:
        """Metrics reduced across ranks: classification top1/top5 (percent), nll, ece, brier;
        regression rmse and mape (percent) on the original target scale.

        model: another model to evaluate (default ``eval_model()``); corrupt: ``corrupt(x, y, model)
        -> x`` applied to each normalised batch (robustness; runs with gradients enabled, for FGSM);
        temperature: logits are divided by it (temperature scaling)."""
        model = self.eval_model() if model is None else model
        was_training = model.training
        model.eval()
        if self.dist.enabled:  # every rank evaluates rank 0's model (BN statistics differ per rank)
            import torch.distributed as dist
            for buf in model.buffers():
                dist.broadcast(buf.data, src=0)
        meter = ClassificationMeter(self.num_classes) if self.task == "classification" else RegressionMeter()
        for x, y in self.batches(loader):
            if corrupt is not None:
                with torch.enable_grad():
                    x = corrupt(x, y, model)
            with self.autocast():
                out = model(x)
            out = self._output(out)
            if self.task == "classification":
                meter.update(out / temperature, y)
            else:
                meter.update(out * self.target_std + self.target_mean, y * self.target_std + self.target_mean)
        meter.load_state(all_reduce_sum(meter.state(), self.dist, self.device))
        model.train(was_training)
        return meter.compute()

    def batches(self, loader: Iterable):
        """(x, y) of an evaluation loader on the device, x normalised: (B, C, *spatial)."""
        for batch in loader:
            yield self.to_device(batch)

    @torch.no_grad()
    def logits(self, loader: Iterable, model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """All (logits (N, K), labels (N,)) of ``loader`` on this rank, on the CPU."""
        was_training = model.training
        model.eval()
        outs, ys = [], []
        for x, y in self.batches(loader):
            with self.autocast():
                outs.append(self._output(model(x)).cpu())
            ys.append(y.cpu())
        model.train(was_training)
        return torch.cat(outs), torch.cat(ys)
