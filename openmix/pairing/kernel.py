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

Class indices (long) are treated as one-hot vectors: the same class has weight 1, another class
``exp(-1 / sigma**2)``.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from . import register_pairing

__all__ = ["KernelPairing", "kernel_partners"]

_BINS_PER_SIGMA = 4


def _check_sigma(sigma: float) -> float:
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not math.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"sigma must be a finite number > 0 (the kernel bandwidth), got {sigma!r}")
    return float(sigma)


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


def _dense_partners(queries: torch.Tensor, labels: torch.Tensor, sigma: float,
                    generator: torch.Generator, chunk_elements: int) -> torch.Tensor:
    """Exact sampling, a chunk of queries at a time. queries (Q, D) / labels (N, D) float, or both
    (Q,) / (N,) long class indices -> (Q,) long indices into labels.

    Two (chunk, N) float64 work buffers are allocated once and reused (in-place ops), so memory
    stays at 2 x ``chunk_elements`` elements whatever N and D are (squared distances by
    ``|q|^2 + |y|^2 - 2 q.y`` on centred labels, in float64)."""
    n = labels.shape[0]
    classes = not labels.is_floating_point()
    chunk = max(1, min(queries.shape[0], chunk_elements // n))
    buf = torch.empty(chunk, n, dtype=torch.float64, device=labels.device)
    noise = torch.empty_like(buf)
    scale = -1.0 / (2.0 * sigma * sigma)
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
    Class-index labels are compared as one-hot vectors.
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
        sigma: kernel bandwidth, in label units (the paper's per-dataset values: Airfoil 1.75,
            NO2 1.2, Exchange-Rate 0.05, Electricity 0.5, RCF-MNIST 0.2, Crime 4, SkillCraft 1;
            they assume standardised or raw targets as in each dataset's recipe).
        labels: optional training-set labels (N,) or (N, D) for ``sample_epoch``.
        truncation: window half-width in sigmas for the scalar fast path (default 8).
        chunk_elements: memory bound of the dense path (elements per chunk).

    ``pairing(batch_size, generator, y)``: y (B,) or (B, D) float targets, (B, K) soft labels or
    (B,) class indices -> index (B,) long on ``generator.device``. Partners are drawn
    independently per row, so ``involution=True`` (mode="pair") is not supported.
    """

    def __init__(self, sigma: float = 1.0, labels: Optional[torch.Tensor] = None, truncation: float = 8.0,
                 chunk_elements: int = 1 << 22) -> None:
        self.sigma = _check_sigma(sigma)
        if not (isinstance(truncation, (int, float)) and truncation >= 3):
            raise ValueError(f"truncation must be a number of sigmas >= 3, got {truncation!r}")
        if isinstance(chunk_elements, bool) or not isinstance(chunk_elements, int) or chunk_elements < 1:
            raise ValueError(f"chunk_elements must be an int >= 1, got {chunk_elements!r}")
        self.truncation = float(truncation)
        self.chunk_elements = chunk_elements
        self.labels = None if labels is None else torch.as_tensor(labels)
        self._bins = None
        self._bins_key = None

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
        y = y.detach().to(generator.device)
        return kernel_partners(y, y, self.sigma, generator, method="dense", chunk_elements=self.chunk_elements)

    def sample_epoch(self, generator: torch.Generator, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """A partner among all training labels for every training sample: (N,) long indices.

        labels: (N,) or (N, D); defaults to the ``labels`` given at construction. Scalar labels use
        the sorted-window sampler (1e6 labels in seconds, O(N) memory); the bins are cached.
        """
        if labels is None:
            if self.labels is None:
                raise ValueError("sample_epoch needs the training labels: pass labels=... here or to "
                                 "KernelPairing(labels=...)")
            labels = self.labels
        key = (id(labels), tuple(torch.as_tensor(labels).shape), str(generator.device))
        labels = torch.as_tensor(labels).to(generator.device)
        y = _as_points(labels, "labels")
        if y.is_floating_point() and y.shape[1] == 1:
            if not bool(torch.isfinite(y).all()):
                raise ValueError("labels must be finite for pairing='cmixup', got NaN or inf values")
            if self._bins is None or self._bins_key != key:
                self._bins, self._bins_key = _SortedBins(y, self.sigma), key
            return self._bins.sample(y.reshape(-1).to(torch.float64), self.sigma, self.truncation, generator,
                                     chunk=1 << 16)
        return kernel_partners(labels, labels, self.sigma, generator, method="dense",
                               chunk_elements=self.chunk_elements)

    def __repr__(self) -> str:
        return f"KernelPairing(sigma={self.sigma})"
