#!/usr/bin/env python
"""Check an openmix environment: versions, devices, and a one-batch mixing smoke test.

Prints the versions of Python, torch, numpy, openmix and the optional packages (present or
not), the devices torch can use (CUDA, MPS, CPU), then mixes one batch with every input-level
policy on the chosen device and prints the time per call. Exits 1 if a policy fails.

    python tools/env_check.py                    # best device available
    python tools/env_check.py --device cpu --batch 64 --size 224 --json env.json
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

OPTIONAL = {"timm": "timm", "torchvision": "torchvision", "hydra-core": "hydra", "scikit-learn": "sklearn",
            "scipy": "scipy", "matplotlib": "matplotlib", "tensorboard": "tensorboard", "mnist1d": "mnist1d",
            "tqdm": "tqdm", "PyMaxflow": "maxflow"}


def version_of(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict:
    import numpy
    import torch
    import openmix
    found = {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
             "openmix": f"{openmix.__version__} ({Path(openmix.__file__).parent})"}
    for dist in OPTIONAL:
        found[dist] = version_of(dist)
    return found


def devices() -> list[dict]:
    import torch
    found = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            found.append({"device": f"cuda:{i}", "name": props.name,
                          "memory_gib": round(props.total_memory / 2 ** 30, 1),
                          "capability": f"{props.major}.{props.minor}"})
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append({"device": "mps", "name": "Apple Metal"})
    found.append({"device": "cpu", "name": platform.processor() or platform.machine(),
                  "threads": torch.get_num_threads()})
    return found


def synchronize(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def smoke(device_name: str, batch: int, size: int, repeats: int) -> list[dict]:
    """Mix one (batch, 3, size, size) batch with every input-level policy and mode on the device."""
    import torch
    import openmix
    device = torch.device(device_name)
    x = torch.rand(batch, 3, size, size, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    rows = []
    for name in openmix.list_policies():
        if name == "choice" or openmix.build_policy(name).needs != "input":
            continue
        modes = ["batch"] if name == "vanilla" else list(openmix.build_policy(name).modes)
        for mode in modes:
            row = {"policy": name, "mode": mode}
            try:
                policy = openmix.build_policy(name, mode=mode, seed=0)
                g = torch.Generator(device=device).manual_seed(0)
                mb = policy(x, y, generator=g)                      # warm-up, and the checks
                targets = mb.soft_targets(10)
                ok = (mb.x.shape == x.shape and bool(torch.isfinite(mb.x).all())
                      and bool(torch.allclose(targets.sum(1), torch.ones_like(targets[:, 0]))))
                synchronize(device)
                start = time.perf_counter()
                for _ in range(repeats):
                    policy(x, y, generator=g)
                synchronize(device)
                row.update(ok=ok, ms=1000 * (time.perf_counter() - start) / repeats)
            except Exception as exc:        # report every policy, then fail at the end
                row.update(ok=False, error=f"{type(exc).__name__}: {exc}")
            rows.append(row)
    return rows


def best_device() -> str:
    import torch
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    return "mps" if mps is not None and mps.is_available() else "cpu"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--device", default=None, help="device for the smoke test (default: cuda, else mps, else cpu)")
    parser.add_argument("--batch", type=int, default=32, help="batch size of the smoke test (default 32)")
    parser.add_argument("--size", type=int, default=32, help="image side of the smoke test (default 32)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per policy and mode (default 5)")
    parser.add_argument("--json", type=Path, default=None, help="also write the report to this JSON file")
    args = parser.parse_args(argv)
    for key in ("batch", "size", "repeats"):
        if getattr(args, key) < 1:
            parser.error(f"--{key} must be an int >= 1, got {getattr(args, key)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = {"versions": versions(), "devices": devices()}
    device = args.device or best_device()
    available = [d["device"] for d in report["devices"]]
    if device not in available and f"{device}:0" not in available:
        print(f"--device must be one of {available} here, got {device!r}", file=sys.stderr)
        return 2
    print("versions")
    for key, value in report["versions"].items():
        print(f"  {key:<12} {value if value is not None else '(not installed)'}")
    print("devices")
    for d in report["devices"]:
        print("  " + "  ".join(f"{k}={v}" for k, v in d.items()))
    print(f"smoke test on {device}: one ({args.batch}, 3, {args.size}, {args.size}) batch per policy and mode")
    report["smoke"] = smoke(device, args.batch, args.size, args.repeats)
    report["smoke_device"] = device
    for row in report["smoke"]:
        status = f"{row['ms']:8.2f} ms" if row.get("ok") else f"FAILED {row.get('error', 'wrong output')}"
        print(f"  {row['policy']:<10} {row['mode']:<6} {status}")
    failed = [f"{r['policy']}/{r['mode']}" for r in report["smoke"] if not r.get("ok")]
    print("ok" if not failed else f"failed: {', '.join(failed)}")
    if args.json is not None:
        from openmix.files import write_json_atomic
        write_json_atomic(args.json, report)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
