"""Feature-level access to a model: its stages, their layouts, mixing inside the forward.

Shared by every policy that works on hidden states (ManifoldMix, AlignMix, and the attention-
based ones). ``split_model`` returns ``stages`` (callables; each maps a hidden state to the next)
and a ``head`` such that ``model(x) == head(stages[-1](...stages[0](x)))``, plus the ``layouts``
of the stage outputs: channels-first (B, C_i, *spatial_i) for CNNs, tokens (B, N, C) with
``num_prefix_tokens`` class/register tokens for vision transformers. ``MixNet`` runs a split
model with a mixing function applied after one stage.

Models are recognised by their attributes (timm's conventions), so this module needs torch only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FeatureLayout", "CHANNELS_FIRST", "resolve_layout", "ModelSplit", "split_model", "MixNet",
           "LastBlockAttention", "last_block_attention", "patch_grid", "classifier_layer", "ClassifierInput"]

LAYOUT_KINDS = ("channels_first", "tokens")


@dataclass(frozen=True)
class FeatureLayout:
    """How one stage's output (the hidden state a feature-level policy mixes) is laid out.

    kind: ``"channels_first"``: (B, C, *spatial), e.g. CNN feature maps (num_prefix_tokens 0);
        ``"tokens"``: (B, N, C), e.g. vision-transformer tokens, of which the first
        ``num_prefix_tokens`` (class / register / distillation tokens) are not patches.
    """

    kind: str = "channels_first"
    num_prefix_tokens: int = 0

    def __post_init__(self) -> None:
        if self.kind not in LAYOUT_KINDS:
            raise ValueError(f"FeatureLayout kind must be one of {list(LAYOUT_KINDS)}, got {self.kind!r}")
        n = self.num_prefix_tokens
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"FeatureLayout num_prefix_tokens must be an int >= 0, got {n!r}")
        if self.kind == "channels_first" and n != 0:
            raise ValueError(f"FeatureLayout num_prefix_tokens applies to kind='tokens' only; got "
                             f"num_prefix_tokens={n} with kind='channels_first' (accepted there: 0)")

    @classmethod
    def tokens(cls, num_prefix_tokens: int = 0) -> "FeatureLayout":
        """Tokens (B, N, C) whose first ``num_prefix_tokens`` are prefix (e.g. class) tokens."""
        return cls("tokens", num_prefix_tokens)

    @property
    def is_tokens(self) -> bool:
        return self.kind == "tokens"

    def check(self, h: torch.Tensor, name: str = "h") -> None:
        """Raise ValueError when ``h`` does not fit a token layout (3-D, fewer prefix tokens than N)."""
        if not isinstance(h, torch.Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(h).__name__}")
        if self.kind == "channels_first":      # (B, C, *spatial): each policy checks what it needs
            return
        if h.ndim != 3:
            raise ValueError(f"{name} must have shape (B, N, C) (3 dims) for layout={self}, got shape "
                             f"{tuple(h.shape)} ({h.ndim} dims); accepted: token features (B, N, C), or "
                             f"layout=FeatureLayout('channels_first') for (B, C, *spatial) feature maps")
        if self.num_prefix_tokens >= h.shape[1]:
            raise ValueError(f"layout.num_prefix_tokens={self.num_prefix_tokens} must be smaller than the token "
                             f"count N={h.shape[1]} of {name} with shape {tuple(h.shape)}; accepted: "
                             f"0 <= num_prefix_tokens < N (at least one patch token)")

    def __str__(self) -> str:
        if self.kind == "tokens":
            return f"FeatureLayout.tokens(num_prefix_tokens={self.num_prefix_tokens})"
        return "FeatureLayout('channels_first')"


CHANNELS_FIRST = FeatureLayout()


def resolve_layout(layout: Optional[FeatureLayout]) -> FeatureLayout:
    """``None`` -> channels-first; a FeatureLayout as given; anything else: TypeError."""
    if layout is None:
        return CHANNELS_FIRST
    if not isinstance(layout, FeatureLayout):
        raise TypeError(f"layout must be a FeatureLayout (channels-first or FeatureLayout.tokens(p)) or None "
                        f"(channels-first), got {type(layout).__name__}: {layout!r}")
    return layout


@dataclass
class ModelSplit:
    """``model(x) == head(stages[-1](...stages[0](x)))``.

    layouts[i]: how the output of stages[i] is laid out (a ``FeatureLayout``): channels-first
    (B, C_i, *spatial_i), the default for every stage when not given, or
    ``FeatureLayout.tokens(p)`` for (B, N, C) tokens of which the first p are prefix tokens."""
    stages: list[Callable[[torch.Tensor], torch.Tensor]]
    head: Callable[[torch.Tensor], torch.Tensor]
    description: str
    layouts: Optional[list[FeatureLayout]] = field(default=None)

    def __post_init__(self) -> None:
        if self.layouts is None:
            self.layouts = [CHANNELS_FIRST] * len(self.stages)
        self.layouts = list(self.layouts)
        if len(self.layouts) != len(self.stages) or not all(isinstance(l, FeatureLayout) for l in self.layouts):
            raise ValueError(f"ModelSplit layouts must be one FeatureLayout per stage ({len(self.stages)} stages), "
                             f"got {self.layouts!r}")


def _is_vit(model: nn.Module) -> bool:
    """timm VisionTransformer-like: patch_embed -> _pos_embed -> [patch_drop, norm_pre] -> blocks
    (an nn.Sequential) -> norm is forward_features, then forward_head."""
    return (isinstance(getattr(model, "patch_embed", None), nn.Module)
            and isinstance(getattr(model, "blocks", None), nn.Sequential) and len(model.blocks) > 0
            and callable(getattr(model, "_pos_embed", None))
            and isinstance(getattr(model, "norm", None), nn.Module)
            and callable(getattr(model, "forward_head", None))
            and isinstance(getattr(model, "num_prefix_tokens", None), int)
            and not isinstance(model.num_prefix_tokens, bool))


def _split_vit(model: nn.Module, groups: int = 4) -> ModelSplit:
    """Stage 1: patch embedding + position embedding (+ patch_drop, norm_pre) + the first group of
    blocks; then the blocks in ``groups`` near-equal groups (fewer when there are fewer blocks),
    the final ``norm`` in the last stage; head = ``forward_head``. Every stage outputs tokens
    (B, N, C) with ``model.num_prefix_tokens`` prefix tokens."""
    depth = len(model.blocks)
    n = min(groups, depth)
    base, extra = divmod(depth, n)
    bounds = [0]
    for i in range(n):
        bounds.append(bounds[-1] + base + (1 if i < extra else 0))

    def embed(x, m=model):
        x = m._pos_embed(m.patch_embed(x))
        if isinstance(getattr(m, "patch_drop", None), nn.Module):
            x = m.patch_drop(x)
        if isinstance(getattr(m, "norm_pre", None), nn.Module):
            x = m.norm_pre(x)
        return x

    def make_stage(lo: int, hi: int, first: bool, last: bool):
        def stage(x, m=model):
            if first:
                x = embed(x)
            for i in range(lo, hi):
                x = m.blocks[i](x)
            return m.norm(x) if last else x
        return stage

    stages = [make_stage(bounds[i], bounds[i + 1], i == 0, i == n - 1) for i in range(n)]
    names = [f"blocks[{bounds[i]}:{bounds[i + 1]}]" for i in range(n)]
    names[0] = "patch_embed+pos_embed+" + names[0]
    names[-1] += "+norm"
    layout = FeatureLayout.tokens(int(model.num_prefix_tokens))
    return ModelSplit(stages, model.forward_head, ", ".join(names) + " + forward_head (tokens)",
                      [layout] * n)


def split_model(model: nn.Module) -> ModelSplit | None:
    """Split a model into stages and a head, or None when the model cannot be split."""
    if getattr(model, "output_fmt", None) == "NHWC":
        # channels-last feature maps (timm's Swin, MambaOut, ...): no layout describes them yet, and
        # reading them as channels-first would mix the wrong axes, so feature mixing is refused
        return None
    if isinstance(getattr(model, "stages", None), nn.ModuleList) and isinstance(getattr(model, "head", None), nn.Module):
        return ModelSplit(list(model.stages), model.head, f"{len(model.stages)} stages + head")
    if all(hasattr(model, a) for a in ("conv1", "bn1", "act1", "maxpool", "layer1", "layer2", "layer3", "layer4",
                                       "forward_head")):
        def stem_layer1(x, m=model):
            return m.layer1(m.maxpool(m.act1(m.bn1(m.conv1(x)))))
        return ModelSplit([stem_layer1, model.layer2, model.layer3, model.layer4], model.forward_head,
                          "stem+layer1, layer2, layer3, layer4 + forward_head")
    if _is_vit(model):
        return _split_vit(model)
    if callable(getattr(model, "forward_features", None)) and callable(getattr(model, "forward_head", None)):
        # transformers with prefix tokens (timm sets num_prefix_tokens) output tokens (B, N, C)
        p = getattr(model, "num_prefix_tokens", None)
        tokens = isinstance(p, int) and not isinstance(p, bool) and p >= 0
        return ModelSplit([model.forward_features], model.forward_head,
                          "forward_features + forward_head" + (" (tokens)" if tokens else ""),
                          [FeatureLayout.tokens(p) if tokens else CHANNELS_FIRST])
    return None


class MixNet(nn.Module):
    """The module the engine trains (and DDP wraps): ``model`` plus an optional mixing hook.

    forward(x) -> model(x); forward(x, stage=k, mix=fn) runs the split model and replaces the
    output h of stages[k-1] by fn(h) (k >= 1). Going through this one forward keeps DDP's
    gradient hooks intact for feature-level policies."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self._split = split_model(model)

    @property
    def split(self) -> ModelSplit | None:
        return self._split

    def forward(self, x: torch.Tensor, stage: int | None = None,
                mix: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        if mix is None or stage is None or stage == 0:
            return self.model(x)
        if self._split is None:
            raise ValueError(f"{type(self.model).__name__} cannot be split into stages for feature mixing")
        h = x
        for i, stage_fn in enumerate(self._split.stages, start=1):
            h = stage_fn(h)
            if i == stage:
                h = mix(h)
        return self._split.head(h)


# ---- reading inside the forward: attention of the last block, input of the classifier ----------------------------
ATTENTION_QUERIES = ("cls", "patches")


def _last_attention_module(model: nn.Module) -> nn.Module:
    """``model.blocks[-1].attn`` of a timm ViT-like model, checked to be a multi-head self-attention
    with a fused ``qkv`` Linear (timm's ``Attention``), or a ValueError naming what is missing."""
    blocks = getattr(model, "blocks", None)
    attn = getattr(blocks[-1], "attn", None) if isinstance(blocks, (nn.Sequential, nn.ModuleList)) and len(blocks) else None
    qkv = getattr(attn, "qkv", None)
    if not isinstance(qkv, nn.Linear) or not isinstance(getattr(attn, "num_heads", None), int):
        raise ValueError(f"reading the last block's attention needs a timm vision transformer (model.blocks[-1].attn "
                         f"with a fused qkv Linear and num_heads), got {type(model).__name__}; accepted: e.g. "
                         f"vit_tiny_patch16_224, deit_small_patch16_224")
    return attn


def patch_grid(model: nn.Module) -> tuple[int, int]:
    """(h, w) of a ViT's patch grid (``model.patch_embed.grid_size``), or a ValueError."""
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
    if grid is None or len(grid) != 2:
        raise ValueError(f"{type(model).__name__} has no patch grid (model.patch_embed.grid_size); accepted: timm "
                         f"vision transformers with a patch embedding")
    return int(grid[0]), int(grid[1])


class LastBlockAttention:
    """Reads the self-attention of a timm ViT's last block during a forward pass.

    A forward hook on ``model.blocks[-1].attn`` takes the module's input h (B, N, C) and
    recomputes softmax(q kᵀ · scale) from the module's own ``qkv`` weights (and q/k norms): timm's
    fused attention never materialises the matrix. Detached, in float32. After each forward
    ``self.attention`` holds (B, N - p) attention on the patch tokens (p = ``num_prefix_tokens``),
    averaged over heads, softmax taken over all N tokens:

    - ``query="cls"``: the class token's row (TransMix); a model without a class token is refused.
    - ``query="patches"``: the rows of the patch tokens, averaged over those queries (SMMix).

    >>> with LastBlockAttention(vit, "cls") as tap:
    ...     logits = vit(x)
    >>> tap.attention.shape          # (B, num_patches)
    """

    def __init__(self, model: nn.Module, query: str = "cls"):
        if query not in ATTENTION_QUERIES:
            raise ValueError(f"query must be one of {list(ATTENTION_QUERIES)}, got {query!r}")
        self.module = _last_attention_module(model)
        self.prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
        if query == "cls" and (getattr(model, "cls_token", None) is None or self.prefix < 1):
            raise ValueError(f"the class token's attention was asked for, but {type(model).__name__} has no class "
                             f"token (cls_token={getattr(model, 'cls_token', None)!r}, num_prefix_tokens="
                             f"{self.prefix}); accepted: ViTs built with class_token=True (timm's default for "
                             f"vit_* / deit_*)")
        self.query = query
        self.attention: Optional[torch.Tensor] = None
        self._handle = None

    @torch.no_grad()
    def _hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        h = args[0].float()
        b, n, _ = h.shape
        heads, dim = module.num_heads, module.qkv.out_features // 3 // module.num_heads
        weight, bias = module.qkv.weight.float(), None if module.qkv.bias is None else module.qkv.bias.float()
        rows = slice(0, 1) if self.query == "cls" else slice(self.prefix, n)
        q = F.linear(h[:, rows], weight[: heads * dim], None if bias is None else bias[: heads * dim])
        k = F.linear(h, weight[heads * dim: 2 * heads * dim], None if bias is None else bias[heads * dim: 2 * heads * dim])
        q = q.view(b, -1, heads, dim).transpose(1, 2)                    # (B, H, n_q, D)
        k = k.view(b, n, heads, dim).transpose(1, 2)                     # (B, H, N, D)
        q, k = _apply_norm(getattr(module, "q_norm", None), q), _apply_norm(getattr(module, "k_norm", None), k)
        scale = float(getattr(module, "scale", dim ** -0.5))
        weights = torch.softmax((q @ k.transpose(-2, -1)) * scale, dim=-1)          # (B, H, n_q, N)
        self.attention = weights.mean(dim=(1, 2))[:, self.prefix:]                  # (B, N - p)

    def __enter__(self) -> "LastBlockAttention":
        self._handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


def _apply_norm(norm: Optional[nn.Module], t: torch.Tensor) -> torch.Tensor:
    """timm's optional per-head q/k norm (Identity by default), run in its parameters' dtype."""
    if not isinstance(norm, nn.Module) or isinstance(norm, nn.Identity):
        return t
    param = next(norm.parameters(), None)
    return norm(t if param is None else t.to(param.dtype)).float()


def last_block_attention(model: nn.Module, query: str = "cls") -> LastBlockAttention:
    """A ``LastBlockAttention`` reader for ``model`` (use it as a context manager)."""
    return LastBlockAttention(model, query)


def classifier_layer(model: nn.Module) -> nn.Linear:
    """The final Linear layer: ``model.get_classifier()`` for timm models, else the last nn.Linear."""
    getter = getattr(model, "get_classifier", None)
    layer = getter() if callable(getter) else None
    if not isinstance(layer, nn.Linear):
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        layer = linears[-1] if linears else None
    if layer is None:
        raise ValueError(f"{type(model).__name__} has no Linear classifier layer to read pre-logit features from; "
                         f"accepted: models ending in nn.Linear (timm models, small_cnn, conv1d, mlp)")
    return layer


class ClassifierInput:
    """Captures the input of the classifier layer (the pre-logit features, (B, F), with their
    graph) in every forward while the context is open: ``with ClassifierInput(model) as tap:
    logits = model(x); tap.features``. ``tap.all`` keeps one entry per forward, in order."""

    def __init__(self, model: nn.Module):
        self.layer = classifier_layer(model)
        self.all: list[torch.Tensor] = []
        self._handle = None

    @property
    def features(self) -> torch.Tensor:
        return self.all[-1]

    def _hook(self, module: nn.Module, args: tuple) -> None:
        self.all.append(args[0])

    def __enter__(self) -> "ClassifierInput":
        self.all = []
        self._handle = self.layer.register_forward_pre_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
