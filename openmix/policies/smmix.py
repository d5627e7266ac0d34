"""SMMix (Chen et al., ICCV 2023): self-motivated image mixing for vision transformers.

Written from the paper's released code (ChenMnZ/SMMix: ``smmix.py``, ``engine.py``, ``deit.py``).
The model being trained motivates the mix: its own attention picks the regions, its own clean
predictions give the consistency target.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..batch import MixedBatch
from ..checks import check_probability, check_range
from ..features import last_block_attention, patch_grid
from ..ops import blend_with_partner
from .base import lam_dtype, register_policy, sample_beta
from .input_mixing import logits_of, require_classification, unmixed
from .step import StepPolicy

__all__ = ["SMMix", "attention_windows", "paste_windows", "swap_windows"]


def attention_windows(attention: torch.Tensor, grid: tuple, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """attention: (B, h·w) per patch -> (least, most): (B, side²) token indices (row-major) of each
    row's side x side window with the smallest and the largest attention sum (first on ties)."""
    h, w = grid
    sums = F.avg_pool2d(attention.view(-1, 1, h, w), side, stride=1).flatten(1)     # (B, windows)
    cols = w - side + 1

    def tokens(window: torch.Tensor) -> torch.Tensor:
        r0, c0 = torch.div(window, cols, rounding_mode="floor"), window % cols
        i = torch.arange(side, device=attention.device)
        rows = (r0.view(-1, 1, 1) + i.view(1, -1, 1)) * w
        return (rows + c0.view(-1, 1, 1) + i.view(1, 1, -1)).flatten(1)
    return tokens(sums.argmin(dim=1)), tokens(sums.argmax(dim=1))


def paste_windows(x: torch.Tensor, index: torch.Tensor, target: torch.Tensor, source: torch.Tensor,
                  patch: tuple) -> torch.Tensor:
    """x: (B, C, H, W) cut into patches of size ``patch``; the k-th patch of ``source`` (B, n) of
    x[index] goes to the k-th position of ``target`` (B, n) of each row (token indices, row-major)."""
    b, c, height, width = x.shape
    patches = F.unfold(x, patch, stride=patch).transpose(1, 2)                     # (B, P, C·ph·pw)
    d = patches.shape[2]
    moved = patches[index].gather(1, source.unsqueeze(2).expand(-1, -1, d))
    out = patches.scatter(1, target.unsqueeze(2).expand(-1, -1, d), moved)
    return F.fold(out.transpose(1, 2), (height, width), patch, stride=patch)


def swap_windows(x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, attention: torch.Tensor, grid: tuple,
                 side: int, patch: tuple) -> tuple[MixedBatch, torch.Tensor]:
    """Each row's least attended side x side window replaced by its partner's most attended one.
    x: (B, C, H, W); attention: (B, h·w) per patch. -> (MixedBatch with the pixel mask of the own
    patches and λ = 1 − side²/(h·w), pasted: (B, h·w) bool, True where the partner's patch sits)."""
    b = x.shape[0]
    least, most = attention_windows(attention, grid, side)
    mixed = paste_windows(x, index, least, most[index], patch)
    pasted = torch.zeros(b, grid[0] * grid[1], dtype=torch.bool, device=x.device).scatter_(1, least, True)
    own = (~pasted).to(x.dtype).view(b, 1, *grid)
    mask = own.repeat_interleave(patch[0], dim=2).repeat_interleave(patch[1], dim=3)
    lam = torch.full((b,), 1.0 - side * side / pasted.shape[1], dtype=lam_dtype(x), device=x.device)
    return MixedBatch(x=mixed, y=y, index=index, lam=lam, mask=mask), pasted


@register_policy("smmix")
class SMMix(StepPolicy):
    """Per batch, with probability ``switch_prob``: SMMix, else mixup (Beta(α, α)).

    SMMix step: (1) the model, in eval mode and without gradients, predicts the clean batch while
    its last block's attention is read (patch queries' attention to each patch, mean over heads and
    queries); (2) a square window side s is drawn uniformly from int(r_min·S)..int(r_max·S) patches
    (S the grid side; ``side_range`` = (r_min, r_max)); each row's LEAST attended s x s window is
    replaced by its partner's MOST attended one, patch by patch; λ = 1 − s²/P; (3) the training
    forward gives the class-token logits and the final tokens; the tokens of the row's own region
    and of the pasted region are averaged and classified (fine-grained labels: the row's label and
    the partner's); (4) loss = loss(logits, λ) + ½ (loss(own region) + loss(pasted region)) +
    KL(softmax(λ z + (1 − λ) z[index]) ‖ softmax(logits)) with z the clean logits of (1).
    The region tokens go through the model's own ``fc_norm`` and ``head``: the authors train a
    second ``token_head`` and note that sharing the head or not "does not affect performance".
    The mixup branch uses the first term only. Needs a timm ViT (patch grid, last-block attention,
    a Linear ``head``); grids that are not square use S = the shorter side.

    Args:
        alpha: Beta(α, α) of the mixup branch (authors: 0.8, DeiT's mixup).
        switch_prob: probability of SMMix per batch (authors: 0.5).
        side_range: (r_min, r_max) of the window side as a fraction of the grid side (0.25, 0.75).
        p: probability of mixing the batch at all (authors: 1.0). pairing, stop_epoch, seed: as usual.
    """

    needs = "step"
    spatial_dims = (2, 2)
    modes = ("batch",)

    def __init__(self, alpha: Any = 0.8, switch_prob: float = 0.5, side_range: Any = (0.25, 0.75),
                 mode: str = "batch", p: Any = 1.0, pairing: Any = "random", stop_epoch: Optional[int] = None,
                 seed: Optional[int] = None) -> None:
        super().__init__(alpha=alpha, mode=mode, p=p, pairing=pairing, stop_epoch=stop_epoch, seed=seed)
        self.switch_prob = check_probability(switch_prob, "switch_prob")
        self.side_range = check_range(side_range, "side_range", 0.0, 1.0)

    def setup(self, ctx) -> None:
        require_classification(ctx, "smmix")
        model, split = ctx.model, ctx.net.split
        self.grid = patch_grid(model)
        last_block_attention(model, "patches")               # refuses models whose attention cannot be read
        if split is None or not split.layouts[-1].is_tokens or not isinstance(getattr(model, "head", None), nn.Linear):
            raise ValueError(f"smmix needs a timm vision transformer (tokens out of its last stage and a Linear "
                             f"head), got {type(model).__name__}")
        self.patch = tuple(int(v) for v in model.patch_embed.patch_size)
        self.prefix = int(model.num_prefix_tokens)
        self._model = model
        short = min(self.grid)
        self.sides = list(range(max(1, int(short * self.side_range[0])), max(1, int(short * self.side_range[1])) + 1))

    def training_step(self, x, y, ctx):
        g = self.generator
        b = x.shape[0]
        coins = torch.rand(2, generator=g, device=g.device)
        index = self.pairing(b, g, y=y).to(x.device)
        use_smmix = float(coins[1]) < self.switch_prob
        if not self.active or float(coins[0]) >= self.p or (not use_smmix and self.alpha == 0.0):
            batch = unmixed(x, y)
            return batch, ctx.loss_fn(logits_of(ctx, x), batch)
        side = self.sides[int(torch.randint(len(self.sides), (1,), generator=g, device=g.device))]
        lam = sample_beta(self.alpha, 1, g).to(x.device)
        if not use_smmix:                                                       # the mixup branch
            mixed = blend_with_partner(x, index, lam.view(1, 1, 1, 1).to(x.dtype))
            mb = MixedBatch(x=mixed, y=y, index=index, lam=lam.expand(b).to(lam_dtype(x)))
            return mb, ctx.loss_fn(logits_of(ctx, mixed), mb)
        return self._smmix_step(x, y, index, side, ctx)

    def _smmix_step(self, x, y, index, side, ctx):
        model = ctx.model
        with torch.no_grad(), last_block_attention(model, "patches") as tap:
            was_training = model.training
            model.eval()
            try:
                with ctx.autocast():
                    clean_logits = model(x).float()
            finally:
                model.train(was_training)
        mb, pasted = swap_windows(x, y, index, tap.attention, self.grid, side, self.patch)
        mixed, lam_value = mb.x, 1.0 - side * side / pasted.shape[1]
        captured = {}

        def keep_tokens(h):
            captured["tokens"] = h
            return h
        logits = logits_of(ctx, mixed, stage=len(ctx.net.split.stages), mix=keep_tokens)
        tokens = captured["tokens"][:, self.prefix:].float()                       # (B, P, C)
        region_logits = [self._classify(tokens, weights) for weights in (~pasted, pasted)]
        fine = 0.5 * (ctx.loss_fn(region_logits[0], unmixed(mixed, y))
                      + ctx.loss_fn(region_logits[1], unmixed(mixed, y[index])))
        target = torch.softmax(lam_value * clean_logits + (1.0 - lam_value) * clean_logits[index], dim=1)
        consistency = F.kl_div(F.log_softmax(logits, dim=1), target, reduction="batchmean")
        return mb, ctx.loss_fn(logits, mb) + fine + consistency

    def _classify(self, tokens: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        """tokens (B, P, C), region (B, P) bool -> (B, K): the model's head on the region's mean token."""
        model = self._model
        weights = region.to(tokens.dtype).unsqueeze(2)
        pooled = (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)
        norm = getattr(model, "fc_norm", None)
        pooled = norm(pooled) if isinstance(norm, nn.Module) else pooled
        return model.head(pooled).float()

    def preview(self, x, y, generator=None):
        """For openmix-show: the SMMix branch with patch brightness of the clean images standing in
        for the ViT's attention, on an 8x8 patch grid, window side drawn as in training.
        -> (MixedBatch, note)."""
        from .input_mixing import brightness_per_patch, preview_grid
        g = self.generator if generator is None else generator
        grid = preview_grid(*x.shape[2:])
        patch = (x.shape[2] // grid[0], x.shape[3] // grid[1])
        lo, hi = max(1, int(grid[0] * self.side_range[0])), max(1, int(grid[0] * self.side_range[1]))
        side = int(torch.randint(lo, hi + 1, (1,), generator=g, device=g.device))
        index = self.pairing(x.shape[0], g, y=y).to(x.device)
        mb, _ = swap_windows(x, y, index, brightness_per_patch(x, grid), grid, side, patch)
        return mb, "brightest window of the partner onto the darkest one (stand-in for the ViT's attention)"

    def cost_model_forwards(self) -> int:
        return 2

    def extra_repr(self) -> str:
        return f"switch_prob={self.switch_prob}, side_range={self.side_range}"
