"""PuzzleMix (Kim et al. 2020): saliency-guided block masks with optimal transport of salient blocks.

Per batch: a grid n x n with n drawn from ``grid_sizes``; per row a prior weight λ₀ ~ Beta(α, α);
the n x n mask levels (``n_labels`` = 2: {0, 1}, 3: {0, ½, 1}) minimise the PuzzleMix energy
(saliency lost, label prior, label and data smoothness; see ``openmix.ops.puzzle``), solved for the
whole batch at once on the input's device; then salient blocks of each image move into the area
where that image is shown (greedy transport, cost ``t_eps * distance² - saliency``); finally
``x̃ = mask * x_moved + (1 - mask) * partner_moved`` and λ per row = mask mean.

Needs the saliency of the clean batch (``needs = "saliency"``):
``policy(x, y, saliency=s)`` with ``s`` (B, H, W) = sqrt(mean over channels of (dL/dx)²), which
the training engine computes. The labels are mixed per row, so train with a soft-target loss.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from ..ops.puzzle import (block_saliency, boundary_differences, labelling_costs, mix_moved_blocks,
                          solve_labelling, transport_order)
from .base import MixPolicy, register_policy


@register_policy("puzzlemix")
class PuzzleMix(MixPolicy):
    """PuzzleMix on images (B, C, H, W); defaults are the authors' CIFAR settings.

    Args:
        alpha: Beta(α, α) for the prior weight λ₀ of the own image (authors: 1).
        grid_sizes: block grids n to draw from uniformly per batch (those dividing H and W are used).
        n_labels: 2 (mask values 0, 1) or 3 (0, ½, 1).
        beta: label smoothness (scaled by 1 / n / 16 as in the authors' code), 1.2.
        gamma: data smoothness weight, 0.5.
        eta: label prior weight, 0.2.
        neigh_size: side of the pixel neighbourhoods compared across block boundaries, 4.
        transport: move salient blocks (True).
        t_eps: transport cost coefficient, 0.8.
        t_size: transport block side in pixels (CIFAR: 4); blocks of the label grid are used when
            they are smaller or not a multiple of it. ``-1``: always the label grid.
        mean, std: per-channel normalisation of ``x`` (sequences of C numbers), undone for the data
            smoothness term, which the authors compute on [0, 1] pixels. None: ``x`` as given.
        solver_iters: primal-dual iterations of the labelling solver (-1: ``max(24, 4 n)``).
        clean_lam: the authors' ``clean_lam`` (their default 0): 0 computes the saliency with the model
            in eval mode and trains on the mixed batch only; > 0 computes it in train mode and adds
            ``2 · clean_lam · CE(clean batch) / num_classes`` to the training loss, as their code does.
        mode, p, pairing, stop_epoch, seed, inplace: see ``MixPolicy``. ``mode="batch"`` (the
            authors') draws one λ₀ per batch; "elem"/"pair" per row/pair. The grid is per batch.
    """

    needs = "saliency"
    uses_mask = True
    spatial_dims = (2, 2)
    requires_soft_targets = True

    def __init__(self, alpha: Any = 1.0, grid_sizes: Sequence[int] = (2, 4, 8, 16), n_labels: int = 3,
                 beta: float = 1.2, gamma: float = 0.5, eta: float = 0.2, neigh_size: int = 4,
                 transport: bool = True, t_eps: float = 0.8, t_size: int = 4,
                 mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
                 solver_iters: int = -1, clean_lam: float = 0.0, mode: str = "batch", p: Any = 1.0,
                 pairing: Any = "random", stop_epoch: Optional[int] = None, seed: Optional[int] = None,
                 inplace: bool = False) -> None:
        super().__init__(alpha=alpha, mode=mode, p=p, pairing=pairing, stop_epoch=stop_epoch, seed=seed,
                         inplace=inplace)
        if (isinstance(grid_sizes, (str, bytes)) or not isinstance(grid_sizes, Sequence) or not grid_sizes
                or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in grid_sizes)):
            raise ValueError(f"grid_sizes must be a non-empty list of positive ints (authors: [2, 4, 8, 16]), "
                             f"got {grid_sizes!r}")
        self.grid_sizes = tuple(int(n) for n in grid_sizes)
        if n_labels not in (2, 3) or isinstance(n_labels, bool):
            raise ValueError(f"n_labels must be 2 or 3, got {n_labels!r}")
        self.n_labels = int(n_labels)
        for name, value in (("beta", beta), ("gamma", gamma), ("eta", eta), ("t_eps", t_eps)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        self.beta, self.gamma, self.eta, self.t_eps = float(beta), float(gamma), float(eta), float(t_eps)
        if isinstance(neigh_size, bool) or not isinstance(neigh_size, int) or neigh_size < 1:
            raise ValueError(f"neigh_size must be an int >= 1, got {neigh_size!r}")
        self.neigh_size = neigh_size
        if isinstance(t_size, bool) or not isinstance(t_size, int) or (t_size < 1 and t_size != -1):
            raise ValueError(f"t_size must be a positive int or -1 (the label grid), got {t_size!r}")
        self.t_size = t_size
        self.transport = bool(transport)
        if (mean is None) != (std is None):
            raise ValueError(f"mean and std must be given together, got mean={mean!r}, std={std!r}")
        self.mean = None if mean is None else torch.as_tensor(mean, dtype=torch.float32).flatten()
        self.std = None if std is None else torch.as_tensor(std, dtype=torch.float32).flatten()
        if isinstance(solver_iters, bool) or not isinstance(solver_iters, int) or (solver_iters < 1 and solver_iters != -1):
            raise ValueError(f"solver_iters must be a positive int or -1 (automatic), got {solver_iters!r}")
        self.solver_iters = solver_iters
        if isinstance(clean_lam, bool) or not isinstance(clean_lam, (int, float)) or not 0 <= clean_lam < float("inf"):
            raise ValueError(f"clean_lam must be a finite number >= 0 (authors: 0), got {clean_lam!r}")
        self.clean_lam = float(clean_lam)

    # -- checks ------------------------------------------------------------------------------
    def check_loss(self, loss_fn: Any) -> None:
        """Raise if ``loss_fn`` ignores the per-row mixed labels (PuzzleMix needs soft targets)."""
        if not getattr(loss_fn, "needs_soft_targets", True):
            raise ValueError(f"puzzlemix mixes the labels of each row with its own λ = mask mean, so it needs a "
                             f"soft-target loss (soft_ce, bce or decoupled); got the hard-label loss {loss_fn!r}")

    def check_context(self, x: torch.Tensor, context: dict) -> None:
        extra = sorted(set(context) - {"saliency"})
        if extra:
            raise TypeError(f"puzzlemix takes only saliency=... as extra input, got {extra}")
        s = context.get("saliency")
        if s is None:
            raise ValueError("puzzlemix needs the saliency of the clean batch: call policy(x, y, saliency=s) with "
                             "s (B, H, W) = sqrt(mean_c (dL/dx)^2) (the training engine does this for "
                             "policies with needs == 'saliency')")
        if not isinstance(s, torch.Tensor):
            raise TypeError(f"saliency must be a torch.Tensor (B, H, W), got {type(s).__name__}")
        b, _, h, w = x.shape
        if tuple(s.shape) not in ((b, h, w), (b, 1, h, w)):
            raise ValueError(f"saliency must have shape (B, H, W) = {(b, h, w)} (or (B, 1, H, W)), "
                             f"got {tuple(s.shape)}")
        if not self.usable_grids(h, w):
            raise ValueError(f"puzzlemix needs H and W divisible by one of grid_sizes={list(self.grid_sizes)}, "
                             f"got H={h}, W={w}")
        if self.mean is not None and self.mean.numel() not in (1, x.shape[1]):
            raise ValueError(f"mean/std must have 1 or C={x.shape[1]} values, got {self.mean.numel()}")

    def usable_grids(self, h: int, w: int) -> list:
        return [n for n in self.grid_sizes if h % n == 0 and w % n == 0 and n <= min(h, w)]

    # -- parameters --------------------------------------------------------------------------
    def sample_params(self, shape, generator, y=None):
        params = super().sample_params(shape, generator, y)
        grids = self.usable_grids(shape[2], shape[3])
        choice = torch.randint(len(grids), (1,), generator=generator, device=generator.device)
        # the grid size travels as the shape of an empty tensor: no device sync to read it later
        n = grids[int(choice)] if len(grids) > 1 else grids[0]
        params["grid"] = torch.empty(0, n, device=generator.device)
        return params

    # -- mixing ------------------------------------------------------------------------------
    def transport_grid(self, n: int, h: int, w: int) -> int:
        bh, bw = h // n, w // n
        ts = self.t_size
        if ts == -1 or ts >= min(bh, bw) or bh % ts or bw % ts or bh // ts != bw // ts:
            return n
        return n * (bh // ts)

    def apply(self, x, params, saliency=None, **context):
        b, c, h, w = x.shape
        n = params["grid"].shape[1]
        index, lam0, mixed = params["index"], params["lam"], params["mixed"]
        work = torch.float64 if x.dtype == torch.float64 else torch.float32
        sal = saliency.reshape(b, h, w).detach().to(x.device, work).abs()
        xd = x.detach().to(work)
        pixels = xd
        if self.mean is not None:
            shape = (1, -1, 1, 1)
            pixels = xd * self.std.to(xd).view(shape) + self.mean.to(xd).view(shape)
        with torch.no_grad():
            sal_block = block_saliency(sal, n)
            dv, dh = boundary_differences(pixels, index, n, self.neigh_size)
            prior = lam0.to(work).clamp(1e-6, 1 - 1e-6)
            unary, wv, wh = labelling_costs(sal_block, sal_block[index], dv, dh, prior, self.n_labels,
                                            self.beta, self.gamma, self.eta)
            labels = solve_labelling(unary, wv, wh, iters=self.solver_iters)
            block_mask = labels.to(work) / (self.n_labels - 1)                      # (B, n, n) own weight
            block_mask = torch.where(mixed.view(b, 1, 1), block_mask, torch.ones_like(block_mask))
            mask = block_mask.repeat_interleave(h // n, 1).repeat_interleave(w // n, 2).unsqueeze(1).to(x.dtype)
            if self.transport:
                t = self.transport_grid(n, h, w)
                f = t // n
                mask_t = block_mask.repeat_interleave(f, 1).repeat_interleave(f, 2)  # (B, t, t)
                sal_t = block_saliency(sal, t) if t != n else sal_block
                src_own = transport_order(mask_t > 0, sal_t, self.t_eps)
                src_par = transport_order(mask_t < 1, sal_t[index], self.t_eps)
        if self.transport:
            out = mix_moved_blocks(x, index, src_own, src_par, mask_t.flatten(1), t)
        else:
            out = x.index_select(0, index).lerp_(x, mask)
        if self.inplace:
            out = x.copy_(out)
        lam = block_mask.flatten(1).mean(1)
        return out, mask, lam

    def extra_repr(self) -> str:
        return (f"grid_sizes={list(self.grid_sizes)}, n_labels={self.n_labels}, beta={self.beta}, "
                f"gamma={self.gamma}, eta={self.eta}, neigh_size={self.neigh_size}, transport={self.transport}, "
                f"t_eps={self.t_eps}, t_size={self.t_size}")
