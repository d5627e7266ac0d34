"""The masks a learned mixer (automix, samix, adautomix) gives at a few epochs of a run, as a PNG.

The learned-mixer policies keep in their checkpoint state a probe (the first ``snapshot_samples``
rows of the first training batch, row i mixed with rows i+1, ..., i+K-1, λ = 1/K each) and the
masks their mixer gives it after 0 epochs, after 1, 2, 4, 8, ... epochs and after the latest one
(``openmix.policies.learned_mixer``). This module reads them from ``checkpoints/last.pt`` of a run
and draws one row per recorded epoch: for each probe pair the mixed image and the mask (grey: the
row's own weight, K = 2; colour: the K = 3 weights as red/green/blue; K > 3: the own weight).

    python -m openmix.bench.learned_masks RUN_DIR [--out RUN_DIR/learned_masks.png] [--samples 4]

``RUN_DIR`` is a trainer.out_dir (or give a checkpoint file). ``load_mask_history`` and
``plot_mask_history`` are the same steps as functions (for the gallery).
"""
from __future__ import annotations

import argparse
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch

from ..files import write_bytes_atomic

__all__ = ["MaskHistory", "load_mask_history", "mixed_images", "plot_mask_history", "main"]


@dataclass(frozen=True)
class MaskHistory:
    """policy: the class name; epochs: the epochs after which masks were recorded (0 = at the start);
    probe_x: (S, C, *spatial) normalised inputs; indices: (S, K) rows mixed in each probe row
    (column 0 the row itself); masks: (E, S, K, *spatial) float32, summing to 1 over K."""
    policy: str
    epochs: tuple
    probe_x: torch.Tensor
    indices: torch.Tensor
    masks: torch.Tensor


def load_mask_history(path: str | Path) -> MaskHistory:
    """The mask snapshots in a run's ``checkpoints/last.pt`` (``path``: the run folder or a checkpoint)."""
    from ..train.checkpoint import load_checkpoint
    path = Path(path)
    file = path / "checkpoints" / "last.pt" if path.is_dir() else path
    state = load_checkpoint(file)
    policy = (state.get("per_rank") or [{}])[0].get("policy") or {}
    snaps, probe = policy.get("snapshots"), policy.get("probe")
    if not snaps or probe is None or not snaps.get("epochs"):
        raise ValueError(f"{file} holds no learned-mixer mask snapshots: the run must use mix=automix, samix or "
                         f"adautomix with snapshot_samples > 0 and have trained at least one step")
    return MaskHistory(policy=str(policy.get("policy", "learned mixer")), epochs=tuple(int(e) for e in snaps["epochs"]),
                       probe_x=probe["x"].float(), indices=probe["indices"].long(),
                       masks=torch.stack([m.float() for m in snaps["masks"]]))


def mixed_images(history: MaskHistory) -> torch.Tensor:
    """(E, S, C, *spatial): sum_k masks[:, :, k] * probe_x[indices[:, k]] for every recorded epoch."""
    x = history.probe_x
    sources = torch.stack([x[history.indices[:, k]] for k in range(history.indices.shape[1])], dim=1)
    return (history.masks.unsqueeze(3) * sources.unsqueeze(0)).sum(dim=2)


def _display(image: torch.Tensor):
    """(C, *spatial) -> an array matplotlib shows: grey (H, W) or RGB (H, W, 3), min-max scaled; 1-D -> (1, L)."""
    if image.ndim == 2:                       # (C, L)
        image = image.unsqueeze(1)
    if image.ndim != 3:
        raise ValueError(f"the figure draws 1-D or 2-D inputs, got spatial shape {tuple(image.shape[1:])}")
    lo, hi = image.min(), image.max()
    image = (image - lo) / (hi - lo).clamp_min(1e-8)
    return image.permute(1, 2, 0).numpy() if image.shape[0] == 3 else image[0].numpy()


def _mask_display(masks: torch.Tensor):
    """(K, *spatial) -> grey own weight (K = 2 or K > 3) or RGB of the three weights (K = 3)."""
    if masks.ndim == 2:
        masks = masks.unsqueeze(1)
    if masks.shape[0] == 3:
        return masks.permute(1, 2, 0).clamp(0, 1).numpy()
    return masks[0].clamp(0, 1).numpy()


def plot_mask_history(history: MaskHistory, out: str | Path, samples: int = 4,
                      epochs: Optional[Sequence[int]] = None) -> Path:
    """Draw ``samples`` probe pairs (mixed image, mask) per recorded epoch (all, or ``epochs``) into ``out`` (PNG)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be an int >= 1, got {samples!r}")
    rows = [i for i, e in enumerate(history.epochs) if epochs is None or e in set(epochs)]
    if not rows:
        raise ValueError(f"epochs must name recorded epochs {list(history.epochs)}, got {list(epochs)!r}")
    n = min(samples, history.probe_x.shape[0])
    mixed = mixed_images(history)
    fig, axes = plt.subplots(len(rows), 2 * n, figsize=(1.6 * 2 * n, 1.7 * len(rows)), squeeze=False)
    for r, i in enumerate(rows):
        for s in range(n):
            img, mask = axes[r][2 * s], axes[r][2 * s + 1]
            img.imshow(_display(mixed[i, s]), cmap="gray", interpolation="nearest")
            mask.imshow(_mask_display(history.masks[i, s]), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            for ax in (img, mask):
                ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                img.set_title(f"pair {s}: mixed", fontsize=7)
                mask.set_title("mask", fontsize=7)
        axes[r][0].set_ylabel(f"epoch {history.epochs[i]}", fontsize=8)
    k = history.indices.shape[1]
    legend = "grey: own weight" if k != 3 else "red/green/blue: weights of the 3 samples"
    fig.suptitle(f"{history.policy}: learned masks (λ = 1/{k} each; {legend})", fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return write_bytes_atomic(out, buffer.getvalue())


def main(argv: Optional[Sequence[str]] = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m openmix.bench.learned_masks",
                                     description="Draw the masks a learned mixer gave at a few epochs of a run.")
    parser.add_argument("run", help="the run's trainer.out_dir, or a checkpoint file")
    parser.add_argument("--out", default=None, help="PNG path (default: RUN/learned_masks.png)")
    parser.add_argument("--samples", type=int, default=4, help="probe pairs per row (default 4)")
    parser.add_argument("--epochs", type=int, nargs="*", default=None, help="only these recorded epochs")
    args = parser.parse_args(argv)
    run = Path(args.run)
    out = Path(args.out) if args.out else (run if run.is_dir() else run.parent) / "learned_masks.png"
    try:
        history = load_mask_history(run)
        path = plot_mask_history(history, out, samples=args.samples, epochs=args.epochs)
    except (ValueError, OSError, RuntimeError) as exc:   # RuntimeError: CheckpointError
        parser.exit(2, f"learned_masks: {exc}\n")
    print(f"learned_masks: epochs {list(history.epochs)} -> {path}")
    return path


if __name__ == "__main__":
    main()
