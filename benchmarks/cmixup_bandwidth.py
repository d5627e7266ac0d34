"""C-Mixup's relative bandwidth: test RMSE against sigma (in label stds) on the single-index task
of ``tests/test_cmixup_units.py`` (same task, learner, steps), next to ERM and mixup. A
measurement, not a test: it chose ``openmix.pairing.kernel.DEFAULT_SIGMA`` and the test's margin.

    python benchmarks/cmixup_bandwidth.py
    python benchmarks/cmixup_bandwidth.py --seeds 12 --sigmas 0.05 0.1 0.2 0.3 0.5 1.0

All runs train at once as one batched network (one model per method x seed); labels at scale 1
(the test shows the relative bandwidth gives the same pairing at any scale). Prints per method the
mean +- std of the relative test RMSE (RMSE / std of the test labels) and the per-seed ratio to
ERM and to mixup (mean, std, worst seed); writes JSON (``--out``, default
results/benchmarks/cmixup_bandwidth.json; the committed run is benchmarks/results/).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=12)
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.3, 0.5, 1.0])
    parser.add_argument("--out", default="results/benchmarks/cmixup_bandwidth.json")
    args = parser.parse_args()

    import torch

    import openmix
    from openmix.files import write_json_atomic
    from test_cmixup_units import BATCH, HIDDEN, LR, STEPS, relative_test_rmse, single_index_task

    torch.set_num_threads(1)
    methods = {"erm": lambda: None, "mixup": lambda: openmix.build_policy("mixup", alpha=2.0)}
    for sigma in args.sigmas:
        methods[f"cmixup sigma={sigma:g}"] = (lambda s=sigma: openmix.build_policy(
            "mixup", alpha=2.0, pairing={"name": "cmixup", "sigma": s}))
    runs = [(seed, single_index_task(1.0, seed), make()) for make in methods.values() for seed in range(args.seeds)]
    start = time.perf_counter()
    rmse = relative_test_rmse(runs).view(len(methods), args.seeds)
    seconds = time.perf_counter() - start
    per_method = {name: rmse[i].tolist() for i, name in enumerate(methods)}

    def ratio_stats(values, base):
        ratios = [v / b for v, b in zip(values, base)]
        return {"mean": statistics.fmean(ratios), "std": statistics.stdev(ratios), "worst": max(ratios)}

    rows = {}
    print(f"single-index task, {args.seeds} seeds, {STEPS} steps of batch {BATCH}, MLP width {HIDDEN}, "
          f"Adam lr {LR}: relative test RMSE  ({seconds:.1f} s)")
    for name, values in per_method.items():
        row = {"rmse": values, "mean": statistics.fmean(values), "std": statistics.stdev(values),
               "vs_erm": ratio_stats(values, per_method["erm"]), "vs_mixup": ratio_stats(values, per_method["mixup"])}
        rows[name] = row
        print(f"{name:22s} {row['mean']:.4f} +- {row['std']:.4f}   /ERM {row['vs_erm']['mean']:.3f} "
              f"(sd {row['vs_erm']['std']:.3f}, worst {row['vs_erm']['worst']:.3f})   /mixup "
              f"{row['vs_mixup']['mean']:.3f} (sd {row['vs_mixup']['std']:.3f}, worst {row['vs_mixup']['worst']:.3f})")
    write_json_atomic(args.out, {"seeds": args.seeds, "steps": STEPS, "batch": BATCH, "seconds": seconds,
                                 "methods": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
