"""``openmix-show``: a grid of mixed samples per policy, to see what a policy does.

    openmix-show                                     # every registered policy on the digits
    openmix-show --policies mixup cutmix fmix --images ~/pictures --out mixes.png

The first two rows show the images and their partners (pairing ``roll``: each image is mixed
with the previous one, so every policy mixes the same pairs); then one row per policy, each cell
titled with its λ (the weight of the image's own label). Policies run in ``elem`` mode where
they have it, so each cell draws its own λ.

Saliency policies (PuzzleMix) get a proxy saliency, the image's gradient magnitude, since no
model is trained here. Feature-level policies (ManifoldMix, AlignMix) mix hidden features, not
pixels: their rows show the mixed FEATURE maps (channel mean, heat map) of a fixed stand-in
feature extractor (four edge filters at half resolution), mixed at that stage by the policy's own
``mix_features``. Policies that own their training step (needs="step": TransMix, SMMix,
AttentiveMix, RegMixup, RankMixup, SUMix) draw their input through ``policy.preview(x, y,
generator)``, with stand-ins (brightness) where they read the model; learned mixers without a
preview are skipped with a note. The figure's caption says which.
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import Sequence

import torch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


# ---- images ------------------------------------------------------------------------------
def digits_images(n: int, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` of scikit-learn's embedded 8x8 digits, one per class first, upsampled (nearest) to
    ``size``: x (n, 1, size, size) in [0, 1], y (n,) long."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.from_numpy(data.images).float() / 16.0
    labels = torch.from_numpy(data.target).long()
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=g)
    picked, seen = [], set()
    for i in order.tolist():  # distinct classes first, so the mixes are easy to read
        if int(labels[i]) not in seen:
            picked.append(i)
            seen.add(int(labels[i]))
        if len(picked) == n:
            break
    for i in order.tolist():
        if len(picked) == n:
            break
        if i not in picked:
            picked.append(i)
    x = images[picked].unsqueeze(1)
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="nearest")
    return x, labels[picked]


def folder_images(folder: str | Path, n: int, size: int = 96) -> tuple[torch.Tensor, list[str]]:
    """The first ``n`` images (sorted by name) of ``folder``, centre-cropped and resized to
    ``size``: x (n, 3, size, size) in [0, 1] and the file names."""
    from PIL import Image

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ValueError(f"images: got {str(folder)!r}, expected a directory of images")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) < 2:
        raise ValueError(
            f"images: got {str(folder)!r} with {len(files)} image(s), expected at least 2 "
            f"({', '.join(IMAGE_SUFFIXES)})"
        )
    files = files[:n]
    tensors = []
    for path in files:
        with Image.open(path) as im:
            im = im.convert("RGB")
            side = min(im.size)
            left, top = (im.width - side) // 2, (im.height - side) // 2
            im = im.crop((left, top, left + side, top + side)).resize((size, size), Image.BILINEAR)
            data = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
            tensors.append(data.view(size, size, 3).permute(2, 0, 1).float() / 255.0)
    return torch.stack(tensors), [p.name for p in files]


def gradient_saliency(x: torch.Tensor) -> torch.Tensor:
    """Proxy saliency (B, H, W): magnitude of the image gradient (central differences) of the
    channel mean. Stands in for the loss-gradient saliency PuzzleMix computes from a model."""
    gray = x.mean(1)
    gy = torch.zeros_like(gray)
    gx = torch.zeros_like(gray)
    gy[:, 1:-1] = (gray[:, 2:] - gray[:, :-2]) / 2
    gx[:, :, 1:-1] = (gray[:, :, 2:] - gray[:, :, :-2]) / 2
    return torch.sqrt(gx ** 2 + gy ** 2)


# ---- mixing ------------------------------------------------------------------------------
def _alpha_kwargs(name: str, alpha: float | None) -> dict:
    """{"alpha": alpha} for a policy that takes it; ResizeMix and SmoothMix refuse alpha: their λ has its own law."""
    from openmix.policies import POLICIES

    return {"alpha": alpha} if alpha is not None and getattr(POLICIES.get(name), "uses_alpha", True) else {}


def _build(name: str, alpha: float | None):
    import openmix

    kwargs: dict = {"pairing": "roll"}
    from openmix.policies import POLICIES

    policy_cls = POLICIES.get(name)
    modes = getattr(policy_cls, "modes", ("batch", "pair", "elem"))
    if "elem" in modes:
        kwargs["mode"] = "elem"
    kwargs.update(_alpha_kwargs(name, alpha))
    try:
        return openmix.build_policy(name, **kwargs)
    except (TypeError, ValueError):
        kwargs.pop("mode", None)
        return openmix.build_policy(name, **kwargs)


# stage-1 plans for the feature rows: ManifoldMix at the first stage, AlignMix always aligning
FEATURE_PLAN_KWARGS = {"manifoldmix": {"layers": [1]}, "alignmix": {"p_align": 1.0}}


def demo_features(x: torch.Tensor) -> torch.Tensor:
    """A fixed stand-in feature extractor: x (B, C, H, W) -> (B, 4, H/2, W/2), the magnitudes of four
    edge filters (horizontal, vertical, two diagonals) on the grey image, average-pooled by 2."""
    grey = x.float().mean(1, keepdim=True)
    k = torch.tensor([[[-1., -2., -1.], [0., 0., 0.], [1., 2., 1.]],
                      [[-1., 0., 1.], [-2., 0., 2.], [-1., 0., 1.]],
                      [[-2., -1., 0.], [-1., 0., 1.], [0., 1., 2.]],
                      [[0., 1., 2.], [-1., 0., 1.], [-2., -1., 0.]]]).unsqueeze(1)
    edges = torch.nn.functional.conv2d(grey, k, padding=1).abs()
    return torch.nn.functional.avg_pool2d(edges, 2, ceil_mode=True)


def mix_features_with(name: str, x: torch.Tensor, y: torch.Tensor, seed: int = 0,
                      alpha: float | None = None) -> tuple:
    """A feature-level policy on ``demo_features(x)``: (mixed feature maps (B, 4, h, w), lam (B,),
    index (B,), note), or (None, None, None, why not)."""
    import openmix
    from openmix.features import CHANNELS_FIRST

    kwargs = dict(pairing="roll", mode="elem", **FEATURE_PLAN_KWARGS.get(name, {}), **_alpha_kwargs(name, alpha))
    try:
        policy = openmix.build_policy(name, **kwargs)
    except (TypeError, ValueError):
        policy = openmix.build_policy(name, pairing="roll")
    plan = policy.plan(x, y, num_stages=1, generator=torch.Generator().manual_seed(seed))
    if int(plan.stage) != 1:
        return None, None, None, "feature-level policy; its draw mixed the input, not shown"
    mixed = policy.mix_features(demo_features(x), plan, layout=CHANNELS_FIRST)
    return mixed, plan.lam, plan.index, "mixed feature maps (stand-in edge features, half resolution)"


def mix_with(name: str, x: torch.Tensor, y: torch.Tensor, seed: int = 0,
             alpha: float | None = None) -> tuple:
    """Mix ``x`` with policy ``name``: (mixed x, lam (B,), index (B,), note), or
    (None, None, None, why not). Feature-level policies: see ``mix_features_with``."""
    policy = _build(name, alpha)
    g = torch.Generator().manual_seed(seed)
    needs = getattr(policy, "needs", "input")
    if needs == "saliency":
        mb = policy(x, y, generator=g, saliency=gradient_saliency(x))
        return mb.x, mb.lam, mb.index, "saliency proxy: image gradient magnitude"
    if needs == "features":
        return None, None, None, "feature-level policy: shown as mixed feature maps"
    if needs == "step":
        preview = getattr(policy, "preview", None)
        if preview is None:
            return None, None, None, "mixes with a trained network inside the training step; no preview"
        mb, note = preview(x, y, g)
        return mb.x, mb.lam, mb.index, note
    mb = policy(x, y, generator=g)
    return mb.x, mb.lam, mb.index, ""


def _row(name: str, x: torch.Tensor, labels: torch.Tensor, seed: int, alpha: float | None) -> tuple:
    """(kind, cells (B, C, H, W) in [0, 1], lam, index, note) for one policy; kind "image" or
    "features" (heat maps, scaled to [0, 1] over the row), or cells None when not shown."""
    from openmix.policies import POLICIES

    if getattr(POLICIES.get(name), "needs", "input") == "features":
        mixed, lam, index, note = mix_features_with(name, x, labels, seed=seed, alpha=alpha)
        if mixed is None:
            return "features", None, None, None, note
        heat = mixed.mean(1, keepdim=True)
        heat = (heat - heat.min()) / (heat.max() - heat.min()).clamp_min(1e-12)
        return "features", heat, lam, index, note
    mixed, lam, index, note = mix_with(name, x, labels, seed=seed, alpha=alpha)
    return "image", None if mixed is None else mixed.detach().clamp(0, 1), lam, index, note


# ---- the picture -------------------------------------------------------------------------
def _collect_rows(x, labels, policies, seed, alpha) -> tuple[list, list]:
    """Rows (name, kind, cells, lam) of the policies that can be shown, and notes "name: ..."."""
    partner = torch.roll(torch.arange(x.shape[0]), 1)   # what pairing="roll" pairs: row i with row i - 1
    rows, notes = [], []
    for name in policies:
        try:
            kind, cells, lam, index, note = _row(name, x.clone(), labels, seed, alpha)
        except Exception as err:  # noqa: BLE001 - one policy failing should not hide the rest
            kind, cells, lam, index, note = "image", None, None, None, f"failed: {type(err).__name__}: {err}"
        if cells is not None:
            if not torch.equal(index.cpu(), partner):
                note = (note + "; " if note else "") + "pairs differ from the partner row"
            rows.append((name, kind, cells, lam.detach().float()))
        if note:
            notes.append(f"{name}: {note}")
    return rows, notes


def _caption(rows: list, notes: list, source: str, width: int) -> list[str]:
    """The caption as lines of at most ``width`` characters: the legend, then one note per policy."""
    import textwrap

    legend = "λ: weight of the image's own label. Partner: the previous image (pairing=roll)."
    if any(kind == "features" for _, kind, _, _ in rows):
        legend += (" Rows marked (features), heat maps: feature-level policies mix hidden features, not pixels;"
                   " shown on stand-in edge features.")
    if source:
        legend += f" Images: {source}."
    lines = textwrap.wrap(legend, width)
    for note in notes:
        lines += textwrap.wrap(note, width)
    return lines


def render_gallery(x: torch.Tensor, captions: Sequence[str], policies: Sequence[str],
                   seed: int = 0, alpha: float | None = None, y: torch.Tensor | None = None,
                   source: str = "") -> bytes:
    """PNG bytes of the grid: x (B, C, H, W) in [0, 1] with C in {1, 3}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[0] < 2:
        raise ValueError(
            f"x: got shape {tuple(x.shape)}, expected (B >= 2, 1 or 3, H, W) images in [0, 1]"
        )
    if not policies:
        raise ValueError("policies: got an empty list, expected at least one policy name")
    labels = y if y is not None else torch.arange(x.shape[0])
    rows, notes = _collect_rows(x, labels, policies, seed, alpha)
    n, cell = x.shape[0], 1.25
    width = cell * n + 1.4
    lines = _caption(rows, notes, source, int(width * 100 / 7.6))   # monospace 8 pt: ~7 px a character
    caption_height = 0.16 * len(lines) + 0.2
    height = cell * (len(rows) + 2) + 0.6 + caption_height
    fig, axes = plt.subplots(len(rows) + 2, n, figsize=(width, height), squeeze=False)
    cmap = "gray" if x.shape[1] == 1 else None

    def show(ax, img, title, heat=False):
        img = img.permute(1, 2, 0).numpy()
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="magma" if heat else cmap, vmin=0, vmax=1,
                  interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=8, pad=2)

    partner = torch.roll(torch.arange(n), 1)
    for j in range(n):
        show(axes[0, j], x[j], captions[j])
        show(axes[1, j], x[partner[j]], captions[int(partner[j])])
    axes[0, 0].set_ylabel("image", fontsize=9)
    axes[1, 0].set_ylabel("partner", fontsize=9)
    for i, (name, kind, cells, lam) in enumerate(rows, start=2):
        for j in range(n):
            show(axes[i, j], cells[j], f"λ={float(lam[j]):.2f}", heat=kind == "features")
        label = f"{name}\n(features)" if kind == "features" else name
        axes[i, 0].set_ylabel(label, fontsize=9, fontweight="bold", color="darkred" if kind == "features" else "black")
    fig.text(0.01, 0.004, "\n".join(lines), ha="left", va="bottom", fontsize=8, family="monospace")
    fig.suptitle("openmix policies: mixed samples", fontsize=11)
    fig.tight_layout(rect=(0, caption_height / height, 1, 1 - 0.45 / height))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def show_policies(out: str | Path, policies: Sequence[str] | None = None,
                  images: str | Path | None = None, n: int = 8, size: int | None = None,
                  seed: int = 0, alpha: float | None = None) -> Path:
    """Render the gallery to ``out`` (PNG, written atomically) and return its path."""
    import openmix
    from ..files import write_bytes_atomic

    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n: got {n!r}, expected an int >= 2")
    known = openmix.list_policies()
    if not policies:  # every policy that runs on its own: not vanilla, not composites
        from openmix.policies import POLICIES

        policies = [p for p in known if p != "vanilla"
                    and not issubclass(POLICIES.get(p), openmix.RandomChoice)]
    policies = list(policies)
    unknown = [p for p in policies if p not in known]
    if unknown:
        raise ValueError(f"policies: got unknown {unknown}, expected names from {known}")
    if images is None:
        x, y = digits_images(n, size or 32, seed)
        captions = [f"digit {int(v)}" for v in y]
        source = f"scikit-learn digits, 8x8 upsampled to {size or 32}x{size or 32}"
    else:
        x, names = folder_images(images, n, size or 96)
        y = torch.arange(x.shape[0])
        captions = [name[:14] for name in names]
        source = f"{Path(images).name}/"
    png = render_gallery(x, captions, policies, seed=seed, alpha=alpha, y=y, source=source)
    return write_bytes_atomic(Path(out), png)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="openmix-show",
        description="Render a grid of mixed samples for each policy to a PNG.",
    )
    parser.add_argument("--policies", nargs="+", default=None,
                        help="policy names (default: every registered policy but vanilla)")
    parser.add_argument("--images", default=None,
                        help="folder of images (default: scikit-learn's embedded digits)")
    parser.add_argument("--n", type=int, default=8, help="images per row (default 8)")
    parser.add_argument("--size", type=int, default=None,
                        help="image side in pixels (default 32 for digits, 96 for a folder)")
    parser.add_argument("--alpha", type=float, default=None,
                        help="alpha for every policy (default: each policy's own default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="openmix-gallery.png", help="output PNG")
    args = parser.parse_args(argv)
    try:
        path = show_policies(args.out, args.policies, args.images, args.n, args.size,
                             args.seed, args.alpha)
    except ValueError as err:
        parser.exit(2, f"openmix-show: {err}\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
