"""Time to mix one batch, per policy and mode, as a ratio to x.clone() measured in the same run.

    python benchmarks/mixing_speed.py [--device cpu|cuda] [--reps N] [--out FILE]

Peers on the same batch: timm's Mixup (batch and elem modes; mixup and CutMix) and torchvision's
v2 MixUp/CutMix. timm mixes in place, so each of its calls gets a fresh copy made outside the
timer. Prints a table and writes JSON (default benchmarks/results/mixing_speed_<device>.json).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from typing import Callable, Dict, List

import torch

import openmix
from timing import sync  # benchmarks/timing.py

SHAPES = {"256x3x32x32": (256, 3, 32, 32), "64x3x224x224": (64, 3, 224, 224)}
TARGETS = {  # ratio to x.clone() at 64x3x224x224 (issue 2)
    ("mixup", "*"): 3.0, ("cutmix", "*"): 3.0, ("resizemix", "*"): 3.0, ("fmix", "elem"): 6.0,
}


def median_ms(fn: Callable[[], object], reps: int, device: torch.device, setup: Callable[[], object] = None) -> float:
    times = []
    for i in range(reps + 2):
        arg = setup() if setup else None
        sync(device)
        start = time.perf_counter()
        fn(arg) if setup else fn()
        sync(device)
        if i >= 2:     # two warm-up calls
            times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def peers(x: torch.Tensor, y: torch.Tensor) -> Dict[str, Callable]:
    from timm.data.mixup import Mixup
    from torchvision.transforms import v2
    out: Dict[str, Callable] = {}
    for mode in ("batch", "elem"):
        for kind, kw in (("mixup", dict(mixup_alpha=1.0, cutmix_alpha=0.0)),
                         ("cutmix", dict(mixup_alpha=0.0, cutmix_alpha=1.0))):
            mixer = Mixup(mode=mode, num_classes=10, label_smoothing=0.0, **kw)
            out[f"timm {kind} {mode}"] = (lambda m: (lambda xc: m(xc, y)))(mixer)
    tv_mixup, tv_cutmix = v2.MixUp(alpha=1.0, num_classes=10), v2.CutMix(alpha=1.0, num_classes=10)
    out["torchvision MixUp"] = lambda xc: tv_mixup(xc, y)
    out["torchvision CutMix"] = lambda xc: tv_cutmix(xc, y)
    return out


def run(device: torch.device, reps: Dict[str, int]) -> List[dict]:
    rows = []
    for label, shape in SHAPES.items():
        g = torch.Generator().manual_seed(0)
        x = torch.rand(shape, generator=g).to(device)
        y = torch.randint(0, 10, (shape[0],), generator=g).to(device)
        n = reps[label]
        clone_ms = median_ms(lambda: x.clone(), n, device)
        rows.append(dict(shape=label, method="x.clone()", ms=clone_ms, ratio=1.0))
        for name in ("mixup", "cutmix", "fmix", "resizemix"):
            for mode in ("batch", "pair", "elem"):
                policy = openmix.build_policy(name, mode=mode, seed=0)
                ms = median_ms(lambda: policy(x, y), n, device)
                target = TARGETS.get((name, "*"), TARGETS.get((name, mode))) if label == "64x3x224x224" else None
                rows.append(dict(shape=label, method=f"openmix {name} {mode}", ms=ms, ratio=ms / clone_ms,
                                 target=target))
        if device.type == "cpu":
            for method, fn in peers(x, y).items():
                ms = median_ms(fn, n, device, setup=lambda: x.clone())
                rows.append(dict(shape=label, method=method, ms=ms, ratio=ms / clone_ms))
    return rows


def elem_speedups(rows: List[dict]) -> Dict[str, float]:
    """openmix elem vs timm elem at 256x3x32x32 (issue 2's target: at least 5x)."""
    t = {r["method"]: r["ms"] for r in rows if r["shape"] == "256x3x32x32"}
    return {k: t[f"timm {k} elem"] / t[f"openmix {k} elem"] for k in ("mixup", "cutmix") if f"timm {k} elem" in t}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reps", type=int, default=0, help="timed calls per entry (default 30 small, 10 large)")
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    reps = {"256x3x32x32": args.reps or 30, "64x3x224x224": args.reps or 10}
    rows = run(device, reps)
    speedups = elem_speedups(rows)
    print(f"{'shape':<14} {'method':<28} {'ms':>9} {'x clone':>8} {'target':>7}")
    for r in rows:
        target = r.get("target")
        flag = "" if target is None else (f"<={target:g} " + ("ok" if r["ratio"] <= target else "MISS"))
        print(f"{r['shape']:<14} {r['method']:<28} {r['ms']:>9.3f} {r['ratio']:>8.2f} {flag:>7}")
    for k, v in speedups.items():
        print(f"elem speed-up over timm at 256x3x32x32, {k}: {v:.1f}x (target >= 5x)")
    result = dict(device=str(device), torch=torch.__version__, threads=torch.get_num_threads(),
                  machine=platform.machine(), python=sys.version.split()[0], rows=rows, elem_speedup_vs_timm=speedups)
    out = args.out or os.path.join(os.path.dirname(__file__), "results", f"mixing_speed_{device.type}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(out), suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
