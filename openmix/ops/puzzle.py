"""PuzzleMix building blocks: block costs, the batched labelling solver and block transport.

Pure tensor functions: no randomness, no labels, batched over B, any device, no host sync.

Notation: B batch, ``n`` the label grid (n x n blocks), ``L`` the number of mask levels
(``n_labels`` 2 or 3). Label ``l`` in ``0..L-1`` means the mask value ``v = l / (L - 1)``, the
weight of the row's OWN image in that block (``L - 1`` = own image only, ``0`` = partner only).

The labelling energy of one sample (Kim et al. 2020, written in the form used here) is::

    E(l) = sum_p U[p, l_p] + sum_(p,q) w_pq * (v_(l_p) - v_(l_q))**2

over the 4-neighbour edges of the n x n grid, with

* ``U[p, l] = v * cost_own[p] + (1 - v) * cost_partner[p] + prior[l]``: showing the own image
  costs the partner's (block-pooled, per-sample normalised) saliency lost there and vice versa;
  ``prior[l] = -eta / n**2 * log P(l)`` with ``P = (1-a, a)`` (2 labels) or
  ``((1-a)**2, 2a(1-a), a**2)`` (3 labels) for the row's prior weight ``a``;
* the data smoothness term: the mean absolute pixel difference across a block boundary for each
  of the four (own/partner) x (own/partner) combinations, weighted by ``beta / n / 16 * gamma``,
  split (exactly, up to a constant, for 2 labels) into unary parts and an edge weight;
* the label smoothness weight ``beta / n / 16`` on every edge.

This is the energy the authors hand to their graph cut (there in int32 after scaling by
``1000 * n**2``; here in floating point).
"""
from __future__ import annotations

import functools
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

__all__ = [
    "block_saliency",
    "boundary_differences",
    "labelling_costs",
    "labelling_energy",
    "solve_labelling",
    "transport_order",
    "move_blocks",
    "mix_moved_blocks",
    "neighbourhood_size",
]


def _level_values(n_labels: int, ref: torch.Tensor) -> torch.Tensor:
    """(L,) mask values 0, 1/(L-1), ..., 1."""
    return torch.linspace(0.0, 1.0, n_labels, device=ref.device, dtype=ref.dtype)


def block_saliency(saliency: torch.Tensor, grid: int) -> torch.Tensor:
    """Block-pooled saliency normalised to sum 1 per sample.

    saliency: (B, H, W) non-negative, H and W divisible by ``grid`` -> (B, grid, grid).
    """
    b, h, w = saliency.shape
    pooled = F.avg_pool2d(saliency.unsqueeze(1), (h // grid, w // grid)).squeeze(1)
    total = pooled.flatten(1).sum(1).clamp_min(torch.finfo(pooled.dtype).tiny)
    return pooled / total.view(b, 1, 1)


def neighbourhood_size(block_h: int, block_w: int, neigh_size: int) -> int:
    """Largest d <= neigh_size dividing both block sides (the authors' min(neigh, block) when it divides)."""
    for d in range(min(neigh_size, block_h, block_w), 0, -1):
        if block_h % d == 0 and block_w % d == 0:
            return d
    return 1


def boundary_differences(x: torch.Tensor, index: torch.Tensor, grid: int,
                         neigh_size: int = 4) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mean absolute differences across block boundaries for the four source combinations.

    x: (B, C, H, W) images in pixel scale, H and W divisible by ``grid``; index: (B,) partners.
    The images are average-pooled over ``d x d`` neighbourhoods (``d`` = ``neighbourhood_size``),
    the pooled cells on both sides of each block boundary are compared, the absolute difference
    is averaged over channels and along the boundary of each block pair.

    Returns ``dv`` (B, 2, 2, grid-1, grid) for vertical neighbours (block row r above r+1) and
    ``dh`` (B, 2, 2, grid, grid-1) for horizontal ones (block column c left of c+1); entry
    ``[:, a, b]`` has source ``a`` on the upper/left side and ``b`` on the lower/right side,
    0 = partner image, 1 = own image.
    """
    b, c, h, w = x.shape
    bh, bw = h // grid, w // grid
    d = neighbourhood_size(bh, bw, neigh_size)
    kh, kw = bh // d, bw // d
    if 8 * d * (grid - 1) < min(h, w):
        # few boundaries: pool only the d-pixel strips on both sides of each of them
        strip = torch.arange(-d, d, device=x.device)
        rows = torch.arange(1, grid, device=x.device).view(-1, 1) * bh + strip
        cols = torch.arange(1, grid, device=x.device).view(-1, 1) * bw + strip
        across = F.avg_pool2d(x.index_select(2, rows.flatten()), d)       # (B, C, 2(grid-1), W/d)
        along = F.avg_pool2d(x.index_select(3, cols.flatten()), d)        # (B, C, H/d, 2(grid-1))
        above, below, left, right = across[:, :, 0::2], across[:, :, 1::2], along[..., 0::2], along[..., 1::2]
    else:
        pooled = F.avg_pool2d(x, d) if d > 1 else x
        above, below = pooled[:, :, kh - 1:(grid - 1) * kh:kh, :], pooled[:, :, kh:grid * kh:kh, :]
        left, right = pooled[..., kw - 1:(grid - 1) * kw:kw], pooled[..., kw:grid * kw:kw]
    # source 0 = partner, 1 = own
    above, below, left, right = ((s.index_select(0, index), s) for s in (above, below, left, right))
    dv = x.new_empty(b, 2, 2, grid - 1, grid)
    dh = x.new_empty(b, 2, 2, grid, grid - 1)
    for i in range(2):
        for j in range(2):
            diff_v = (above[i] - below[j]).abs().mean(1)             # (B, grid-1, W/d)
            dv[:, i, j] = diff_v.view(b, grid - 1, grid, kw).mean(-1)
            diff_h = (left[i] - right[j]).abs().mean(1)              # (B, H/d, grid-1)
            dh[:, i, j] = diff_h.view(b, grid, kh, grid - 1).mean(2)
    return dv, dh


def labelling_costs(sal_own: torch.Tensor, sal_partner: torch.Tensor, dv: torch.Tensor,
                    dh: torch.Tensor, prior_weight: torch.Tensor, n_labels: int = 3,
                    beta: float = 1.2, gamma: float = 0.5, eta: float = 0.2,
                    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unary costs and edge weights of the labelling energy (see the module docstring).

    sal_own, sal_partner: (B, n, n) block saliencies (each summing to 1);
    dv: (B, 2, 2, n-1, n), dh: (B, 2, 2, n, n-1) from ``boundary_differences``;
    prior_weight: (B,) the prior weight ``a`` of the own image in (0, 1).
    Returns unary (B, n, n, L), wv (B, n-1, n) vertical edge weights, wh (B, n, n-1).
    """
    b, n, _ = sal_own.shape
    smooth = beta / n / 16.0
    dv = dv * (smooth * gamma)
    dh = dh * (smooth * gamma)
    # showing the own image costs the partner's saliency there, and vice versa
    cost_own = sal_partner.clone()
    cost_par = sal_own.clone()
    # data term split into unary parts + an edge weight (index 0 = partner, 1 = own)
    cost_own[:, :-1, :] += (dv[:, 1, 0] + dv[:, 1, 1]) / 2
    cost_par[:, :-1, :] += (dv[:, 0, 1] + dv[:, 0, 0]) / 2
    cost_own[:, 1:, :] += (dv[:, 0, 1] + dv[:, 1, 1]) / 2
    cost_par[:, 1:, :] += (dv[:, 1, 0] + dv[:, 0, 0]) / 2
    cost_own[:, :, :-1] += (dh[:, 1, 0] + dh[:, 1, 1]) / 2
    cost_par[:, :, :-1] += (dh[:, 0, 1] + dh[:, 0, 0]) / 2
    cost_own[:, :, 1:] += (dh[:, 0, 1] + dh[:, 1, 1]) / 2
    cost_par[:, :, 1:] += (dh[:, 1, 0] + dh[:, 0, 0]) / 2
    wv = (smooth + (dv[:, 1, 0] + dv[:, 0, 1] - dv[:, 1, 1] - dv[:, 0, 0]) / 2).clamp_min(0.0)
    wh = (smooth + (dh[:, 1, 0] + dh[:, 0, 1] - dh[:, 1, 1] - dh[:, 0, 0]) / 2).clamp_min(0.0)

    a = prior_weight.to(sal_own.dtype).view(b, 1)
    if n_labels == 2:
        probs = torch.cat([1 - a, a], dim=1)
    elif n_labels == 3:
        probs = torch.cat([(1 - a) ** 2, 2 * a * (1 - a), a ** 2], dim=1)
    else:
        raise ValueError(f"n_labels must be 2 or 3, got {n_labels!r}")
    prior = -eta / n ** 2 * torch.log(probs + 1e-8)                   # (B, L)
    v = _level_values(n_labels, sal_own)                                # (L,)
    unary = (v * cost_own.unsqueeze(-1) + (1 - v) * cost_par.unsqueeze(-1)
             + prior.view(b, 1, 1, n_labels))
    return unary, wv, wh


def labelling_energy(labels: torch.Tensor, unary: torch.Tensor, wv: torch.Tensor,
                     wh: torch.Tensor) -> torch.Tensor:
    """Energy of integer labellings. labels: (B, n, n) long in [0, L); unary (B, n, n, L) -> (B,)."""
    n_labels = unary.shape[-1]
    v = _level_values(n_labels, unary)[labels]                          # (B, n, n)
    e = unary.gather(-1, labels.unsqueeze(-1)).squeeze(-1).flatten(1).sum(1)
    e = e + (wv * (v[:, :-1, :] - v[:, 1:, :]) ** 2).flatten(1).sum(1)
    e = e + (wh * (v[:, :, :-1] - v[:, :, 1:]) ** 2).flatten(1).sum(1)
    return e


def _chain_argmin(unary: torch.Tensor, weight: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """Exact min-sum dynamic programme on chains.

    unary: (..., m, L); weight: (..., m-1) edge weights; dist: (L, L) pairwise distances.
    Returns (..., m) long labels minimising sum unary + sum weight * dist[l_t, l_(t+1)].
    """
    m = unary.shape[-2]
    cost = unary[..., 0, :]
    back = []
    for t in range(1, m):
        total = cost.unsqueeze(-1) + weight[..., t - 1, None, None] * dist   # (..., L_prev, L_cur)
        best, arg = total.min(dim=-2)
        back.append(arg)
        cost = unary[..., t, :] + best
    label = cost.argmin(dim=-1)
    out = [label]
    for arg in reversed(back):
        label = arg.gather(-1, label.unsqueeze(-1)).squeeze(-1)
        out.append(label)
    return torch.stack(out[::-1], dim=-1)


def _row_sweep(labels: torch.Tensor, unary: torch.Tensor, wv: torch.Tensor, wh: torch.Tensor,
               dist: torch.Tensor, parity: int) -> torch.Tensor:
    """Re-solve every row of the given parity exactly, its neighbouring rows held fixed."""
    n = labels.shape[1]
    cond = unary.clone()                                                 # (B, n, n, L)
    # coupling to the row above (r-1) and below (r+1)
    cond[:, 1:] += wv.unsqueeze(-1) * dist[labels[:, :-1]]
    cond[:, :-1] += wv.unsqueeze(-1) * dist[labels[:, 1:]]
    rows = slice(parity, n, 2)
    new_rows = _chain_argmin(cond[:, rows], wh[:, rows], dist)
    labels = labels.clone()
    labels[:, rows] = new_rows
    return labels


def _exhaustive(unary: torch.Tensor, wv: torch.Tensor, wh: torch.Tensor) -> torch.Tensor:
    """Exact minimum by enumeration for tiny grids (L ** (n*n) <= 4096). unary: (B, n, n, L)."""
    b, n, _, n_labels = unary.shape
    k = n * n
    codes = torch.arange(n_labels ** k, device=unary.device)
    digits = torch.stack([(codes // n_labels ** i) % n_labels for i in range(k)], dim=-1)
    cand = digits.view(1, -1, n, n).expand(b, -1, n, n)                  # (B, M, n, n)
    m = cand.shape[1]
    energy = labelling_energy(cand.reshape(b * m, n, n),
                              unary.repeat_interleave(m, 0), wv.repeat_interleave(m, 0),
                              wh.repeat_interleave(m, 0)).view(b, m)
    best = energy.argmin(dim=1)
    return digits[best].view(b, n, n)


def _relaxed_labelling(unary: torch.Tensor, wv: torch.Tensor, wh: torch.Tensor, iters: int,
                       theta: float) -> torch.Tensor:
    """Minimise the exact convex (Lovasz) relaxation of the labelling energy by preconditioned
    primal-dual iterations (Chambolle & Pock) and return the relaxed level variables.

    2 labels: one variable ``a`` in [0, 1] per block (the weight of label 1); the energy is
    ``sum c a + sum w |a_p - a_q|`` (a graph-cut energy: thresholding a minimiser at any level is
    an exact binary minimiser). 3 labels: two level variables ``a = [l >= 1]``, ``b = [l >= 2]``,
    ``0 <= b <= a <= 1``, and ``(l_p - l_q)**2 = |a_p - a_q| + |b_p - b_q| + 2 b_p + 2 b_q
    - 2 a_p - 2 a_q + 2 (a_p - b_q)_+ + 2 (a_q - b_p)_+`` (Ishikawa's construction for a convex
    pairwise term), again tight: thresholding a minimiser gives an exact labelling.

    unary: (B, n, n, L); wv: (B, n-1, n); wh: (B, n, n-1). Returns levels (B, L-1, n, n).
    """
    ca, cb, w_v, w_h = _relaxation_costs(unary, wv, wh)
    if cb is None:
        return _primal_dual_two_labels(ca, w_v, w_h, iters, theta).unsqueeze(1)
    return torch.stack(_primal_dual_three_labels(ca, cb, w_v, w_h, iters, theta), dim=1)


def _relaxation_costs(unary: torch.Tensor, wv: torch.Tensor, wh: torch.Tensor):
    """Linear costs of the level variables and the pairwise weights, each problem rescaled so
    that its linear costs are O(1) (the minimiser does not change). -> (ca, cb or None, w_v, w_h)."""
    three = unary.shape[-1] == 3
    w_v, w_h = (wv / 4, wh / 4) if three else (wv, wh)   # 3 labels: (v_p - v_q)**2 = (l_p - l_q)**2 / 4
    ca = unary[..., 1] - unary[..., 0]
    cb = None
    if three:
        cb = unary[..., 2] - unary[..., 1]
        deg = torch.zeros_like(ca)
        deg[:, :-1] += w_v
        deg[:, 1:] += w_v
        deg[:, :, :-1] += w_h
        deg[:, :, 1:] += w_h
        ca = ca - 2 * deg
        cb = cb + 2 * deg
    scale = 1.0 / ca.abs().flatten(1).mean(1).clamp_min(1e-12).view(-1, 1, 1)
    return ca * scale, None if cb is None else cb * scale, w_v * scale, w_h * scale


def _grad_t(yv: torch.Tensor, yh: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The adjoint of the forward differences: duals on vertical (B, n-1, n) and horizontal
    (B, n, n-1) edges -> (B, n, n)."""
    out = torch.zeros_like(like)
    out[:, :-1] -= yv
    out[:, 1:] += yv
    out[:, :, :-1] -= yh
    out[:, :, 1:] += yh
    return out


def _dual_step(y: torch.Tensor, diff: torch.Tensor, sigma: float, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    return torch.clamp(torch.add(y, diff, alpha=sigma), lo, hi)


def _primal_dual_two_labels(ca: torch.Tensor, w_v: torch.Tensor, w_h: torch.Tensor, iters: int,
                            theta: float) -> torch.Tensor:
    """min_a sum ca a + sum w |a_p - a_q| over a in [0, 1]; -> a (B, n, n). Diagonal
    preconditioning: tau = theta / (sum |K| over a column), sigma = 1 / (2 theta) for the duals."""
    tau, sigma = theta / 4.0, 0.5 / theta
    a = (ca < 0).to(ca.dtype)
    ya_v, ya_h = torch.zeros_like(w_v), torch.zeros_like(w_h)
    for _ in range(iters):
        a_new = torch.add(a, ca + _grad_t(ya_v, ya_h, ca), alpha=-tau).clamp_(0, 1)
        a_bar = 2 * a_new - a
        a = a_new
        ya_v = _dual_step(ya_v, a_bar[:, 1:] - a_bar[:, :-1], sigma, -w_v, w_v)
        ya_h = _dual_step(ya_h, a_bar[:, :, 1:] - a_bar[:, :, :-1], sigma, -w_h, w_h)
    return a


def _primal_dual_three_labels(ca: torch.Tensor, cb: torch.Tensor, w_v: torch.Tensor, w_h: torch.Tensor,
                              iters: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The 3-label relaxation in the level variables 0 <= b <= a <= 1; -> (a, b), each (B, n, n).
    z1/z2 are the duals of the cross terms 2 (a_p - b_q)_+ on each edge direction."""
    tau, sigma = theta / 8.0, 0.5 / theta
    a = (ca < 0).to(ca.dtype)
    b = (cb < 0).to(ca.dtype) * a
    ya_v, ya_h, yb_v, yb_h = (torch.zeros_like(w) for w in (w_v, w_h, w_v, w_h))
    z1v, z2v, z1h, z2h = (torch.zeros_like(w) for w in (w_v, w_v, w_h, w_h))
    zero_v, zero_h, hi2_v, hi2_h = torch.zeros_like(w_v), torch.zeros_like(w_h), 2 * w_v, 2 * w_h
    for _ in range(iters):
        ga = ca + _grad_t(ya_v, ya_h, ca)
        ga[:, :-1] += z1v
        ga[:, 1:] += z2v
        ga[:, :, :-1] += z1h
        ga[:, :, 1:] += z2h
        gb = cb + _grad_t(yb_v, yb_h, ca)
        gb[:, 1:] -= z1v
        gb[:, :-1] -= z2v
        gb[:, :, 1:] -= z1h
        gb[:, :, :-1] -= z2h
        a_new, b_new = torch.add(a, ga, alpha=-tau), torch.add(b, gb, alpha=-tau)
        crossed = b_new > a_new             # project onto 0 <= b <= a <= 1
        mid = (a_new + b_new) / 2
        a_new = torch.where(crossed, mid, a_new).clamp_(0, 1)
        b_new = torch.where(crossed, mid, b_new).clamp_(0, 1)
        a_bar, b_bar = 2 * a_new - a, 2 * b_new - b
        a, b = a_new, b_new
        yb_v = _dual_step(yb_v, b_bar[:, 1:] - b_bar[:, :-1], sigma, -w_v, w_v)
        yb_h = _dual_step(yb_h, b_bar[:, :, 1:] - b_bar[:, :, :-1], sigma, -w_h, w_h)
        z1v = _dual_step(z1v, a_bar[:, :-1] - b_bar[:, 1:], sigma, zero_v, hi2_v)
        z2v = _dual_step(z2v, a_bar[:, 1:] - b_bar[:, :-1], sigma, zero_v, hi2_v)
        z1h = _dual_step(z1h, a_bar[:, :, :-1] - b_bar[:, :, 1:], sigma, zero_h, hi2_h)
        z2h = _dual_step(z2h, a_bar[:, :, 1:] - b_bar[:, :, :-1], sigma, zero_h, hi2_h)
        ya_v = _dual_step(ya_v, a_bar[:, 1:] - a_bar[:, :-1], sigma, -w_v, w_v)
        ya_h = _dual_step(ya_h, a_bar[:, :, 1:] - a_bar[:, :, :-1], sigma, -w_h, w_h)
    return a, b


def _sweep(labels: torch.Tensor, unary: torch.Tensor, wv: torch.Tensor, wh: torch.Tensor,
           sweeps: int) -> torch.Tensor:
    """Block-coordinate descent: re-solve even rows, odd rows, even columns, odd columns exactly."""
    v = _level_values(unary.shape[-1], unary)
    dist = (v.view(-1, 1) - v.view(1, -1)) ** 2                          # (L, L)
    unary_t = unary.transpose(1, 2)
    wv_t, wh_t = wh.transpose(1, 2), wv.transpose(1, 2)
    for _ in range(sweeps):
        labels = _row_sweep(labels, unary, wv, wh, dist, 0)
        labels = _row_sweep(labels, unary, wv, wh, dist, 1)
        labels_t = labels.transpose(1, 2)
        labels_t = _row_sweep(labels_t, unary_t, wv_t, wh_t, dist, 0)
        labels_t = _row_sweep(labels_t, unary_t, wv_t, wh_t, dist, 1)
        labels = labels_t.transpose(1, 2)
    return labels.contiguous()


def solve_labelling(unary: torch.Tensor, wv: torch.Tensor, wh: torch.Tensor,
                    iters: int = -1, polish_sweeps: int = 1) -> torch.Tensor:
    """Minimise the labelling energy for a whole batch at once, on the tensors' device.

    unary: (B, n, n, L) with L in {2, 3}; wv: (B, n-1, n); wh: (B, n, n-1) non-negative
    -> labels (B, n, n) long in [0, L).

    Grids with at most 4096 labellings (2 x 2) are enumerated exactly. Larger grids:

    1. the exact convex relaxation (see ``_relaxed_labelling``) is minimised by a fixed number of
       primal-dual iterations (``iters``; default ``max(24, 4 n)``);
    2. the relaxed levels are thresholded at 0.1, 0.3, 0.5, 0.7 and 0.9 and the labelling with
       the lowest energy is kept per sample (at convergence any threshold is optimal);
    3. ``polish_sweeps`` sweeps of exact chain-wise block-coordinate descent (never increase the
       energy) remove what is left of the rounding error.

    A fixed amount of work: no data-dependent stopping, no host synchronisation. Measured against
    the exact optimum (tests/test_puzzlemix.py), the energy gap stays well under 1%.
    """
    if unary.ndim != 4 or unary.shape[1] != unary.shape[2]:
        raise ValueError(f"unary must have shape (B, n, n, L), got {tuple(unary.shape)}")
    b, n, _, n_labels = unary.shape
    if n_labels not in (2, 3):
        raise ValueError(f"unary must have L = 2 or 3 labels in its last dimension, got {n_labels}")
    if n_labels ** (n * n) <= 4096:
        return _exhaustive(unary, wv, wh)
    iters = max(24, 4 * n) if iters < 0 else iters
    levels = _relaxed_labelling(unary, wv, wh, iters, theta=10.0 if n_labels == 3 else 1.0)
    best, best_energy = None, None
    for t in (0.1, 0.3, 0.5, 0.7, 0.9):
        labels = (levels >= t).long().sum(1)
        energy = labelling_energy(labels, unary, wv, wh)
        if best is None:
            best, best_energy = labels, energy
        else:
            better = energy < best_energy
            best = torch.where(better.view(b, 1, 1), labels, best)
            best_energy = torch.minimum(energy, best_energy)
    return _sweep(best, unary, wv, wh, polish_sweeps)


@functools.lru_cache(maxsize=None)
def _positions_by_distance(t: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """For each block of a t x t grid, all positions sorted by squared distance (ties: by index).

    Returns order (t*t, t*t) long and the sorted distances (t*t, t*t) float64, divided by (t-1)**2.
    """
    r = torch.arange(t, dtype=torch.float64)
    pos = torch.stack(torch.meshgrid(r, r, indexing="ij"), dim=-1).reshape(-1, 2)
    dist = ((pos.unsqueeze(1) - pos.unsqueeze(0)) ** 2).sum(-1) / max(t - 1, 1) ** 2
    dist_sorted, order = dist.sort(dim=1, stable=True)
    return order, dist_sorted


def transport_order(visible: torch.Tensor, saliency: torch.Tensor, eps: float = 0.8,
                    rounds: int = -1, adaptive: Optional[bool] = None) -> torch.Tensor:
    """Which block each target position shows after moving salient blocks into the visible area.

    visible: (B, t, t) bool, where the image is shown; saliency: (B, t, t) block saliency (sum 1).
    Cost of moving block i to position j: ``eps * |pos_i - pos_j|**2 / (t-1)**2 - saliency_i * visible_j``.
    The authors' greedy assignment: for ``rounds`` rounds (default t) every block claims its
    cheapest position not yet barred to it (ties: the nearer position, then the lower index),
    each position goes to its cheapest claimant (ties: the lower block index), and every loser
    is barred from the position it lost. Positions nobody won keep their own block.
    Returns src (B, t*t) long: the block (flat index) to show at each position.

    Only each block's nearest positions are scored: a block is barred at most once per round,
    so it only ever claims one of its ``rounds + 1`` cheapest positions, and a position farther
    than ``dist[rounds] + saliency_i / eps`` cannot be among those. With ``adaptive`` (default:
    on the CPU) the work also adapts to the data: the scored width follows the batch's largest
    saliency, only the losers choose again, and the rounds stop at the first round without a
    loser (the assignment is then fixed). These read values back to the host, so on an
    accelerator all positions are scored and every round runs. Both give the same result.
    """
    b, t, _ = visible.shape
    nb = t * t
    rounds = t if rounds < 0 else rounds
    rounds = max(1, min(rounds, nb - 1))
    device = saliency.device
    dtype = saliency.dtype if saliency.is_floating_point() else torch.float32
    sal = saliency.to(dtype).reshape(b, nb)
    order, dist = _positions_by_distance(t)
    order, dist = order.to(device), dist.to(device, dtype)
    on_cpu = device.type == "cpu" if adaptive is None else bool(adaptive)
    width = nb
    if on_cpu and eps > 0 and nb > 1:
        reach = dist[:, min(rounds, nb - 1)] + float(sal.max()) / eps                 # (N,)
        width = max(int((dist <= reach.unsqueeze(1)).sum(1).max()), min(rounds + 1, nb))
    order, dist = order[:, :width], dist[:, :width]
    shown = visible.reshape(b, nb)[:, order.reshape(-1)].view(b, nb, width)
    cost = torch.addcmul(eps * dist, sal.unsqueeze(-1), shown.to(dtype), value=-1.0)  # (B, N, width)
    src_idx = torch.arange(nb, device=device).expand(b, nb)
    rows = cost.view(b * nb, width)
    row_base = (src_idx * width).reshape(-1)                                         # (B*N,)
    flat_order = order.reshape(-1)
    pick = rows.argmin(dim=-1)                                                        # (B*N,) into width
    winner = src_idx
    for _ in range(rounds):
        choice = flat_order[row_base + pick].view(b, nb)                              # target per block
        choice_cost = rows.gather(-1, pick.unsqueeze(-1)).view(b, nb)
        best = torch.full((b, nb), float("inf"), device=device, dtype=dtype)
        best = best.scatter_reduce(-1, choice, choice_cost, reduce="amin")
        cand = torch.where(choice_cost <= best.gather(-1, choice), src_idx, nb)
        winner = torch.full((b, nb), nb, device=device, dtype=torch.long)
        winner = winner.scatter_reduce(-1, choice, cand, reduce="amin")              # block per target
        lost = (winner.gather(-1, choice) != src_idx).view(-1)
        if on_cpu:
            losers = lost.nonzero().squeeze(-1)
            if losers.numel() == 0:
                break                                      # nobody lost: the assignment is fixed
            rows[losers, pick[losers]] = float("inf")
            pick[losers] = rows[losers].argmin(dim=-1)     # only the losers choose again
        else:
            rows.scatter_(-1, pick.unsqueeze(-1),
                          torch.where(lost, float("inf"), rows.gather(-1, pick.unsqueeze(-1)).squeeze(-1)).unsqueeze(-1))
            pick = rows.argmin(dim=-1)
    return torch.where(winner < nb, winner, src_idx)


def move_blocks(x: torch.Tensor, src: torch.Tensor, t: int) -> torch.Tensor:
    """Rearrange a t x t grid of blocks. x: (B, C, H, W), src: (B, t*t) -> (B, C, H, W)."""
    b, c, h, w = x.shape
    bh, bw = h // t, w // t
    blocks = x.reshape(b, c, t, bh, t, bw).permute(0, 2, 4, 1, 3, 5).reshape(b, t * t, c * bh * bw)
    moved = blocks.gather(1, src.unsqueeze(-1).expand(-1, -1, blocks.shape[-1]))
    return moved.reshape(b, t, t, c, bh, bw).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


def mix_moved_blocks(x: torch.Tensor, index: torch.Tensor, src_own: torch.Tensor, src_partner: torch.Tensor,
                     weight: torch.Tensor, t: int, adaptive: Optional[bool] = None) -> torch.Tensor:
    """``lerp(move_blocks(x[index], src_partner), move_blocks(x, src_own), weight)`` in fewer passes.

    x: (B, C, H, W) with H, W divisible by t; index: (B,) partners; src_own, src_partner: (B, t*t)
    the block each target position shows from the own / the partner image; weight: (B, t*t) the
    own image's weight per target block.

    Works on block-row segments (the ``W / t`` contiguous pixels of one block in one pixel row):
    every output segment is gathered straight into image layout from the source that weighs at
    least a half, then blended with the other source where the weight is strictly between 0
    and 1. With ``adaptive`` (default: on the CPU) only the blended segments are gathered a
    second time (none with two labels); finding them reads back to the host, so on an
    accelerator every segment is blended, with weight 0 where nothing changes.
    """
    b, c, h, w = x.shape
    bh, bw = h // t, w // t
    device = x.device
    own_first = weight >= 0.5                                                      # (B, t*t)
    rows = torch.arange(b, device=device).view(b, 1)
    partner = index.view(b, 1).to(device)
    channel = torch.arange(c, device=device).view(1, c, 1, 1, 1)
    line = torch.arange(bh, device=device).view(1, 1, 1, bh, 1)

    def segments(image: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
        """Flat ids of the segments of x viewed as (B, C, t, bh, t, bw) -> (B*C*t*bh*t,)."""
        image, r, col = (v.view(b, 1, t, 1, t) for v in (image, block // t, block % t))
        return ((((image * c + channel) * t + r) * bh + line) * t + col).reshape(-1)

    flat = x.reshape(-1, bw)
    first = segments(torch.where(own_first, rows, partner), torch.where(own_first, src_own, src_partner))
    out = flat.index_select(0, first)
    toward_second = torch.where(own_first, 1 - weight, weight).to(x.dtype)        # (B, t*t)
    second = segments(torch.where(own_first, partner, rows), torch.where(own_first, src_partner, src_own))
    seg_weight = toward_second.view(b, 1, t, 1, t).expand(b, c, t, bh, t).reshape(-1, 1)
    adaptive = device.type == "cpu" if adaptive is None else adaptive
    if not adaptive:
        return out.lerp_(flat.index_select(0, second), seg_weight).view(b, c, h, w)
    blended = seg_weight.squeeze(1).nonzero().squeeze(1)          # only these segments need a blend
    if blended.numel():
        part = out.index_select(0, blended).lerp_(flat.index_select(0, second[blended]), seg_weight[blended])
        out.index_copy_(0, blended, part)
    return out.view(b, c, h, w)
