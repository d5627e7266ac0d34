"""End-of-run reports on the selected model: calibration (raw and temperature-scaled) and robustness.

``SelectedWeights`` keeps a CPU copy of the evaluated weights at the epoch the selector chose (in
memory and in the checkpoint, so that reports work without ``best.pt`` and after a resume);
``FinalReports`` then measures, on the test split:

- calibration (classification): NLL, ECE (15 bins) and Brier score raw, and after temperature
  scaling with T fitted on the validation split (Guo et al. 2017);
- robustness: the test metrics under each corruption of ``eval.robustness``: additive Gaussian
  noise of std ``s``, an occluded square (a segment for 1-D signals) of side ``f`` × the input's
  side at a random place, and FGSM at ε (Goodfellow et al. 2015). Levels are in the units of the
  model's normalised input; corruptions are seeded, so every policy sees the same ones.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .callbacks import Callback, EpochRecord
from .distributed import all_gather_objects

__all__ = ["SelectedWeights", "FinalReports", "gaussian_noise", "occlude", "fgsm", "CORRUPTIONS"]


class SelectedWeights(Callback):
    """A CPU copy of the evaluated model's weights at the selected epoch (``best_val``: when the
    selector improves; ``last_k``/``final``: the last epoch)."""

    def __init__(self, engine: Any, rule: str):
        self.engine, self.rule = engine, rule
        self.state: Optional[dict] = None
        self.epoch: Optional[int] = None

    def on_epoch_end(self, record: EpochRecord) -> None:
        if self.rule != "best_val" or record.is_best:
            self.state = {k: v.detach().to("cpu", copy=True) for k, v in self.engine.eval_model().state_dict().items()}
            self.epoch = record.epoch

    def model(self) -> nn.Module:
        """A copy of the evaluated model holding the selected weights."""
        model = copy.deepcopy(self.engine.eval_model())
        if self.state is not None:
            model.load_state_dict(self.state)
        return model

    def state_dict(self) -> dict:
        return {"state": self.state, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.state, self.epoch = state.get("state"), state.get("epoch")


# ---------------------------------------------------------------------------- corruptions
def gaussian_noise(x: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    """x: (B, C, *spatial) -> x + std · N(0, 1)."""
    noise = torch.randn(x.shape, generator=generator, device=generator.device).to(x.device, x.dtype)
    return x + std * noise


def occlude(x: torch.Tensor, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """x: (B, C, *spatial) -> x with one square (cube, segment) per sample, of side ``fraction`` ×
    each spatial size, set to 0 (the mean of normalised inputs), at a uniformly drawn position."""
    b, spatial = x.shape[0], x.shape[2:]
    coords = torch.meshgrid(*[torch.arange(s, device=x.device) for s in spatial], indexing="ij")
    inside = torch.ones((b, *spatial), device=x.device, dtype=torch.bool)
    for axis, size in enumerate(spatial):
        side = max(1, round(fraction * size))
        start = torch.randint(0, size - side + 1, (b,), generator=generator, device=generator.device).to(x.device)
        pos = coords[axis].unsqueeze(0)
        view = (b,) + (1,) * len(spatial)
        inside &= (pos >= start.view(view)) & (pos < (start + side).view(view))
    return x * (~inside).unsqueeze(1)


def fgsm(x: torch.Tensor, y: torch.Tensor, model: nn.Module, eps: float, task: str) -> torch.Tensor:
    """x + ε · sign(∇_x L(model(x), y)) (one step; L: cross-entropy, or MSE for regression)."""
    x_adv = x.detach().requires_grad_(True)
    out = model(x_adv).float()
    if task == "regression":
        loss = F.mse_loss(out.reshape(y.shape), y.float())
    else:
        loss = F.cross_entropy(out, y)
    (grad,) = torch.autograd.grad(loss, x_adv)
    return (x + eps * grad.sign()).detach()


CORRUPTIONS = ("gaussian", "occlusion", "fgsm")


def make_corruption(kind: str, level: float, seed: int, task: str) -> Callable:
    """``corrupt(x, y, model) -> x`` for ``Engine.evaluate``; draws from its own seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    if kind == "gaussian":
        return lambda x, y, model: gaussian_noise(x, level, generator)
    if kind == "occlusion":
        return lambda x, y, model: occlude(x, level, generator)
    if kind == "fgsm":
        return lambda x, y, model: fgsm(x, y, model, level, task)
    raise ValueError(f"eval.robustness keys must be among {list(CORRUPTIONS)}, got {kind!r}")


# --------------------------------------------------------------------------------- reports
class FinalReports(Callback):
    """At the end of training: calibration and robustness of the selected model (see the module)."""

    def __init__(self, run: Any, selected: SelectedWeights):
        self.run, self.selected = run, selected

    def on_fit_end(self, run: Any) -> None:
        settings = run.settings.eval
        model = self.selected.model()
        reports: dict = {"epoch": self.selected.epoch}
        if settings.calibration and run.data.task == "classification" and run.loaders.val is not None:
            reports["calibration"] = self.calibration(model)
        if settings.robustness:
            reports["robustness"] = self.robustness(model, settings.robustness)
        run.reports = reports

    def calibration(self, model: nn.Module) -> dict:
        from .metrics import fit_temperature
        engine, loaders = self.run.engine, self.run.loaders
        logits, labels = engine.logits(loaders.val, model)
        gathered = all_gather_objects((logits, labels), self.run.dist)
        temperature = fit_temperature(torch.cat([g[0] for g in gathered]), torch.cat([g[1] for g in gathered]))
        keys = ("nll", "ece", "brier", "top1")
        raw = engine.evaluate(loaders.test, model)
        scaled = engine.evaluate(loaders.test, model, temperature=temperature)
        return {"temperature": temperature, "raw": {k: raw[k] for k in keys},
                "scaled": {k: scaled[k] for k in keys}}

    def robustness(self, model: nn.Module, levels: dict) -> dict:
        engine, test = self.run.engine, self.run.loaders.test
        seed = self.run.settings.seed * 7_919 + 101 + self.run.dist.rank
        out = {"clean": engine.evaluate(test, model)}
        for kind, values in levels.items():
            for level in values:
                corrupt = make_corruption(kind, float(level), seed, self.run.data.task)
                out[f"{kind}_{level:g}"] = engine.evaluate(test, model, corrupt=corrupt)
        return out
