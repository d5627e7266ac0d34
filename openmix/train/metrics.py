"""Evaluation metrics: top-k accuracy, NLL, expected calibration error, RMSE, MAPE.

Metrics are accumulated as sums (``*Meter.update``) so that they can be reduced across DDP
ranks with one all-reduce of a flat tensor (``state()`` / ``load_state``) before ``compute``.
"""
from __future__ import annotations

import math
import statistics
from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "expected_calibration_error",
    "fit_temperature",
    "ClassificationMeter",
    "RegressionMeter",
    "median_last_k",
]


def _bin_index(confidence: torch.Tensor, num_bins: int) -> torch.Tensor:
    """Equal-width bins (0, 1/M], (1/M, 2/M], ... (the standard ECE binning); conf 0 goes to bin 0."""
    idx = torch.ceil(confidence * num_bins).long() - 1
    return idx.clamp_(0, num_bins - 1)


def expected_calibration_error(probs: torch.Tensor, targets: torch.Tensor, num_bins: int = 15) -> float:
    """Standard binned ECE (Guo et al. 2017).

    probs: (N, K) class probabilities; targets: (N,) long. Confidence is the max probability,
    the prediction its argmax; ECE = sum_b |B_b|/N * |acc(B_b) - conf(B_b)|.
    """
    if probs.ndim != 2 or targets.ndim != 1 or probs.shape[0] != targets.shape[0]:
        raise ValueError(f"probs must be (N, K) and targets (N,), got {tuple(probs.shape)} and {tuple(targets.shape)}")
    meter = ClassificationMeter(num_classes=probs.shape[1], num_bins=num_bins)
    meter.update_probs(probs, targets)
    return meter.compute()["ece"]


class SumMeter:
    """Metrics kept as a flat float64 tensor of sums, so that ranks can all-reduce them."""

    _sums: torch.Tensor

    def state(self) -> torch.Tensor:
        """Flat float64 tensor of the sums (for an all-reduce)."""
        return self._sums.clone()

    def load_state(self, sums: torch.Tensor) -> None:
        self._sums = sums.detach().to("cpu", torch.float64).clone()


class ClassificationMeter(SumMeter):
    """Accumulates top-1/top-5 hits, summed NLL and per-bin ECE statistics."""

    def __init__(self, num_classes: int, num_bins: int = 15, topk: int = 5):
        self.num_classes = num_classes
        self.num_bins = num_bins
        self.topk = min(topk, num_classes)
        # layout: [count, top1, topk, nll_sum, brier_sum] + bin counts + bin correct + bin confidence sums
        self._sums = torch.zeros(5 + 3 * num_bins, dtype=torch.float64)

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """logits: (B, K) raw scores; targets: (B,) long class indices."""
        logits = logits.detach().float()
        log_probs = F.log_softmax(logits, dim=1)
        self._accumulate(log_probs, targets)

    def update_probs(self, probs: torch.Tensor, targets: torch.Tensor) -> None:
        """probs: (B, K) probabilities; targets: (B,) long."""
        self._accumulate(torch.log(probs.detach().double().clamp_min(1e-300)), targets)

    def _accumulate(self, log_probs: torch.Tensor, targets: torch.Tensor) -> None:
        targets = targets.to(log_probs.device).long()
        probs = log_probs.exp()
        conf, pred = probs.max(dim=1)
        correct = (pred == targets).double()
        topk = log_probs.topk(self.topk, dim=1).indices
        hit_k = (topk == targets[:, None]).any(dim=1).double()
        nll = -log_probs.gather(1, targets[:, None]).squeeze(1).double()
        # Brier: sum_k (p_k - [k == y])^2 = sum_k p_k^2 - 2 p_y + 1
        p_double = probs.double()
        brier = p_double.pow(2).sum(1) - 2 * p_double.gather(1, targets[:, None]).squeeze(1) + 1
        bins = _bin_index(conf.double(), self.num_bins)
        M = self.num_bins
        s = torch.zeros_like(self._sums, device=log_probs.device)
        s[0] = targets.numel()
        s[1] = correct.sum()
        s[2] = hit_k.sum()
        s[3] = nll.sum()
        s[4] = brier.sum()
        s[5:5 + M].index_add_(0, bins, torch.ones_like(correct))
        s[5 + M:5 + 2 * M].index_add_(0, bins, correct)
        s[5 + 2 * M:].index_add_(0, bins, conf.double())
        self._sums += s.cpu()

    def compute(self) -> dict[str, float]:
        """-> {"top1", "top5", "nll", "ece", "brier"}; accuracies in percent, ECE as a fraction in
        [0, 1], Brier the mean squared distance of the probabilities to the one-hot label, in [0, 2]."""
        s, M = self._sums, self.num_bins
        n = float(s[0])
        if n == 0:
            return {"top1": math.nan, "top5": math.nan, "nll": math.nan, "ece": math.nan, "brier": math.nan}
        correct, conf = s[5 + M:5 + 2 * M], s[5 + 2 * M:]
        ece = float((correct - conf).abs().sum() / n)  # |B|/N * |acc - conf| = |sum correct - sum conf| / N
        return {
            "top1": 100.0 * float(s[1]) / n,
            "top5": 100.0 * float(s[2]) / n,
            "nll": float(s[3]) / n,
            "ece": ece,
            "brier": float(s[4]) / n,
        }


class RegressionMeter(SumMeter):
    """Accumulates squared errors and absolute percentage errors on the original target scale."""

    def __init__(self, eps: float = 1e-8):
        self.eps = eps
        self._sums = torch.zeros(3, dtype=torch.float64)  # [count, sq_err_sum, abs_pct_err_sum]

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """pred, target: (B,) or (B, D) floats, same shape, original (unstandardised) scale."""
        pred = pred.detach().double().reshape(target.shape[0], -1)
        target = target.detach().double().to(pred.device).reshape(target.shape[0], -1)
        err = pred - target
        s = torch.stack([
            torch.tensor(float(err.numel()), dtype=torch.float64, device=pred.device),
            (err ** 2).sum(),
            (err.abs() / target.abs().clamp_min(self.eps)).sum(),
        ])
        self._sums += s.cpu()

    def compute(self) -> dict[str, float]:
        """-> {"rmse", "mape"}; MAPE in percent."""
        n = float(self._sums[0])
        if n == 0:
            return {"rmse": math.nan, "mape": math.nan}
        return {"rmse": math.sqrt(float(self._sums[1]) / n), "mape": 100.0 * float(self._sums[2]) / n}


def median_last_k(history: Sequence[dict], key: str, k: int) -> float:
    """Median of ``key`` over the last ``k`` epochs of ``history`` (all epochs if fewer)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    values = [h[key] for h in history if key in h][-k:]
    return float(statistics.median(values)) if values else math.nan


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor, low: float = 0.05, high: float = 20.0,
                    iters: int = 80) -> float:
    """Temperature scaling (Guo et al. 2017): the T in [low, high] minimising the mean NLL of
    softmax(logits / T). logits: (N, K); targets: (N,) long. The NLL is convex in 1/T, so a
    golden-section search over log T finds the minimiser to ~1e-12 relative precision."""
    if logits.ndim != 2 or targets.ndim != 1 or logits.shape[0] != targets.shape[0] or logits.shape[0] == 0:
        raise ValueError(f"logits must be (N, K) and targets (N,) with N >= 1, got {tuple(logits.shape)} and "
                         f"{tuple(targets.shape)}")
    z, y = logits.detach().double(), targets.long()

    def nll(log_t: float) -> float:
        return float(F.cross_entropy(z / math.exp(log_t), y))
    a, b = math.log(low), math.log(high)
    ratio = (math.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = nll(c), nll(d)
    for _ in range(iters):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = nll(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = nll(d)
    return math.exp((a + b) / 2)
