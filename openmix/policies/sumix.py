"""SUMix (Qin et al., ECCV 2024): the mixing ratio corrected by how much of each source's semantics
the mixed sample keeps, plus an uncertainty regulariser with a head of its own.

Written from the authors' released code (``ClsUncertainMixupHead.IN_loss`` in JinXins/SUMix); the
formulas are in ``sumix_lambda`` and ``uncertainty_loss``.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..batch import MixedBatch
from ..checks import check_non_negative
from ..features import ClassifierInput, classifier_layer
from .base import register_policy
from .input_mixing import build_input_policy, logits_of, require_classification
from .step import StepPolicy

__all__ = ["SUMix", "semantic_distance", "sumix_lambda", "uncertainty_loss", "uncertainty_vector"]


def _unit_rows(t: torch.Tensor) -> torch.Tensor:
    return t / t.norm(dim=1, keepdim=True).clamp_min(torch.finfo(t.dtype).tiny)


def uncertainty_vector(head_logits: torch.Tensor) -> torch.Tensor:
    """(B, K) -> l2-normalised softmax of the uncertainty head's output (the authors' x_uncertain)."""
    return _unit_rows(head_logits.softmax(dim=1))


def semantic_distance(mixed_logits: torch.Tensor, source_logits: torch.Tensor, other_label: torch.Tensor,
                      scale: float) -> torch.Tensor:
    """(B, K) distance α between the mixed sample and one source, per class:
    α = scale · unit(softmax(softmax(z_mix) − s)), s = softmax(z_source) with the OTHER source's
    class set to 0. Detached inputs. other_label: (B,) long; scale: the authors use the batch size."""
    p_mix = mixed_logits.detach().softmax(dim=1)
    p_src = source_logits.detach().softmax(dim=1).scatter(1, other_label.view(-1, 1), 0.0)
    return scale * _unit_rows((p_mix - p_src).softmax(dim=1))


def sumix_lambda(lam: torch.Tensor, alpha_a: torch.Tensor, alpha_b: torch.Tensor, y_a: torch.Tensor,
                 y_b: torch.Tensor) -> torch.Tensor:
    """Corrected own weight: λ̂ = λ e^{−α_a[y_a]} / (λ e^{−α_a[y_a]} + (1 − λ) e^{−α_b[y_b]}).
    lam: (B,); alpha_a, alpha_b: (B, K) from ``semantic_distance``; y_a, y_b: (B,) long. Computed
    in log space (exp(−α) underflows for large scales); rows with λ = 1 (or 0) keep it."""
    lam = lam.to(alpha_a.dtype)
    log_a = torch.log(lam) - alpha_a.gather(1, y_a.view(-1, 1)).squeeze(1)
    log_b = torch.log1p(-lam) - alpha_b.gather(1, y_b.view(-1, 1)).squeeze(1)
    return torch.sigmoid(log_a - log_b)


def uncertainty_loss(beta_a: torch.Tensor, beta_b: torch.Tensor, alpha_a: torch.Tensor, alpha_b: torch.Tensor,
                     y_a: torch.Tensor, y_b: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """mean_i[λ_i CE(e^{−(β_a+α_a)}_i, y_a,i) + (1 − λ_i) CE(e^{−(β_b+α_b)}_i, y_b,i)], the vectors
    e^{−(β+α)} taken as logits. β_a = u(x_a) + u(x̃), β_b = u(x_b) + u(x̃) with u the uncertainty
    vectors (B, K) of a source and of the mixed sample; lam: (B,) the drawn λ."""
    lam = lam.to(beta_a.dtype)
    ce_a = F.cross_entropy(torch.exp(-(beta_a + alpha_a)), y_a, reduction="none")
    ce_b = F.cross_entropy(torch.exp(-(beta_b + alpha_b)), y_b, reduction="none")
    return (lam * ce_a + (1.0 - lam) * ce_b).mean()


@register_policy("sumix")
class SUMix(StepPolicy):
    """A mask policy's batch (CutMix by default) trained on a corrected λ̂ plus γ · uncertainty loss.

    Each step: mix with ``mask_policy``; forward the clean and the mixed batch (two passes, the
    classifier's input features read by a hook); λ̂ from the semantic distances of the mixed
    prediction to each source's (``sumix_lambda``); loss = configured loss on λ̂ + γ ·
    ``uncertainty_loss``. The uncertainty head (a Linear from the classifier's input features to
    K classes, init N(0, 0.01²)) is the policy's own, trained by SGD on its gradient of that loss
    (the classifier's features get theirs through the engine's backward).

    Args:
        alpha: Beta(α, α) of the mask policy (authors' CIFAR-100 config: CutMix α = 0.2).
        mask_policy: an input-level policy (the paper plugs SUMix into cutting-based mixups).
        gamma: weight of the uncertainty loss (authors' config: 0.5; their head's default 0.1).
        scale: the α scale; None = the batch size, as the authors' code (``* avg_factor``).
        head_lr, head_momentum, head_weight_decay: SGD of the uncertainty head (authors: the
            classifier's SGD, lr 0.1, momentum 0.9, weight decay 1e-4; here without its schedule).
        mode, p, pairing, stop_epoch, seed: passed to ``mask_policy``.
    With the default scale (the batch size) α is tens of units, so e^{−(β+α)} ≈ 0: the uncertainty
    term's gradient is ~1e-10 (measured on digits, B = 64) and λ̂ is pushed towards 0 or 1; with
    ``scale=1`` both stay active (digits, 5 epochs: 96.4% top-1, ECE 0.12, against 93.3%, ECE 0.50).
    The default follows the released code all the same.
    The authors' code multiplies the BATCH-MEAN cross-entropies by the per-row weights λ̂ and then
    averages (so only the mean of λ̂ matters); here each row's loss is weighted by its own λ̂.
    Once the model is confident, the released formula moves λ̂ towards the LESS present source (a
    row that is 95% image a, confident predictions: λ̂ ≈ 1e-4 at scale 64, 0.94 at scale 1), which is
    the likely cause of SUMix's loss on cpu-small (−2.3 and −2.9 points, 5 seeds).
    """

    needs = "step"
    spatial_dims = (1, 3)

    def __init__(self, alpha: Any = 0.2, mask_policy: str = "cutmix", gamma: float = 0.5,
                 scale: Optional[float] = None, head_lr: float = 0.1, head_momentum: float = 0.9,
                 head_weight_decay: float = 1e-4, mode: str = "batch", p: Any = 1.0, pairing: Any = "random",
                 stop_epoch: Optional[int] = None, seed: Optional[int] = None) -> None:
        super().__init__(alpha=alpha, mode=mode, p=p, pairing=pairing, stop_epoch=stop_epoch, seed=seed)
        self.mask_policy = mask_policy
        self.gamma = check_non_negative(gamma, "gamma")
        self.scale = None if scale is None else check_non_negative(scale, "scale")
        self.head_lr = check_non_negative(head_lr, "head_lr")
        self.head_momentum = check_non_negative(head_momentum, "head_momentum")
        self.head_weight_decay = check_non_negative(head_weight_decay, "head_weight_decay")
        self.inner = build_input_policy(mask_policy, "sumix", alpha=alpha, mode=mode, p=p, pairing=pairing,
                                        stop_epoch=stop_epoch)
        self.head: Optional[nn.Linear] = None

    def setup(self, ctx) -> None:
        require_classification(ctx, "sumix")
        features = classifier_layer(ctx.model).in_features
        g = torch.Generator().manual_seed(int(self.generator.initial_seed()) % (2 ** 63))
        self.head = nn.Linear(features, ctx.num_classes)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(self.head.weight.shape, generator=g) * 0.01)
            self.head.bias.zero_()
        self.head.to(ctx.device)
        self.optimizer = torch.optim.SGD(self.head.parameters(), lr=self.head_lr, momentum=self.head_momentum,
                                         weight_decay=self.head_weight_decay)
        self._grads = None

    def training_step(self, x, y, ctx):
        mb = self.inner(x, y, generator=self.generator)
        with ClassifierInput(ctx.model) as tap:
            clean_logits = logits_of(ctx, x)
            mixed_logits = logits_of(ctx, mb.x)
        clean_feat, mixed_feat = (f.float() for f in tap.all[-2:])
        y_a = y.argmax(dim=1) if y.is_floating_point() else y
        y_b = y_a[mb.index]
        scale = float(x.shape[0]) if self.scale is None else self.scale
        alpha_a = semantic_distance(mixed_logits, clean_logits, y_b, scale)
        alpha_b = semantic_distance(mixed_logits, clean_logits[mb.index], y_a, scale)
        lam_hat = sumix_lambda(mb.lam, alpha_a, alpha_b, y_a, y_b)
        corrected = MixedBatch(x=mb.x, y=mb.y, index=mb.index, lam=lam_hat.to(mb.lam.dtype), mask=mb.mask)
        u_clean, u_mixed = uncertainty_vector(self.head(clean_feat)), uncertainty_vector(self.head(mixed_feat))
        reg = uncertainty_loss(u_clean + u_mixed, u_clean[mb.index] + u_mixed, alpha_a, alpha_b, y_a, y_b, mb.lam)
        loss = ctx.loss_fn(mixed_logits, corrected) + self.gamma * reg
        params = list(self.head.parameters())
        self._grads = torch.autograd.grad(self.gamma * reg, params, retain_graph=True)
        return corrected, loss

    def after_step(self) -> None:
        # the engine's backward also reached the head (scaled under fp16 AMP): use the exact gradients
        for param, grad in zip(self.head.parameters(), self._grads or ()):
            param.grad = grad.detach()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict:
        state = super().state_dict()
        if self.head is not None:
            state.update(head=self.head.state_dict(), head_optimizer=self.optimizer.state_dict())
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if self.head is not None and "head" in state:
            self.head.load_state_dict(state["head"])
            self.optimizer.load_state_dict(state["head_optimizer"])

    def preview(self, x, y, generator=None):
        """For openmix-show: the mask batch with its area λ (the correction needs the model's
        predictions). -> (MixedBatch, note)."""
        mb = self.inner(x, y, generator=self.generator if generator is None else generator)
        return mb, "area λ shown; in training it is corrected by the model's predictions"

    def cost_model_forwards(self) -> int:
        return 2

    def extra_repr(self) -> str:
        return f"mask_policy={self.mask_policy!r}, gamma={self.gamma}, scale={self.scale}"
