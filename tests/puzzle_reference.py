"""Exact per-sample CPU reference for the PuzzleMix labelling (a test oracle; needs PyMaxflow, in the dev extra).

Used by the tests (energy comparison) and by ``benchmarks/puzzlemix_speed.py`` (the per-sample
CPU graph-cut baseline). Not used in training.

The energy (see ``openmix.ops.puzzle``) has a pairwise term ``w * (v_p - v_q)**2`` with
``v = l / (L - 1)``: convex in the label difference, so one min-cut on an Ishikawa-style graph
gives the exact global minimum for both 2 and 3 labels (the authors' alpha-beta swap in ``gco``
only reaches a local minimum for 3 labels, so the exact optimum is the stricter reference).

For 3 labels each block gets two binary nodes ``a = [l >= 1]``, ``b = [l >= 2]`` with
``b <= a`` enforced by an infinite edge; ``l = a + b`` and
``(l_p - l_q)**2 = [a_p != a_q] + [b_p != b_q] + 2 b_p + 2 b_q - 2 a_p b_q - 2 a_q b_p``
(using ``a b = b``), all pairwise parts submodular.
"""
from __future__ import annotations

import numpy as np
import torch


def _import_maxflow():
    try:
        import maxflow
    except ImportError as error:  # pragma: no cover - depends on the optional extra
        raise ImportError("the exact PuzzleMix reference needs PyMaxflow: pip install 'openmix[graphcut]' "
                          "(or pip install PyMaxflow)") from error
    return maxflow


def _grid_edges(n: int):
    """Flat (p, q) node pairs of the vertical edges (r, c)-(r+1, c) and horizontal (r, c)-(r, c+1)."""
    ids = np.arange(n * n).reshape(n, n)
    return (ids[:-1, :].ravel(), ids[1:, :].ravel()), (ids[:, :-1].ravel(), ids[:, 1:].ravel())


def _flat_problem(unary: np.ndarray, wv: np.ndarray, wh: np.ndarray):
    """(n, n, L) unaries and grid weights -> u (n*n, L), edge ends p, q (E,) and weights w (E,)."""
    n, _, n_labels = unary.shape
    (vp, vq), (hp, hq) = _grid_edges(n)
    w = np.concatenate([wv.ravel(), wh.ravel()]).astype(np.float64)
    return unary.reshape(n * n, n_labels).astype(np.float64), np.concatenate([vp, hp]), np.concatenate([vq, hq]), w


def solve_labelling_exact_one(unary: np.ndarray, wv: np.ndarray, wh: np.ndarray) -> np.ndarray:
    """Exact minimiser for one sample. unary: (n, n, L) with L in {2, 3}; wv: (n-1, n); wh: (n, n-1)
    non-negative -> labels (n, n) int64."""
    maxflow = _import_maxflow()
    n, _, n_labels = unary.shape
    u, p, q, w = _flat_problem(unary, wv, wh)
    g = maxflow.Graph[float]()
    if n_labels == 2:
        nodes = g.add_nodes(n * n)
        lin = u[:, 1] - u[:, 0]            # cost of label 1 relative to label 0
        g.add_grid_tedges(nodes, np.maximum(lin, 0), np.maximum(-lin, 0))
        g.add_edges(p, q, w, w)
        g.maxflow()
        return g.get_grid_segments(nodes).astype(np.int64).reshape(n, n)
    if n_labels != 3:
        raise ValueError(f"n_labels must be 2 or 3, got {n_labels!r}")
    nodes = g.add_nodes(2 * n * n)
    a = np.arange(n * n)
    b = a + n * n
    w4 = w / 4.0                           # (v_p - v_q)**2 = (l_p - l_q)**2 / 4
    lin = np.zeros(2 * n * n)
    lin[a] += u[:, 1] - u[:, 0]
    lin[b] += u[:, 2] - u[:, 1]
    np.add.at(lin, b[p], 2 * w4)           # + 2 b_p + 2 b_q
    np.add.at(lin, b[q], 2 * w4)
    np.add.at(lin, a[p], -2 * w4)          # -2 a_p b_q = -2 a_p + 2 [a_p = 1, b_q = 0]
    np.add.at(lin, a[q], -2 * w4)
    g.add_grid_tedges(nodes, np.maximum(lin, 0), np.maximum(-lin, 0))
    g.add_edges(a[p], a[q], w4, w4)        # [a_p != a_q]
    g.add_edges(b[p], b[q], w4, w4)        # [b_p != b_q]
    g.add_edges(b[q], a[p], 2 * w4, np.zeros_like(w4))   # cut iff b_q = 0 (source), a_p = 1 (sink)
    g.add_edges(b[p], a[q], 2 * w4, np.zeros_like(w4))
    inf = 1e9 * (np.abs(u).sum() + w.sum() + 1.0)
    g.add_edges(a, b, np.full(n * n, inf), np.zeros(n * n))  # forbid b = 1 with a = 0
    g.maxflow()
    seg = g.get_grid_segments(nodes).astype(np.int64)
    return (seg[a] + seg[b]).reshape(n, n)


def solve_labelling_exact(unary: torch.Tensor, wv: torch.Tensor, wh: torch.Tensor) -> torch.Tensor:
    """Per-sample loop of ``solve_labelling_exact_one`` on the CPU (the baseline the batched solver
    replaces). unary (B, n, n, L), wv (B, n-1, n), wh (B, n, n-1) -> labels (B, n, n) long on unary.device."""
    u = unary.detach().double().cpu().numpy()
    v = wv.detach().double().cpu().numpy()
    h = wh.detach().double().cpu().numpy()
    out = np.stack([solve_labelling_exact_one(u[i], v[i], h[i]) for i in range(u.shape[0])])
    return torch.from_numpy(out).to(unary.device)


def solve_labelling_swap_one(unary: np.ndarray, wv: np.ndarray, wh: np.ndarray, max_cycles: int = 5) -> np.ndarray:
    """The authors' algorithm for one sample: alpha-beta swap (as ``gco.cut_grid_graph(...,
    algorithm='swap')``), every swap move an exact binary min-cut with PyMaxflow, cycling over the
    label pairs until no move lowers the energy. Starts from the per-block unary minimum.
    unary: (n, n, L); wv: (n-1, n); wh: (n, n-1) -> labels (n, n) int64 (a local minimum for L = 3)."""
    maxflow = _import_maxflow()
    n, _, n_labels = unary.shape
    u, p, q, w = _flat_problem(unary, wv, wh)
    v = np.linspace(0.0, 1.0, n_labels)
    dist = (v[:, None] - v[None, :]) ** 2
    labels = u.argmin(1)

    def energy(lab):
        return u[np.arange(n * n), lab].sum() + (w * dist[lab[p], lab[q]]).sum()

    best = energy(labels)
    for _ in range(max_cycles):
        improved = False
        for a in range(n_labels):
            for b in range(a + 1, n_labels):
                active = (labels == a) | (labels == b)
                if not active.any():
                    continue
                nodes = np.flatnonzero(active)
                local = -np.ones(n * n, dtype=np.int64)
                local[nodes] = np.arange(nodes.size)
                # unary of taking a (segment 0) or b (segment 1), edges to fixed neighbours folded in
                cost_a = u[nodes, a].copy()
                cost_b = u[nodes, b].copy()
                for s, t in ((p, q), (q, p)):
                    sel = active[s] & ~active[t]
                    np.add.at(cost_a, local[s[sel]], w[sel] * dist[a, labels[t[sel]]])
                    np.add.at(cost_b, local[s[sel]], w[sel] * dist[b, labels[t[sel]]])
                both = active[p] & active[q]
                g = maxflow.Graph[float]()
                ids = g.add_nodes(nodes.size)
                lin = cost_b - cost_a
                g.add_grid_tedges(ids, np.maximum(lin, 0), np.maximum(-lin, 0))
                pw = w[both] * dist[a, b]
                g.add_edges(local[p[both]], local[q[both]], pw, pw)
                g.maxflow()
                seg = g.get_grid_segments(ids)
                proposal = labels.copy()
                proposal[nodes] = np.where(seg, b, a)
                e = energy(proposal)
                if e < best - 1e-12:
                    labels, best, improved = proposal, e, True
        if not improved:
            break
    return labels.reshape(n, n).astype(np.int64)


def solve_labelling_swap(unary: torch.Tensor, wv: torch.Tensor, wh: torch.Tensor) -> torch.Tensor:
    """Per-sample alpha-beta swap on the CPU (the authors' per-sample graph-cut loop).
    unary (B, n, n, L), wv (B, n-1, n), wh (B, n, n-1) -> labels (B, n, n) long."""
    u = unary.detach().double().cpu().numpy()
    v = wv.detach().double().cpu().numpy()
    h = wh.detach().double().cpu().numpy()
    out = np.stack([solve_labelling_swap_one(u[i], v[i], h[i]) for i in range(u.shape[0])])
    return torch.from_numpy(out).to(unary.device)


def transport_order_full(visible: torch.Tensor, saliency: torch.Tensor, eps: float = 0.8,
                         rounds: int = -1) -> torch.Tensor:
    """The greedy block transport on the full (B, N, N) cost matrix, every round, as the authors
    run it: each round every block takes the argmin of its cost row, each position goes to its
    cheapest claimant (ties: the lower block index) and losers are barred from what they lost.

    The reference for ``openmix.ops.puzzle.transport_order`` (which scores only each block's
    nearest positions and stops at a fixed point) and the transport of the speed baseline.
    visible: (B, t, t) bool; saliency: (B, t, t) -> src (B, t*t) long.
    """
    b, t, _ = visible.shape
    nb = t * t
    rounds = t if rounds < 0 else rounds
    rounds = max(1, min(rounds, nb - 1))
    dtype = saliency.dtype if saliency.is_floating_point() else torch.float32
    r = torch.arange(t, device=saliency.device, dtype=dtype)
    pos = torch.stack(torch.meshgrid(r, r, indexing="ij"), dim=-1).reshape(-1, 2)
    dist = ((pos.unsqueeze(1) - pos.unsqueeze(0)) ** 2).sum(-1) / max(t - 1, 1) ** 2
    cost = eps * dist - saliency.to(dtype).reshape(b, nb, 1) * visible.reshape(b, 1, nb).to(dtype)
    blocks = torch.arange(nb, device=cost.device)
    winner = blocks.expand(b, nb)
    for _ in range(rounds):
        choice = cost.argmin(dim=-1)                                               # (B, N) per block
        claimed = torch.zeros_like(cost, dtype=torch.bool).scatter_(-1, choice.unsqueeze(-1), True)
        fight = torch.where(claimed, cost, torch.full_like(cost, float("inf")))    # claimants only
        best = fight.min(dim=-2, keepdim=True).values                              # (B, 1, N)
        is_best = claimed & (fight == best)
        # the lowest-index claimant among the cheapest; nb where nobody claimed
        first = torch.where(is_best, blocks.view(1, nb, 1), nb).min(dim=-2).values  # (B, N) per position
        winner = first
        lost = first.gather(-1, choice) != blocks
        cost = cost.masked_fill(claimed & lost.unsqueeze(-1), float("inf"))
    return torch.where(winner < nb, winner, blocks)
