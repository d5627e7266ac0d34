"""C-Mixup pairing (Yao et al. 2022): partners drawn by a Gaussian kernel of label distance.

Row ``i`` mixes with ``j`` with probability ``P(j | i) ∝ exp(-||y_i - y_j||**2 / (2 sigma**2))``
(``j = i`` allowed), either within the batch (the pairing interface) or among all N training
labels (``KernelPairing.sample_epoch`` / ``kernel_partners``). No N x N matrix is ever built:

* **scalar labels, large N** (``method="window"``): the labels are sorted once and grouped into
  bins of width ``sigma / 4``. For each query, the non-empty bins within ``truncation * sigma``
  are found by binary search (at most ``8 * truncation + 2`` of them); a bin is drawn with
  probability ∝ (its count) x (the kernel at its nearest member), a member uniformly in it, and
  the member accepted with probability kernel(member) / kernel(nearest member) (rejection
  sampling: exact for the kernel restricted to ``|y_j - y_i| <= truncation * sigma``; with the
  default truncation of 8 sigma the left-out weight is below exp(-32) ~ 1e-14 per item).
  Memory O(N + chunk x 66); a few rounds of redraws for the rejected rows.
* **multi-dimensional labels, class indices, or small N** (``method="dense"``): exact kernel
  weights for a chunk of queries against all N labels at a time, in two reused float64 buffers of
  ``chunk_elements`` elements (2 x 32 MB by default); time O(N**2 D) for a whole epoch.

Units of the bandwidth (``KernelPairing(sigma_units=...)``):

* ``"std"`` (the default): the bandwidth is ``sigma`` times the spread of the labels the pairing
  sees (the batch's labels in the batch pairing, all training labels in ``sample_epoch``), so the
  same ``sigma`` pairs the same rows whatever the units of the labels. The spread is
  ``label_spread``: the std for scalar labels; for (N, D) labels the root of the summed
  per-dimension variances (the RMS distance of the labels from their mean), so that the typical
  distance between two labels is ``sqrt(2)`` spreads whatever D is; 1 for class indices.
* ``"raw"``: ``sigma`` is in label units, as in the paper's configs (Airfoil 1.75, NO2 1.2, ...,
  which are in each data set's raw units). A raw ``sigma`` more than 10 times, or less than 0.01
  times, the spread of the labels first seen makes C-Mixup plain mixup or no mixing at all, and
  warns once.

Class indices (long) are treated as one-hot vectors: the same class has weight 1, another class
``exp(-1 / s**2)`` with ``s`` the bandwidth (their spread is taken as 1: the one-hot distance
between two classes is ``sqrt(2)``, as it is between two typical scalar labels in spreads).
"""
from __future__ import annotations

import math
import warnings
from typing import Optional, Union

import torch

from . import register_pairing

__all__ = ["KernelPairing", "kernel_partners", "label_spread", "DEFAULT_SIGMA", "SIGMA_UNITS"]

_BINS_PER_SIGMA = 4
DEFAULT_SIGMA = 0.2             # x the label spread: measured in benchmarks/cmixup_bandwidth.py
SIGMA_UNITS = ("std", "raw")
_RAW_WARN_RANGE = (0.01, 10.0)  # raw sigma / label spread outside this range warns


def _check_sigma(sigma: float) -> float:
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not math.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"sigma must be a finite number > 0 (the kernel bandwidth), got {sigma!r}")
    return float(sigma)


def _check_units(sigma_units: str) -> str:
    if sigma_units not in SIGMA_UNITS:
        raise ValueError(f"sigma_units must be 'std' (sigma times the label spread) or 'raw' (sigma in "
                         f"label units), got {sigma_units!r}")
    return sigma_units


def label_spread(y: torch.Tensor) -> torch.Tensor:
    """The scale a relative bandwidth is measured in, as a 0-d float64 tensor on ``y.device``
    (no host sync).

    y: (N,) or (N, D) float labels -> ``sqrt(sum_d var_d)`` (population variances; the std when
    D = 1); (N,) long class indices -> 1. A spread of 0 (N = 1, or all labels equal: every partner
    is then equally near) is returned as 1, so the bandwidth stays positive.
    """
    if not y.is_floating_point():
        return torch.ones((), dtype=torch.float64, device=y.device)
    points = y.reshape(y.shape[0], -1).to(torch.float64)
    spread = points.var(dim=0, correction=0).sum().sqrt()
    return torch.where(spread > 0, spread, torch.ones_like(spread))


def _as_points(y: torch.Tensor, name: str) -> torch.Tensor:
    """Float labels (N,) or (N, D) -> (N, D); class indices stay (N,) long."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N,) or (N, D), got {type(y).__name__}")
    if y.ndim not in (1, 2) or y.shape[0] < 1:
        raise ValueError(f"{name} must have shape (N,) or (N, D) with N >= 1, got shape {tuple(y.shape)}")
    if y.dtype == torch.bool or y.is_complex():
        raise TypeError(f"{name} must hold float labels or integer class indices, got dtype {y.dtype}")
    if not y.is_floating_point():
        if y.ndim != 1:
            raise ValueError(f"integer {name} must be class indices of shape (N,), got shape {tuple(y.shape)}")
        return y
    return y.reshape(y.shape[0], -1)


def _dense_partners(queries: torch.Tensor, labels: torch.Tensor, sigma: Union[float, torch.Tensor],
                    generator: torch.Generator, chunk_elements: int) -> torch.Tensor:
    """Exact sampling, a chunk of queries at a time. queries (Q, D) / labels (N, D) float, or both
    (Q,) / (N,) long class indices -> (Q,) long indices into labels. ``sigma``: a float or a 0-d
    tensor on the labels' device (a per-batch bandwidth, kept on the device).

    Two (chunk, N) float64 work buffers are allocated once and reused (in-place ops), so memory
    stays at 2 x ``chunk_elements`` elements whatever N and D are (squared distances by
    ``|q|^2 + |y|^2 - 2 q.y`` on centred labels, in float64)."""
    n = labels.shape[0]
    classes = not labels.is_floating_point()
    chunk = max(1, min(queries.shape[0], chunk_elements // n))
    buf = torch.empty(chunk, n, dtype=torch.float64, device=labels.device)
    noise = torch.empty_like(buf)
    scale = -0.5 / (sigma * sigma)          # float, or 0-d tensor (no host sync)
    if not classes:
        centre = labels.mean(0, dtype=torch.float64)
        y = labels.to(torch.float64) - centre                                   # (N, D)
        yy = (y * y).sum(1)                                                      # (N,)
    out = []
    for start in range(0, queries.shape[0], chunk):
        q = queries[start:start + chunk]
        b = buf[:q.shape[0]]
        if classes:
            torch.ne(q.unsqueeze(1), labels.unsqueeze(0), out=b)                 # one-hot distance**2 / 2
            b.mul_(2.0 * scale)
        else:
            qc = q.to(torch.float64) - centre
            if y.shape[1] == 1:
                torch.sub(qc, y.view(1, -1), out=b).square_()
            else:
                torch.matmul(qc, y.T, out=b)
                b.mul_(-2.0).add_(yy).add_((qc * qc).sum(1, keepdim=True)).clamp_(min=0.0)
            b.mul_(scale)
        # Gumbel-max: argmax(log w + G) is a draw from w / sum(w); no per-chunk allocation
        g = noise[:q.shape[0]].uniform_(generator=generator)
        g.clamp_(min=torch.finfo(torch.float64).tiny).log_().neg_().log_().neg_()
        out.append(b.add_(g).argmax(dim=1))
    return torch.cat(out)


class _SortedBins:
    """Sorted scalar labels grouped into bins of width sigma / 4 (non-empty bins only)."""

    def __init__(self, labels: torch.Tensor, sigma: float) -> None:
        values = labels.reshape(-1).to(torch.float64)
        self.sorted, self.order = torch.sort(values)
        self.width = sigma / _BINS_PER_SIGMA
        self.origin = self.sorted[0]
        bin_id = torch.floor((self.sorted - self.origin) / self.width).long()
        self.bins, self.counts = torch.unique_consecutive(bin_id, return_counts=True)   # (M,)
        self.start = torch.cumsum(self.counts, 0) - self.counts
        self.low = self.sorted[self.start]                                    # smallest member
        self.high = self.sorted[self.start + self.counts - 1]                  # largest member

    def sample(self, v: torch.Tensor, sigma: float, truncation: float, generator: torch.Generator,
               chunk: int, table_budget: int = 1 << 24, queries_are_labels: bool = True) -> torch.Tensor:
        """v: (Q,) float64 query values -> (Q,) indices into the original labels.

        When (non-empty bins) x (window slots) fits ``table_budget``, the proposal is tabulated per
        query bin (bound = kernel at the gap between the two bins' members) and a bin is drawn by
        one binary search in the flattened cumulative table: O(log) per query and round. Otherwise
        the bound is evaluated per query (kernel at the bin's nearest member): O(slots) per query.
        The tabulated bound needs every query to lie in its bin's member range, which holds when the
        queries are the labels themselves (``queries_are_labels``); other queries use the second way.
        """
        m = self.bins.shape[0]
        radius = int(math.ceil(truncation * _BINS_PER_SIGMA)) + 1
        slots = 2 * radius + 1
        if queries_are_labels and m * slots <= table_budget:
            return self._sample_tabulated(v, sigma, truncation, generator, radius)
        return self._sample_direct(v, sigma, truncation, generator, chunk)

    def _sample_tabulated(self, v, sigma, truncation, generator, radius):
        dev = v.device
        m = self.bins.shape[0]
        reach = truncation * sigma
        inv2s2 = 1.0 / (2.0 * sigma * sigma)
        # slot k of query bin i is the non-empty bin at position lo_i + k, if its id is in range
        lo = torch.searchsorted(self.bins, self.bins - radius)                    # (M,)
        hi = torch.searchsorted(self.bins, self.bins + radius, right=True)
        slots = 2 * radius + 1
        cand = lo.unsqueeze(1) + torch.arange(slots, device=dev)                  # (M, S)
        valid = cand < hi.unsqueeze(1)
        cand = cand.clamp(max=m - 1)
        gap = torch.maximum(torch.maximum(self.low[cand] - self.high.unsqueeze(1),
                                          self.low.unsqueeze(1) - self.high[cand]),
                            torch.zeros((), dtype=self.low.dtype, device=dev))
        bound_log = -gap * gap * inv2s2                                           # log kernel bound
        weight = torch.where(valid, self.counts[cand].to(torch.float64) * torch.exp(bound_log),
                             torch.zeros_like(gap))
        flat_cdf = torch.cumsum(weight.reshape(-1), 0)                           # (M * S,)
        row_end = flat_cdf.view(m, slots)[:, -1]
        row_start = row_end - weight.sum(1)
        qbin = torch.searchsorted(self.bins, torch.floor((v - self.origin) / self.width).long(), right=True) - 1
        qbin = qbin.clamp(0, m - 1)
        result = torch.empty(v.shape[0], dtype=torch.long, device=dev)
        pending = torch.arange(v.shape[0], device=dev)
        while pending.numel() > 0:            # rounds of redraws for the rejected rows
            qb = qbin[pending]
            q = v[pending]
            u = torch.rand(pending.numel(), 3, generator=generator, device=dev, dtype=torch.float64)
            target = row_start[qb] + u[:, 0] * (row_end[qb] - row_start[qb])
            flat = torch.searchsorted(flat_cdf, target.unsqueeze(1), right=True).squeeze(1)
            flat = torch.minimum(torch.maximum(flat, qb * slots), qb * slots + slots - 1)
            flat = torch.where(weight.view(-1)[flat] > 0, flat, qb * slots + (qb - lo[qb]))  # guard ties
            b = cand.view(-1)[flat]
            member = torch.minimum(self.start[b] + torch.floor(u[:, 1] * self.counts[b]).long(),
                                   self.start[b] + self.counts[b] - 1)
            diff = self.sorted[member] - q
            ratio = torch.exp(-diff * diff * inv2s2 - bound_log.view(-1)[flat])
            ok = (u[:, 2] < ratio) & (diff.abs() <= reach)
            result[pending[ok]] = self.order[member[ok]]
            pending = pending[~ok]
        return result

    def _sample_direct(self, v, sigma, truncation, generator, chunk):
        reach = truncation * sigma
        slots = int(math.ceil(2 * truncation * _BINS_PER_SIGMA)) + 2
        m = self.bins.shape[0]
        dev = v.device
        lo = torch.searchsorted(self.bins, torch.floor((v - reach - self.origin) / self.width).long())
        hi = torch.searchsorted(self.bins, torch.floor((v + reach - self.origin) / self.width).long(), right=True)
        # a query with nothing within reach (only possible for values that are not labels) gets its
        # nearest label: widen its window to the nearest non-empty bin
        empty = hi <= lo
        lo = torch.where(empty, (lo - 1).clamp(min=0), lo)
        hi = torch.where(empty, (lo + 2).clamp(max=m), hi)
        result = torch.empty(v.shape[0], dtype=torch.long, device=dev)
        pending = torch.arange(v.shape[0], device=dev)
        inv2s2 = 1.0 / (2.0 * sigma * sigma)
        while pending.numel() > 0:            # rounds of redraws for the rejected rows
            rejected = []
            for s in range(0, pending.numel(), chunk):
                rows = pending[s:s + chunk]
                q = v[rows]
                cand = lo[rows].unsqueeze(1) + torch.arange(slots, device=dev)      # (c, K) bin slots
                valid = cand < hi[rows].unsqueeze(1)
                cand = cand.clamp(max=m - 1)
                gap = torch.maximum(torch.maximum(self.low[cand] - q.unsqueeze(1), q.unsqueeze(1) - self.high[cand]),
                                    torch.zeros((), dtype=q.dtype, device=dev))
                envelope = torch.exp(-gap * gap * inv2s2)                        # kernel at nearest member
                weight = torch.where(valid, self.counts[cand].to(q.dtype) * envelope, torch.zeros_like(envelope))
                u = torch.rand(rows.numel(), 3, generator=generator, device=dev, dtype=torch.float64)
                cdf = torch.cumsum(weight, dim=1)                                 # inverse-CDF bin draw
                pick = torch.searchsorted(cdf, (u[:, 2] * cdf[:, -1]).unsqueeze(1), right=True).squeeze(1)
                pick = torch.minimum(pick, valid.sum(1) - 1)
                b = cand.gather(1, pick.unsqueeze(1)).squeeze(1)
                member = torch.minimum(self.start[b] + torch.floor(u[:, 0] * self.counts[b]).long(),
                                       self.start[b] + self.counts[b] - 1)
                diff = self.sorted[member] - q
                g = gap.gather(1, pick.unsqueeze(1)).squeeze(1)
                ratio = torch.exp(-(diff * diff - g * g) * inv2s2)
                ok = (u[:, 1] < ratio) & ((diff.abs() <= reach) | empty[rows])
                result[rows[ok]] = self.order[member[ok]]
                rejected.append(rows[~ok])
            pending = torch.cat(rejected)
        return result


def kernel_partners(queries: torch.Tensor, labels: torch.Tensor, sigma: float,
                    generator: Optional[torch.Generator] = None, method: str = "auto",
                    truncation: float = 8.0, chunk_elements: int = 1 << 22) -> torch.Tensor:
    """Draw one partner among ``labels`` for every query with ``P(j) ∝ exp(-||q - y_j||**2 / (2 sigma**2))``.

    queries: (Q,) or (Q, D) float (or (Q,) long class indices); labels: (N,) or (N, D) of the
    same kind, on the same device -> (Q,) long indices into labels, on that device.
    method: ``"window"`` (scalar float labels only: sorted bins + rejection, exact up to the
    ``truncation`` in sigmas), ``"dense"`` (exact, chunked: memory O(chunk_elements)), or
    ``"auto"`` (window for scalar float labels with N > 4096, dense otherwise).
    Class-index labels are compared as one-hot vectors. ``sigma`` is in label units here; a
    bandwidth relative to the label spread is ``KernelPairing``'s (``sigma_units="std"``).
    """
    sigma = _check_sigma(sigma)
    q = _as_points(queries, "queries")
    y = _as_points(labels, "labels")
    if q.is_floating_point() != y.is_floating_point() or (q.is_floating_point() and q.shape[1] != y.shape[1]):
        raise ValueError(f"queries and labels must be of the same kind and dimension, got shapes "
                         f"{tuple(queries.shape)} ({queries.dtype}) and {tuple(labels.shape)} ({labels.dtype})")
    if method not in ("auto", "window", "dense"):
        raise ValueError(f"method must be 'auto', 'window' or 'dense', got {method!r}")
    if not (isinstance(truncation, (int, float)) and truncation >= 3):
        raise ValueError(f"truncation must be a number of sigmas >= 3, got {truncation!r}")
    scalar = y.is_floating_point() and y.shape[1] == 1
    if method == "window" and not scalar:
        raise ValueError(f"method='window' needs scalar float labels (N,) or (N, 1), got shape "
                         f"{tuple(labels.shape)} and dtype {labels.dtype}; use method='dense'")
    if generator is None:
        generator = torch.Generator(device=y.device).manual_seed(int(torch.randint(0, 2 ** 62, (1,)).item()))
    if method == "window" or (method == "auto" and scalar and y.shape[0] > 4096):
        bins = _SortedBins(y, sigma)
        return bins.sample(q.reshape(-1).to(torch.float64), sigma, truncation, generator, chunk=1 << 16,
                           queries_are_labels=queries is labels)
    return _dense_partners(q, y, sigma, generator, chunk_elements)


@register_pairing("cmixup")
class KernelPairing:
    """C-Mixup partners: within the batch by label distance (the pairing interface), or over the
    whole training set (``sample_epoch``).

    Args:
        sigma: kernel bandwidth, in the units given by ``sigma_units`` (default 0.2 spreads).
        sigma_units: ``"std"`` (default): the bandwidth is ``sigma`` x ``label_spread`` of the
            labels the pairing sees (per batch in the batch pairing, as a device tensor; per
            training set in ``sample_epoch``), so it is the same whatever the label units.
            ``"raw"``: ``sigma`` in label units, to reproduce the paper's bandwidths (Airfoil
            1.75, NO2 1.2, Exchange-Rate 0.05, Electricity 0.5, RCF-MNIST 0.2, Crime 4,
            SkillCraft 1: each data set's raw units, not standardised targets); warns once when
            it is more than 10x or less than 0.01x the spread of the labels first seen.
        labels: optional training-set labels (N,) or (N, D) for ``sample_epoch``.
        truncation: window half-width in bandwidths for the scalar fast path (default 8).
        chunk_elements: memory bound of the dense path (elements per chunk).

    ``pairing(batch_size, generator, y)``: y (B,) or (B, D) float targets, (B, K) soft labels or
    (B,) class indices -> index (B,) long on ``generator.device``. Partners are drawn
    independently per row, so ``involution=True`` (mode="pair") is not supported.
    """

    def __init__(self, sigma: float = DEFAULT_SIGMA, sigma_units: str = "std", labels: Optional[torch.Tensor] = None,
                 truncation: float = 8.0, chunk_elements: int = 1 << 22) -> None:
        self.sigma = _check_sigma(sigma)
        self.sigma_units = _check_units(sigma_units)
        if not (isinstance(truncation, (int, float)) and truncation >= 3):
            raise ValueError(f"truncation must be a number of sigmas >= 3, got {truncation!r}")
        if isinstance(chunk_elements, bool) or not isinstance(chunk_elements, int) or chunk_elements < 1:
            raise ValueError(f"chunk_elements must be an int >= 1, got {chunk_elements!r}")
        self.truncation = float(truncation)
        self.chunk_elements = chunk_elements
        self.labels = None if labels is None else torch.as_tensor(labels)
        self._bins = None
        self._bins_key = None
        self._epoch_bandwidth = None    # the bandwidth of the training set behind the cached bins
        self._range_checked = False

    def bandwidth(self, y: torch.Tensor) -> Union[float, torch.Tensor]:
        """The kernel's sigma in label units for labels y (N,) or (N, D): a 0-d tensor on y's
        device with ``sigma_units="std"``, the float ``sigma`` with ``"raw"``."""
        if self.sigma_units == "std":
            return self.sigma * label_spread(y)
        if not self._range_checked:
            self._warn_if_out_of_range(y)
        return self.sigma

    def _warn_if_out_of_range(self, y: torch.Tensor) -> None:
        """One host sync, the first time raw labels are seen: is sigma on the labels' scale?"""
        if not y.is_floating_point() or y.shape[0] < 2:
            return
        spread = float(label_spread(y))
        self._range_checked = True
        low, high = _RAW_WARN_RANGE
        if not low * spread <= self.sigma <= high * spread:
            effect = ("every partner equally likely: C-Mixup becomes plain mixup" if self.sigma > high * spread
                      else "partners almost only rows with the same label: little mixing")
            warnings.warn(f"pairing='cmixup' with sigma_units='raw': sigma={self.sigma:g} is "
                          f"{self.sigma / spread:.3g} x the spread of the labels ({spread:.4g}), outside "
                          f"[{low:g}, {high:g}] x, so {effect}. Give sigma in the labels' units, or use "
                          f"sigma_units='std' (sigma x the label spread; default sigma={DEFAULT_SIGMA})",
                          UserWarning, stacklevel=3)

    def __call__(self, batch_size: int, generator: torch.Generator, y: Optional[torch.Tensor] = None,
                 involution: bool = False) -> torch.Tensor:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if involution:
            raise ValueError("pairing='cmixup' draws each row's partner independently, so partners do not "
                             "swap; use mode='batch' or mode='elem' with it, not mode='pair'")
        if y is None:
            raise ValueError("pairing='cmixup' needs the labels y of the batch to pair by label distance, got None")
        if y.shape[0] != batch_size:
            raise ValueError(f"y must have batch_size={batch_size} rows, got shape {tuple(y.shape)}")
        points = _as_points(y.detach().to(generator.device), "y")
        return _dense_partners(points, points, self.bandwidth(points), generator, self.chunk_elements)

    def sample_epoch(self, generator: torch.Generator, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """A partner among all training labels for every training sample: (N,) long indices.

        labels: (N,) or (N, D); defaults to the ``labels`` given at construction. The bandwidth is
        ``sigma`` x the spread of these N labels (``sigma_units="std"``) or ``sigma`` (``"raw"``).
        Scalar labels use the sorted-window sampler (1e6 labels in seconds, O(N) memory); the bins
        are cached.
        """
        if labels is None:
            if self.labels is None:
                raise ValueError("sample_epoch needs the training labels: pass labels=... here or to "
                                 "KernelPairing(labels=...)")
            labels = self.labels
        key = (id(labels), tuple(torch.as_tensor(labels).shape), str(generator.device))
        labels = torch.as_tensor(labels).to(generator.device)
        y = _as_points(labels, "labels")
        if y.is_floating_point() and not bool(torch.isfinite(y).all()):
            raise ValueError("labels must be finite for pairing='cmixup', got NaN or inf values")
        if self._bins_key != key:       # one bandwidth per training set
            self._bins, self._bins_key = None, key
            self._epoch_bandwidth = float(self.bandwidth(y))
        sigma = self._epoch_bandwidth
        if y.is_floating_point() and y.shape[1] == 1:
            if self._bins is None:
                self._bins = _SortedBins(y, sigma)
            return self._bins.sample(y.reshape(-1).to(torch.float64), sigma, self.truncation, generator,
                                     chunk=1 << 16)
        return kernel_partners(labels, labels, sigma, generator, method="dense",
                               chunk_elements=self.chunk_elements)

    def __repr__(self) -> str:
        return f"KernelPairing(sigma={self.sigma}, sigma_units={self.sigma_units!r})"
