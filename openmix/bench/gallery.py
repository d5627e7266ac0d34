"""``openmix-show``: a grid of mixed samples per policy, to see what a policy does.

    openmix-show                                     # every registered policy on the digits
    openmix-show --policies mixup cutmix fmix --images ~/pictures --out mixes.png

The first two rows show the images and their partners (pairing ``roll``: each image is mixed
with the previous one, so every policy mixes the same pairs); then one row per policy, each cell
titled with its λ (the weight of the image's own label). Policies run in ``elem`` mode where
they have it, so each cell draws its own λ.

Saliency policies (PuzzleMix) get a proxy saliency, the image's gradient magnitude, since no
model is trained here; feature-level policies (ManifoldMix, AlignMix) are shown through their
input-level branch (mixing at stage 0) or skipped with a note. The figure's caption says which.
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
def _build(name: str, alpha: float | None):
    import openmix

    kwargs: dict = {"pairing": "roll"}
    from openmix.policies import POLICIES

    policy_cls = POLICIES.get(name)
    modes = getattr(policy_cls, "modes", ("batch", "pair", "elem"))
    if "elem" in modes:
        kwargs["mode"] = "elem"
    if alpha is not None:
        kwargs["alpha"] = alpha
    try:
        return openmix.build_policy(name, **kwargs)
    except (TypeError, ValueError):
        kwargs.pop("mode", None)
        return openmix.build_policy(name, **kwargs)


def mix_with(name: str, x: torch.Tensor, y: torch.Tensor, seed: int = 0,
             alpha: float | None = None) -> tuple:
    """Mix ``x`` with policy ``name``: (mixed x, lam (B,), index (B,), note), or
    (None, None, None, why not)."""
    policy = _build(name, alpha)
    g = torch.Generator().manual_seed(seed)
    needs = getattr(policy, "needs", "input")
    if needs == "saliency":
        mb = policy(x, y, generator=g, saliency=gradient_saliency(x))
        return mb.x, mb.lam, mb.index, "saliency proxy: image gradient magnitude"
    if needs == "features":
        plan_fn = getattr(policy, "plan", None)
        if plan_fn is None:
            return None, None, None, "feature-level policy, skipped"
        plan = plan_fn(x, y, num_stages=0, generator=g)
        if int(getattr(plan, "stage", 0)) != 0:
            return None, None, None, "feature-level policy, skipped"
        return plan.mix_input(x), plan.lam, plan.index, "feature-level: input-level branch shown"
    mb = policy(x, y, generator=g)
    return mb.x, mb.lam, mb.index, ""


# ---- the picture -------------------------------------------------------------------------
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
    # what pairing="roll" pairs: row i with row i - 1 (each policy's index is checked against it)
    partner = torch.roll(torch.arange(x.shape[0]), 1)
    rows, notes = [], []
    for name in policies:
        try:
            mixed, lam, index, note = mix_with(name, x.clone(), labels, seed=seed, alpha=alpha)
        except Exception as err:  # noqa: BLE001 - one policy failing should not hide the rest
            mixed, lam, index, note = None, None, None, f"failed: {type(err).__name__}: {err}"
        if mixed is not None:
            if not torch.equal(index.cpu(), partner):
                note = (note + "; " if note else "") + "pairs differ from the partner row"
            rows.append((name, mixed.detach().clamp(0, 1), lam.detach().float()))
        if note:
            notes.append(f"{name}: {note}")
    n = x.shape[0]
    cell = 1.25
    fig, axes = plt.subplots(len(rows) + 2, n, figsize=(cell * n + 1.4, cell * (len(rows) + 2) + 1.0),
                             squeeze=False)
    cmap = "gray" if x.shape[1] == 1 else None

    def show(ax, img, title):
        img = img.permute(1, 2, 0).numpy()
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap=cmap, vmin=0, vmax=1,
                  interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=8, pad=2)

    for j in range(n):
        show(axes[0, j], x[j], captions[j])
        show(axes[1, j], x[partner[j]], captions[int(partner[j])])
    axes[0, 0].set_ylabel("image", fontsize=9)
    axes[1, 0].set_ylabel("partner", fontsize=9)
    for i, (name, mixed, lam) in enumerate(rows, start=2):
        for j in range(n):
            show(axes[i, j], mixed[j], f"λ={float(lam[j]):.2f}")
        axes[i, 0].set_ylabel(name, fontsize=9, fontweight="bold")
    caption = "λ: weight of the image's own label. Partner: the previous image (pairing=roll)."
    if source:
        caption += f" Images: {source}."
    if notes:
        caption += "\n" + "; ".join(notes)
    fig.text(0.5, 0.005, caption, ha="center", va="bottom", fontsize=8, wrap=True)
    fig.suptitle("openmix policies: mixed samples", fontsize=11)
    height = fig.get_size_inches()[1]
    caption_lines = caption.count("\n") + 1
    fig.tight_layout(rect=(0, (0.2 * caption_lines + 0.1) / height, 1, 1 - 0.45 / height))
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
