"""Entropic optimal transport (log-domain Sinkhorn), batched; used by AlignMix.

Pure tensor functions: no randomness, any device. The iteration count is data dependent only
through a convergence check made every ``check_every`` iterations (one host synchronisation per
check on CUDA, none per iteration); a row (sample) that has converged at a check is frozen from
then on, so with ``check_every=1`` every row stops exactly at the authors' criterion and with a
larger value it runs at most ``check_every - 1`` extra iterations (only closer to the optimum).
"""
from __future__ import annotations

import math
from typing import Tuple

import torch

__all__ = ["squared_distances", "sinkhorn_log", "sinkhorn_plan"]


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise squared Euclidean distances. a: (B, r, C), b: (B, s, C) -> (B, r, s)."""
    a2 = (a * a).sum(-1, keepdim=True)                      # (B, r, 1)
    b2 = (b * b).sum(-1).unsqueeze(-2)                      # (B, 1, s)
    return (a2 + b2 - 2 * a @ b.transpose(-1, -2)).clamp_min(0)


# exp of anything below this is < 2e-35, which changes no sum of terms >= 1 (the largest term of a
# shifted logsumexp is exactly 1) but, left unclamped, underflows into denormals: on x86 CPUs each
# denormal exp costs ~100x a normal one and made up over 60% of the alignment time.
_EXP_FLOOR = -80.0


def _logsumexp(x: torch.Tensor, dim: int) -> torch.Tensor:
    """torch.logsumexp(x, dim) for finite x, without denormal intermediates."""
    top = x.amax(dim=dim, keepdim=True)
    total = (x - top).clamp_min_(_EXP_FLOOR).exp_().sum(dim=dim, keepdim=True)
    return (total.log_() + top).squeeze(dim)


def sinkhorn_log(cost: torch.Tensor, eps: float = 0.1, max_iter: int = 100, tol: float = 0.1,
                 check_every: int = 10) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Log-domain Sinkhorn with uniform marginals.

    cost: (B, r, s). Solves ``min <P, cost> - eps H(P)`` subject to ``P 1 = 1/r``, ``P^T 1 = 1/s``.
    Dual potentials f (B, r), g (B, s) in cost units; one iteration updates f then g. A row (sample)
    stops when the L1 change of f in one iteration drops below ``tol`` (the AlignMix authors'
    criterion: tolerance 0.1 on the change of the dual), or after ``max_iter`` iterations.

    Returns (plan (B, r, s), f (B, r), g (B, s)) with ``plan = exp((f_i + g_j - cost_ij) / eps)``; the column
    marginals are exact after the last g-update, the row marginals within the tolerance.
    Rows are checked every ``check_every`` iterations (see the module docstring).
    """
    if cost.ndim != 3:
        raise ValueError(f"cost must have shape (B, r, s), got {tuple(cost.shape)}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps!r}")
    if not (isinstance(max_iter, int) and max_iter >= 1):
        raise ValueError(f"max_iter must be an int >= 1, got {max_iter!r}")
    b, r, s = cost.shape
    log_mu = -math.log(r)
    log_nu = -math.log(s)
    kernel = cost / -eps                                  # log Gibbs kernel, (B, r, s)
    kernel_t = kernel.transpose(1, 2).contiguous()        # (B, s, r): both updates reduce the last dim
    u = cost.new_zeros(b, r)                              # f / eps
    v = cost.new_zeros(b, s)                              # g / eps
    active = torch.ones(b, dtype=torch.bool, device=cost.device)
    done = 0
    while done < max_iter:
        steps = min(check_every, max_iter - done)
        u_start, v_start = u, v
        u_prev = u
        for _ in range(steps):
            u_prev = u
            u = log_mu - _logsumexp(kernel + v.unsqueeze(1), dim=2)
            v = log_nu - _logsumexp(kernel_t + u.unsqueeze(1), dim=2)
        done += steps
        # rows that had converged before this block keep their potentials
        keep = active.unsqueeze(1)
        u = torch.where(keep, u, u_start)
        v = torch.where(keep, v, v_start)
        change = eps * (u - u_prev).abs().sum(1)          # L1 change of f in the block's last iteration
        active = active & (change >= tol)
        if not bool(active.any()):                        # the one host sync per block
            break
    f, g = eps * u, eps * v
    plan = torch.exp(kernel + u.unsqueeze(2) + v.unsqueeze(1))
    return plan, f, g


def sinkhorn_plan(a: torch.Tensor, b: torch.Tensor, eps: float = 0.1, max_iter: int = 100,
                  tol: float = 0.1, check_every: int = 10, cost_scale: str = "none") -> torch.Tensor:
    """Transport plan between two point sets with squared Euclidean cost.

    a: (B, r, C), b: (B, s, C) -> plan (B, r, s) with row sums ~1/r and column sums 1/s.
    cost_scale: "none" (raw squared distances) or "mean" (each sample's cost divided by its mean).
    Computed in float32 (or float64 when given), without gradient.
    """
    if cost_scale not in ("none", "mean"):
        raise ValueError(f"cost_scale must be 'none' or 'mean', got {cost_scale!r}")
    with torch.no_grad():
        dtype = torch.float64 if a.dtype == torch.float64 else torch.float32
        cost = squared_distances(a.to(dtype), b.to(dtype))
        if cost_scale == "mean":
            cost = cost / cost.mean(dim=(1, 2), keepdim=True).clamp_min(torch.finfo(dtype).tiny)
        plan, _, _ = sinkhorn_log(cost, eps=eps, max_iter=max_iter, tol=tol, check_every=check_every)
    return plan
