"""TransMix (Chen et al., CVPR 2022): the label weights of a CutMix (or other mask) batch re-weighted
by the class token's attention over the patches, read from the last block of the ViT being trained
on the mixed input itself (no extra forward pass)."""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F

from ..batch import MixedBatch
from ..checks import check_probability
from ..features import last_block_attention, patch_grid
from .base import register_policy
from .input_mixing import build_input_policy, logits_of, require_classification
from .step import StepPolicy

__all__ = ["TransMix", "patch_share", "transmix_lambda"]


def patch_share(mask: torch.Tensor, grid: tuple) -> torch.Tensor:
    """mask: (B, 1, H, W) weight of the row's own image per pixel -> (B, h·w): the share of each
    patch (row-major, as ViT tokens) taken from the partner, 1 − mean of the mask over the patch.

    For boxes on the patch grid this equals the authors' nearest-neighbour sampling of the mask;
    for other boxes it counts the pixels instead of one sample per patch."""
    if mask.ndim != 4 or mask.shape[1] != 1:
        raise ValueError(f"mask must have shape (B, 1, H, W), got {tuple(mask.shape)}")
    h, w = grid
    if mask.shape[2] % h or mask.shape[3] % w:
        raise ValueError(f"the image {tuple(mask.shape[2:])} must be cut into whole patches of the {h}x{w} grid "
                         f"(image side a multiple of the grid side), got image {tuple(mask.shape[2:])}, grid {grid}")
    return (1.0 - F.adaptive_avg_pool2d(mask.float(), (h, w))).flatten(1)


def transmix_lambda(area_lam: torch.Tensor, attention: torch.Tensor, source_share: torch.Tensor,
                    attention_weight: float = 0.5) -> torch.Tensor:
    """The own-label weight of TransMix. area_lam: (B,) own share of the pixels; attention: (B, P)
    class-token attention on the P patches; source_share: (B, P) partner's share of each patch.

    λ_src = w · Σ_p A_p S_p / Σ_p A_p + (1 − w) · (1 − area_lam); returns 1 − λ_src.
    w = 1 is the paper's λ = A·M↓; w = 0.5 (the default) is the authors' released code, which
    averages the attention weight with the area weight."""
    total = attention.sum(dim=1).clamp_min(torch.finfo(attention.dtype).tiny)
    attention_src = (attention * source_share).sum(dim=1) / total
    area_src = 1.0 - area_lam.to(attention.dtype)
    return 1.0 - (attention_weight * attention_src + (1.0 - attention_weight) * area_src)


@register_policy("transmix")
class TransMix(StepPolicy):
    """Mask mixing (``mask_policy``, CutMix by default) whose label weights come from attention.

    Each step: mix the batch with ``mask_policy``; run the ViT on the mixed batch while a hook on
    ``blocks[-1].attn`` recomputes the class token's attention (softmax over all tokens, mean over
    heads, detached; ``openmix.features.LastBlockAttention``); turn the mask into each patch's
    partner share; then λ = ``transmix_lambda`` and the loss is the configured loss on that λ.
    One forward pass, as in the paper. Needs a timm ViT with a class token whose image side is a
    multiple of its patch grid; other models are refused with an error at the first step.

    Args:
        alpha: Beta(α, α) of the mask policy (CutMix α = 1.0 in the authors' DeiT recipe).
        mask_policy: a registered input-level policy with a mask.
        attention_weight: w above (0.5: the authors' code; 1.0: the paper's formula).
        mode, p, pairing, stop_epoch, seed: as for every policy, passed to ``mask_policy``.
    The DeiT recipe also switches to plain mixup for 20% of the batches; combine that yourself (e.g.
    alternate runs) — TransMix applies to mask batches only.
    """

    needs = "step"
    spatial_dims = (2, 2)

    def __init__(self, alpha: Any = 1.0, mask_policy: str = "cutmix", attention_weight: float = 0.5,
                 mode: str = "batch", p: Any = 1.0, pairing: Any = "random", stop_epoch: Optional[int] = None,
                 seed: Optional[int] = None) -> None:
        super().__init__(alpha=alpha, mode=mode, p=p, pairing=pairing, stop_epoch=stop_epoch, seed=seed)
        self.mask_policy = mask_policy
        self.attention_weight = check_probability(attention_weight, "attention_weight")
        self.inner = build_input_policy(mask_policy, "transmix", needs_mask=True, alpha=alpha, mode=mode, p=p,
                                        pairing=pairing, stop_epoch=stop_epoch)

    def setup(self, ctx) -> None:
        require_classification(ctx, "transmix")
        self.grid = patch_grid(ctx.model)
        last_block_attention(ctx.model, "cls")          # refuses models without a class token now

    def training_step(self, x, y, ctx):
        mb = self.inner(x, y, generator=self.generator)
        with last_block_attention(ctx.model, "cls") as tap:
            logits = logits_of(ctx, mb.x)
        if mb.mask is not None and tap.attention is not None:
            share = patch_share(mb.mask, self.grid)
            lam = transmix_lambda(mb.lam, tap.attention, share, self.attention_weight)
            mb = MixedBatch(x=mb.x, y=mb.y, index=mb.index, lam=lam.to(mb.lam.dtype), mask=mb.mask)
        return mb, ctx.loss_fn(logits, mb)

    def preview(self, x, y, generator=None):
        """For openmix-show: the mask batch, λ from a stand-in attention (patch brightness of the mixed
        image on an 8x8 grid) instead of the ViT's. -> (MixedBatch, note)."""
        from .input_mixing import brightness_per_patch, preview_grid
        mb = self.inner(x, y, generator=self.generator if generator is None else generator)
        grid = preview_grid(*x.shape[2:])
        lam = transmix_lambda(mb.lam, brightness_per_patch(mb.x, grid), patch_share(mb.mask, grid),
                              self.attention_weight)
        note = "λ re-weighted by a stand-in attention (patch brightness); in training: the ViT's class token"
        return MixedBatch(x=mb.x, y=y, index=mb.index, lam=lam.to(mb.lam.dtype), mask=mb.mask), note

    def cost_model_forwards(self) -> int:
        return 1

    def extra_repr(self) -> str:
        return f"mask_policy={self.mask_policy!r}, attention_weight={self.attention_weight}"
