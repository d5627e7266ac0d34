"""C-Mixup partner sampling: time and peak memory to draw a partner for every training label
(one epoch), for 1e4, 1e5 and 1e6 scalar labels, plus multi-dimensional labels and the dense
N x N probability matrix of the reference implementation (memory only, computed not allocated).
A measurement, not a test.

    python benchmarks/cmixup_sampling.py
    python benchmarks/cmixup_sampling.py --sizes 10000 100000 1000000 --sigma 0.05

Each measurement runs in a fresh subprocess; peak memory = peak resident set size of that
process minus its size just before sampling (labels already in memory). Prints a table and
writes JSON (``--out``, default results/benchmarks/cmixup_sampling.json; the committed run is
benchmarks/results/cmixup_sampling.json).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2 ** 20


def worker(n: int, dim: int, sigma: float, seed: int) -> dict:
    sys.path.insert(0, str(ROOT))
    import torch
    from openmix.pairing.kernel import KernelPairing
    g = torch.Generator().manual_seed(seed)
    labels = torch.randn(n, generator=g) * 5 if dim == 1 else torch.randn(n, dim, generator=g)
    pairing = KernelPairing(sigma=sigma, labels=labels)
    before = rss_mb()
    t0 = time.perf_counter()
    idx = pairing.sample_epoch(g)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    diff = (labels[idx] - labels).reshape(n, -1).norm(dim=1)
    return {"n": n, "dim": dim, "sigma": sigma, "seconds": seconds, "peak_extra_mb": max(peak - before, 0.0),
            "mean_partner_distance": float(diff.mean()), "threads": torch.get_num_threads(),
            "dense_matrix_mb": n * n * 4 / 2 ** 20}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--sigma", type=float, default=0.05)
    ap.add_argument("--multi", type=int, nargs="+", default=[10_000, 20_000],
                    help="sizes for 2-D labels (dense chunked path, O(N^2) time)")
    ap.add_argument("--out", default="results/benchmarks/cmixup_sampling.json",
                    help="JSON output (default under the git-ignored results/; the committed figures are "
                         "benchmarks/results/cmixup_sampling.json)")
    ap.add_argument("--worker", nargs=3, metavar=("N", "DIM", "SIGMA"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        n, dim, sigma = int(args.worker[0]), int(args.worker[1]), float(args.worker[2])
        print(json.dumps(worker(n, dim, sigma, seed=0)))
        return
    rows = []
    jobs = [(n, 1, args.sigma) for n in args.sizes] + [(n, 2, 0.5) for n in args.multi]
    for n, dim, sigma in jobs:
        out = subprocess.run([sys.executable, __file__, "--worker", str(n), str(dim), str(sigma)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"N={r['n']:>9,}  dim={r['dim']}  sigma={r['sigma']:<5}  {r['seconds']:8.2f} s  "
              f"peak +{r['peak_extra_mb']:8.1f} MB  (dense N x N float32 would be {r['dense_matrix_mb']:,.0f} MB)  "
              f"mean |y_i - y_j| {r['mean_partner_distance']:.4f}", flush=True)
    sys.path.insert(0, str(ROOT))
    from openmix.files import write_json_atomic
    write_json_atomic(args.out, {"rows": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
