"""The policy base class: validation, pairing, λ, probability, schedules, generators.

A policy follows torchvision v2's split: ``sample_params`` makes every random draw (from one
``torch.Generator``), ``apply`` is deterministic given those parameters.
"""
from __future__ import annotations

import numbers
from typing import Any, Dict, Optional, Sequence, Tuple

import torch

from ..batch import MixedBatch
from ..checks import check_choice, check_input, check_labels, check_layout, check_non_negative, check_probability
from ..pairing import build_pairing
from ..registry import Registry
from ..schedules import as_schedule

POLICIES = Registry("policy", "policies")
register_policy = POLICIES.register

MODES = ("batch", "pair", "elem")
NEEDS = ("input", "saliency", "features")
Params = Dict[str, torch.Tensor]


# below this α, torch's float32 Gamma sampler loses Beta(α, α)'s tails: values within 6e-8 of 1
# round to 1 - 6e-8 (visible to a KS test at α = 0.2) and for tiny α both Gamma draws underflow to
# 0, which the Dirichlet sampler returns as exactly 0.5 (25% of draws at α = 1e-3, all at 1e-8)
SMALL_ALPHA = 0.5


def sample_beta(alpha: float, n: int, generator: torch.Generator) -> torch.Tensor:
    """(n,) float32 draws of Beta(alpha, alpha) on ``generator.device``; all ones when alpha == 0.

    For alpha >= 0.5, torch's Dirichlet sampler (what ``torch.distributions.Beta`` uses; unlike
    the distribution API it takes a generator). Below, ``sigmoid(beta_log_odds(...))``, which
    stays exact in the tails however small alpha is: for alpha -> 0 the draws go to 0 and 1 in
    equal halves, as Beta(alpha, alpha) does.
    """
    if alpha <= 0.0:
        return torch.ones(n, device=generator.device)
    if alpha >= SMALL_ALPHA:
        concentration = torch.full((n, 2), float(alpha), device=generator.device)
        return torch._sample_dirichlet(concentration, generator=generator)[:, 0]
    return torch.sigmoid(beta_log_odds(alpha, n, generator)).float()


def beta_log_odds(alpha: float, n: int, generator: torch.Generator) -> torch.Tensor:
    """(n,) float64 ``log G1 - log G2`` with G1, G2 ~ Gamma(alpha, 1) independent: the log-odds
    ``log(λ / (1 - λ))`` of λ ~ Beta(alpha, alpha), so ``λ = sigmoid(result)``.

    For shape a < 1 the log of a Gamma(a) draw is ``log Gamma(a + 1) + log(U) / a`` with U uniform
    on (0, 1] (the Marsaglia-Tsang boost, kept in log space so it cannot underflow).
    """
    if not alpha > 0.0:
        raise ValueError(f"alpha must be > 0 for beta_log_odds, got {alpha!r}")
    device = generator.device
    boost = alpha < 1.0
    shape = torch.full((2, n), alpha + 1.0 if boost else alpha, dtype=torch.float64, device=device)
    log_gamma = torch._standard_gamma(shape, generator=generator).log_()
    if boost:
        u = torch.rand((2, n), dtype=torch.float64, generator=generator, device=device)
        log_gamma += torch.log1p(-u).div_(alpha)        # 1 - u lies in (0, 1]: the log is finite
    return log_gamma[0] - log_gamma[1]


def new_generator(seed: Optional[int], device: torch.device | str = "cpu") -> torch.Generator:
    """A generator seeded with ``seed``; with None, seeded from torch's global RNG (so that
    ``torch.manual_seed`` makes the run repeat)."""
    if seed is None:
        seed = int(torch.randint(0, 2 ** 62, (1,)).item())
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int or None, got {seed!r}")
    return torch.Generator(device=device).manual_seed(int(seed))


class MixPolicy:
    """Base of all mixing policies.

    Args:
        alpha: Beta(alpha, alpha) concentration for λ (0 disables mixing); a number, a schedule
            or a mapping ``{"schedule": ..., ...}`` (see ``openmix.schedules``).
        mode: ``"batch"`` (one λ and one set of parameters per batch), ``"pair"`` (per pair of
            partners, which swap with each other), ``"elem"`` (per sample).
        p: probability of mixing: of the whole batch in ``batch`` mode, of each row (each pair)
            otherwise. Rows left alone get λ = 1. A number or a schedule.
        pairing: ``"random"`` (default), ``"flip"`` (timm's pairs), ``"roll"`` (torchvision's),
            another registered pairing name, a mapping with ``name``, or a pairing object.
        stop_epoch: from this epoch on (see ``set_epoch``) the policy stops mixing
            (timm's ``mixup_off_epoch``).
        seed: seed of the policy's own generator, used when a call passes no generator.
        inplace: write the mixed batch into ``x`` (saves one batch of memory). To write it into
            a buffer of your own instead, call ``policy(x, y, out=buffer)``; uint8 images mix
            with ``policy.mix_uint8(x, y)``.
    """

    needs: str = "input"          # what the engine must provide: input, saliency or features
    uses_alpha: bool = True       # False where λ does not come from Beta(alpha, alpha) (ResizeMix)
    uses_mask: bool = False       # mask-based policies return MixedBatch.mask
    defers_mask: bool = False     # apply takes defer_mask=True and may return a DeferredMask
    supports_out: bool = False    # apply takes out= (a buffer for the mixed batch)
    supports_uint8: bool = False  # apply mixes uint8 images block by block (see mix_uint8)
    overwrites: bool = False      # apply takes overwrite=True: x is scratch, paste into it where exact
    spatial_dims: Tuple[int, int] = (1, 2)   # accepted numbers of spatial dims (min, max)
    modes: Sequence[str] = MODES

    def __init__(self, alpha: Any = 1.0, mode: str = "batch", p: Any = 1.0, pairing: Any = "random",
                 stop_epoch: Optional[int] = None, seed: Optional[int] = None, inplace: bool = False) -> None:
        self.mode = check_choice(mode, "mode", self.modes)
        self.alpha_schedule = as_schedule(alpha, "alpha")
        self.p_schedule = as_schedule(p, "p")
        self.pairing = build_pairing(pairing)
        if stop_epoch is not None and (isinstance(stop_epoch, bool) or not isinstance(stop_epoch, int)):
            raise TypeError(f"stop_epoch must be an int or None, got {stop_epoch!r}")
        self.stop_epoch = stop_epoch
        self.inplace = bool(inplace)
        self.generator = new_generator(seed)
        self.set_epoch(0)

    # -- epoch-dependent state ---------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Evaluates the alpha and p schedules at ``epoch`` and applies ``stop_epoch``."""
        self.epoch = int(epoch)
        self.alpha = check_non_negative(self.alpha_schedule(self.epoch), "alpha")
        self.p = check_probability(self.p_schedule(self.epoch), "p")

    @property
    def active(self) -> bool:
        return self.stop_epoch is None or self.epoch < self.stop_epoch

    def state_dict(self) -> Dict[str, Any]:
        return {"generator": self.generator.get_state(), "epoch": self.epoch}

    # pickling (spawned DataLoader workers, copies): the generator travels as its state bytes
    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        generator = state.pop("generator")
        state["generator_state"] = (str(generator.device), generator.get_state().numpy().tobytes())
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        state = dict(state)
        device, raw = state.pop("generator_state")
        state["generator"] = torch.Generator(device=device)
        state["generator"].set_state(torch.frombuffer(bytearray(raw), dtype=torch.uint8))
        self.__dict__.update(state)

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.set_epoch(state["epoch"])

    # -- parameters --------------------------------------------------------------------------
    def row_source(self, index: torch.Tensor) -> torch.Tensor:
        """(B,) which row's random draws each row uses: all row 0 in ``batch`` mode, the smaller
        of the two partners in ``pair`` mode (so partners share them), itself in ``elem`` mode."""
        rows = torch.arange(index.shape[0], device=index.device)
        if self.mode == "batch":
            return torch.zeros_like(rows)
        if self.mode == "pair":
            return torch.minimum(rows, index)
        return rows

    def sample_params(self, shape: torch.Size, generator: torch.Generator,
                      y: Optional[torch.Tensor] = None) -> Params:
        """Every random draw of one call, on ``generator.device``.

        Returns ``index`` (B,) long, ``lam`` (B,) float (1 for rows left unmixed), ``mixed`` (B,)
        bool, and ``rows`` (B,) (see ``row_source``); subclasses add their own parameters.
        """
        batch = shape[0]
        index = self.pairing(batch, generator, y=y, involution=self.mode == "pair")
        rows = self.row_source(index)
        mixed = self.by_row(torch.rand(batch, generator=generator, device=generator.device) < self.p, rows)
        lam = self.by_row(sample_beta(self.alpha, batch, generator), rows)
        if self.p < 1.0:      # with p == 1 every row mixes
            lam = torch.where(mixed, lam, torch.ones_like(lam))
        return {"index": index, "lam": lam, "mixed": mixed, "rows": rows}

    def by_row(self, draws: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """``draws[rows]``: the draw each row uses (in ``elem`` mode, each its own: no gather)."""
        return draws if self.mode == "elem" else draws[rows]

    def apply(self, x: torch.Tensor, params: Params, **context: Any) -> Tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
        """Deterministic mixing. x: (B, C, *spatial) -> (mixed x, mask (B, 1, *spatial) or None, lam (B,)).

        Policies with ``defers_mask`` also take ``defer_mask=True`` (what ``__call__`` passes):
        the mask may then come back as an ``openmix.ops.memory.DeferredMask``, made when
        ``MixedBatch.mask`` is first read.
        """
        raise NotImplementedError

    # -- call --------------------------------------------------------------------------------
    def check_context(self, x: torch.Tensor, context: Dict[str, Any]) -> None:
        if context:
            raise TypeError(f"{type(self).__name__} takes no extra inputs, got {sorted(context)}")

    def identity(self, x: torch.Tensor, y: torch.Tensor) -> MixedBatch:
        """The batch unmixed: every row its own partner, λ = 1, mask of ones."""
        batch = x.shape[0]
        mask = None
        if self.uses_mask:
            mask_dtype = x.dtype if x.is_floating_point() else torch.float32
            mask = torch.ones((1,) * x.ndim, dtype=mask_dtype, device=x.device).expand(batch, 1, *x.shape[2:])
        return MixedBatch(x=x, y=y, index=torch.arange(batch, device=x.device),
                          lam=torch.ones(batch, device=x.device, dtype=lam_dtype(x)), mask=mask)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, generator: Optional[torch.Generator] = None,
                 out: Optional[torch.Tensor] = None, **context: Any) -> MixedBatch:
        """x: (B, C, *spatial) float; y: (B,) class indices, (B, K) soft labels or float targets.

        ``out``: a tensor like x (same shape, dtype, device; not x) that receives the mixed batch
        with no batch-sized allocation (policies with ``supports_out``). The returned ``x`` is
        ``out`` whenever the batch is mixed, and x itself when it is left unmixed (p = 0,
        α = 0, after ``stop_epoch``, or a batch-level coin that says no), as without ``out``.
        Do not override: subclasses implement ``sample_params``, ``apply`` and ``check_context``.
        """
        check_input(x, "x", *self.spatial_dims)
        if self.needs == "input":
            check_layout(x)          # warns on channels-last, grayscale (B, H, W), a single (C, H, W)
        return self._mix(x, y, generator, out, context)

    def mix_uint8(self, x: torch.Tensor, y: torch.Tensor, generator: Optional[torch.Generator] = None,
                  out: Optional[torch.Tensor] = None, overwrite: bool = False) -> MixedBatch:
        """uint8 images x: (B, C, *spatial) -> a MixedBatch whose ``x`` is uint8.

        Equal to ``policy(x.float(), y, generator=g)`` with ``x`` rounded to the nearest integer
        (``MixCollate``'s uint8 rule) for the same generator. Policies with ``supports_uint8``
        blend block by block in float32, never holding a float copy of the batch; the others
        take that float path. ``mask`` and ``lam`` are float32.

        ``overwrite=True`` says x is scratch (``MixCollate`` passes it for a batch it has just
        collated): policies with ``overwrites`` whose CPU path pastes copies (CutMix, ResizeMix)
        then paste into x itself instead of a copy of it, the same values with one pass over the
        batch less, and return x; the others ignore it.
        """
        check_input(x, "x", *self.spatial_dims, floating=False)
        if x.dtype != torch.uint8:
            raise TypeError(f"x must be a uint8 tensor for mix_uint8, got dtype {x.dtype}")
        if self.supports_uint8:
            if self.needs == "input":
                check_layout(x)
            return self._mix(x, y, generator, out, {}, overwrite=overwrite)
        _check_out_like(x, out)
        mb = self(x.float(), y, generator=generator)
        mixed = mb.x.round_().clamp_(0, 255)
        mb.x = out.copy_(mixed) if out is not None else mixed.to(torch.uint8)
        return mb

    def _mix(self, x: torch.Tensor, y: torch.Tensor, generator: Optional[torch.Generator],
             out: Optional[torch.Tensor], context: Dict[str, Any], overwrite: bool = False) -> MixedBatch:
        check_labels(y, x.shape[0], "y")
        self.check_context(x, context)
        self.check_out(x, out)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        generator = self.generator if generator is None else generator
        if not self.active or (self.uses_alpha and self.alpha == 0.0) or self.p == 0.0:
            return self.identity(x, y)
        params = self.sample_params(x.shape, generator, y)
        # a batch-level coin that says "no" skips the work; only checked where it costs no sync
        if self.mode == "batch" and params["mixed"].device.type == "cpu" and not bool(params["mixed"][0]):
            return self.identity(x, y)
        if params["index"].device != x.device:
            params = {k: v.to(x.device, non_blocking=True) for k, v in params.items()}
        if out is not None:
            context = dict(context, out=out)
        if self.defers_mask:
            context = dict(context, defer_mask=True)
        if overwrite and self.overwrites and out is None:
            context = dict(context, overwrite=True)
        mixed_x, mask, lam = self.apply(x, params, **context)
        return MixedBatch(x=mixed_x, y=y, index=params["index"], lam=lam.to(lam_dtype(x)), mask=mask)

    def check_out(self, x: torch.Tensor, out: Optional[torch.Tensor]) -> None:
        """out: None, or a tensor of x's shape, dtype and device that does not overlap x."""
        if out is None:
            return
        if not self.supports_out:
            raise TypeError(f"{type(self).__name__} does not take out=; call it without out")
        if self.inplace:
            raise ValueError("out must be None for a policy built with inplace=True (it writes into x)")
        _check_out_like(x, out)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        extra = self.extra_repr()
        alpha = f"alpha={self.alpha}, " if self.uses_alpha else ""
        return (f"{type(self).__name__}({alpha}mode={self.mode!r}, p={self.p}, "
                f"pairing={self.pairing!r}{', ' + extra if extra else ''})")


def _check_out_like(x: torch.Tensor, out: Optional[torch.Tensor]) -> None:
    if out is None:
        return
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"out must be a torch.Tensor like x or None, got {type(out).__name__}")
    if out.shape != x.shape or out.dtype != x.dtype or out.device != x.device:
        raise ValueError(f"out must match x's shape {tuple(x.shape)}, dtype {x.dtype} and device {x.device}, "
                         f"got shape {tuple(out.shape)}, dtype {out.dtype}, device {out.device}")
    if _overlaps(out, x):
        raise ValueError("out must not share memory with x; to mix x itself, build the policy with inplace=True")


def _overlaps(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether the memory spans of two tensors intersect (conservative for strided views)."""
    if a.numel() == 0 or b.numel() == 0 or a.device != b.device:
        return False
    def span(t):
        start = t.data_ptr()
        extent = sum((size - 1) * abs(stride) for size, stride in zip(t.shape, t.stride())) + 1
        return start, start + extent * t.element_size()
    (a0, a1), (b0, b1) = span(a), span(b)
    return a0 < b1 and b0 < a1


def lam_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def build_policy(name: str, **kwargs: Any) -> MixPolicy:
    """A registered policy by name, e.g. ``build_policy("cutmix", alpha=1.0, mode="elem")``."""
    return POLICIES.build(name, **kwargs)


def list_policies() -> list:
    return POLICIES.names()
