"""DeviceMixer's normalisation: bytes allocated and time, in place against the code it replaced.
A measurement, not a test.

    python benchmarks/device_mixer_norm.py                       # CPU, 128x3x224x224 uint8
    python benchmarks/device_mixer_norm.py --device cuda --batch 256

"before" is DeviceMixer's former code, ``x.float().div_(255)``, then ``x - mean``, then
``/ std`` (three float batches allocated); "openmix" is ``DeviceMixer.normalise`` (one float
batch, the rest in place). Both are checked bitwise-equal to ``(x.float() / 255 - mean) / std``. Bytes allocated per call come from the profiler's
memory events on the CPU and from the peak allocated memory on CUDA. Times are per round of
interleaved calls (the two see the same machine load). Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from timing import interleaved, ratio_stats  # noqa: E402  (benchmarks/timing.py)
import openmix  # noqa: E402
from openmix.files import write_json_atomic  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def plain_formula(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (x.float() / 255 - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def before(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """DeviceMixer.normalise as it was (uint8 input)."""
    x = x.float().div_(255.0)
    x = x - mean.view(1, -1, 1, 1)
    return x / std.view(1, -1, 1, 1)


def bytes_allocated(fn, device: torch.device) -> int:
    """Bytes newly allocated by one call of ``fn`` (CUDA: peak above the start)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        out = fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - start
        del out
        return int(peak)
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return int(sum(e.self_cpu_memory_usage for e in prof.events() if e.self_cpu_memory_usage > 0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--out", default="results/benchmarks/device_mixer_norm.json")
    args = ap.parse_args()
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (args.batch, 3, args.size, args.size), generator=g, dtype=torch.uint8).to(device)
    mixer = openmix.DeviceMixer(openmix.build_policy("vanilla"), device=device, mean=MEAN, std=STD)
    mean, std = mixer.mean, mixer.std
    fns = {"before": lambda: before(x, mean, std), "openmix": lambda: mixer.normalise(x)}
    want = plain_formula(x, mean, std)
    assert all(torch.equal(fn(), want) for fn in fns.values()), "normalise differs from the plain formula"
    batch_bytes = x.numel() * 4
    allocated = {name: bytes_allocated(fn, device) for name, fn in fns.items()}
    times = interleaved(fns, device, args.rounds)
    result = {
        "device": str(device), "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "shape": list(x.shape), "float_batch_bytes": batch_bytes,
        "allocated_bytes": allocated,
        "allocated_float_batches": {k: v / batch_bytes for k, v in allocated.items()},
        "median_ms": {k: 1000 * sorted(v)[len(v) // 2] for k, v in times.items()},
        "time_ratio_openmix_over_before": ratio_stats(times["openmix"], times["before"]),
        "bitwise_equal": True,
    }
    print(f"{tuple(x.shape)} uint8 on {device}, {result['threads']} threads, {args.rounds} rounds")
    print(f"{'':8} {'allocated':>12} {'float batches':>14} {'median ms':>10}")
    for name in fns:
        print(f"{name:8} {allocated[name] / 2**20:10.1f} MiB {allocated[name] / batch_bytes:14.2f} "
              f"{result['median_ms'][name]:10.2f}")
    r = result["time_ratio_openmix_over_before"]
    print(f"time openmix / before: median {r['median']:.2f} (quartiles {r['q1']:.2f}-{r['q3']:.2f})")
    write_json_atomic(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
