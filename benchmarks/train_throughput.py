"""Throughput of the full training step (load, mix, forward, backward, optimiser step) for
vanilla and each static policy, with mixing in the collate (``mix.where=collate``) and on the
device after the copy (``mix.where=device``), on the default model, in one run.

Every configuration runs through ``openmix.train.app.train`` (the real trainer), so what is
timed is exactly the trainer's train loop; evaluation is excluded. Configurations are
interleaved across repeats so that drifting machine load hits them alike; per configuration
the median per-epoch throughput (first epoch of each repeat dropped) is reported, and the
overhead of mixing as a percentage of the vanilla step time:
``overhead = (1/throughput - 1/throughput_vanilla) / (1/throughput_vanilla)``.

    python benchmarks/train_throughput.py                       # digits, small_cnn, CPU
    python benchmarks/train_throughput.py --device cuda --data synthetic --epochs 6 --out bench.json
    python benchmarks/train_throughput.py --compare-tree ../openmix-old --rounds 6   # this code vs another checkout

``--compare-tree`` runs this script of both source trees as subprocesses, alternating in every
round, and reports the per-round throughput ratio (this tree / the other one): a before/after
comparison of a change to the trainer, measured under the same machine load.

Speed measurement, not a test.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from openmix.train.app import compose_config, train  # noqa: E402
from openmix.files import write_json_atomic  # noqa: E402

STATIC = ("vanilla", "mixup", "cutmix", "fmix", "resizemix")


def _mixing_ms(args, policy_name: str, where: str, calls: int = 200) -> float:
    """Median time (ms) of the mixing call alone on one batch, as the trainer makes it: MixCollate
    on a list of samples minus plain collation (collate), or DeviceMixer on a batch (device)."""
    import openmix
    from torch.utils.data import default_collate
    from openmix.train.datasets import build_dataset
    from openmix.train.settings import validate
    settings = validate(compose_config([f"data={args.data}", f"mix={policy_name}", *args.override]))
    bundle = build_dataset(settings.data.name, **settings.data.builder_kwargs)
    policy = openmix.build_policy(settings.mix.name, **settings.mix.policy_kwargs)
    samples = [bundle.train[i] for i in range(args.batch_size)]
    dev = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                       (args.device if args.device != "auto" else "cpu"))
    if where == "collate":
        mixer, plain = openmix.MixCollate(policy), default_collate

        def once():
            t = time.perf_counter(); mixer(samples); t1 = time.perf_counter(); plain(samples)
            return (t1 - t) - (time.perf_counter() - t1)
    else:
        x, y = (t.to(dev) for t in default_collate(samples))
        mixer = openmix.DeviceMixer(policy, device=dev, mean=bundle.mean, std=bundle.std)

        def once():
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t = time.perf_counter(); mixer(x, y)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            return time.perf_counter() - t
    threads_before = torch.get_num_threads()
    if dev.type == "cpu" and args.threads != "null":  # the threads the trainer used (auto: 1 for small nets)
        torch.set_num_threads(1 if args.threads == "auto" else int(args.threads))
    try:
        for _ in range(10):
            once()
        return 1000.0 * max(0.0, statistics.median(once() for _ in range(calls)))
    finally:
        torch.set_num_threads(threads_before)


def compare_trees(args, other: Path) -> dict:
    """Per-round ratios of samples/s, this tree over ``other``, each round running both as subprocesses."""
    import json
    import subprocess
    trees = {"this": Path(__file__).resolve().parents[1], "other": other.resolve()}
    script_args = ["--policies", args.policies, "--where", args.where, "--epochs", str(args.epochs), "--repeats", "1",
                   "--batch-size", str(args.batch_size), "--data", args.data, "--device", args.device,
                   "--threads", args.threads, *sum((["--override", o] for o in args.override), [])]
    ratios: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            rates = {}
            for name, root in (trees.items() if r % 2 == 0 else reversed(trees.items())):
                out = Path(tmp) / f"{name}_{r}.json"
                subprocess.run([sys.executable, str(root / "benchmarks" / "train_throughput.py"), *script_args,
                                "--out", str(out)], cwd=tmp, check=True, capture_output=True, text=True)
                rates[name] = {(row["policy"], row["where"]): row["samples_per_second"]
                               for row in json.loads(out.read_text())["rows"]}
            for key, value in rates["this"].items():
                ratios.setdefault("/".join(key), []).append(value / rates["other"][key])
            print(f"round {r + 1}/{args.rounds}: " + "  ".join(f"{k} {v[-1]:.3f}" for k, v in ratios.items()),
                  file=sys.stderr, flush=True)
    result = {"benchmark": "train_throughput_compare", "this_tree": str(trees["this"]), "other_tree": str(trees["other"]),
              "rounds": args.rounds, "ratios": ratios,
              "median_ratio": {k: statistics.median(v) for k, v in ratios.items()}}
    for k, v in ratios.items():
        q = statistics.quantiles(v, n=4) if len(v) >= 2 else [v[0]] * 3
        print(f"{k:>18}: this/other samples/s median {statistics.median(v):.3f} (quartiles {q[0]:.3f}-{q[2]:.3f})")
    write_json_atomic(args.out, result)
    return result


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="digits")
    ap.add_argument("--model", default="auto")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--policies", default=",".join(STATIC))
    ap.add_argument("--where", default="collate,device")
    ap.add_argument("--epochs", type=int, default=4, help="epochs per repeat (the first is dropped as warm-up)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--threads", default="auto")
    ap.add_argument("--override", action="append", default=[], help="extra trainer override, repeatable")
    ap.add_argument("--out", default="results/benchmarks/train_throughput.json",
                    help="JSON output (default under the git-ignored results/; the committed figures are "
                         "benchmarks/results/train_throughput.json)")
    ap.add_argument("--compare-tree", type=Path, default=None,
                    help="another checkout of openmix: report per-round throughput ratios this/other instead")
    ap.add_argument("--rounds", type=int, default=6, help="rounds of --compare-tree (each runs both trees)")
    args = ap.parse_args(argv)
    if args.compare_tree is not None:
        return compare_trees(args, args.compare_tree)
    if args.epochs < 2:
        ap.error("--epochs must be >= 2 (the first epoch of each repeat is warm-up)")

    policies = [p for p in args.policies.split(",") if p]
    wheres = [w for w in args.where.split(",") if w]
    configs = [(p, w) for p in policies for w in wheres]
    rates: dict[tuple, list[float]] = {c: [] for c in configs}
    device = None
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for i, (policy, where) in enumerate(configs):
                cfg = compose_config([
                    f"data={args.data}", f"model.name={args.model}", f"mix={policy}", f"mix.where={where}",
                    f"trainer.epochs={args.epochs}", f"trainer.batch_size={args.batch_size}",
                    f"trainer.num_workers={args.workers}", f"trainer.device={args.device}",
                    f"trainer.threads={args.threads}", "trainer.progress=false", "trainer.summary=false",
                    "trainer.tensorboard=false", "trainer.save_checkpoints=false", f"seed={r}",
                    f"trainer.out_dir={os.path.join(tmp, f'{r}_{i}')}", *args.override])
                s = train(cfg)
                device = s["device"]
                rates[(policy, where)] += [h["samples_per_second"] for h in s["history"][1:]]
                print(f"repeat {r + 1}/{args.repeats} {policy:>10} {where:>7}: "
                      f"{statistics.median(rates[(policy, where)]):9.0f} samples/s", file=sys.stderr, flush=True)

    mix_ms = {c: _mixing_ms(args, *c) for c in configs}
    rows = []
    for where in wheres:
        base = statistics.median(rates[("vanilla", where)]) if ("vanilla", where) in rates else None
        for policy in policies:
            sps = statistics.median(rates[(policy, where)])
            overhead = None if base is None else 100.0 * (base / sps - 1.0)
            step_ms = 1000.0 * args.batch_size / (base or sps)
            rows.append({"policy": policy, "where": where, "samples_per_second": sps,
                         "step_ms": 1000.0 * args.batch_size / sps, "overhead_pct": overhead,
                         "mix_ms_per_batch": mix_ms[(policy, where)],
                         "mix_pct_of_vanilla_step": 100.0 * mix_ms[(policy, where)] / step_ms,
                         "epochs_measured": len(rates[(policy, where)])})
    result = {"benchmark": "train_throughput", "data": args.data, "model": args.model, "device": device,
              "batch_size": args.batch_size, "num_workers": args.workers, "epochs": args.epochs,
              "repeats": args.repeats, "threads": args.threads,  # auto: 1 for the small networks on CPU (trainer.threads)
              "torch": torch.__version__, "python": platform.python_version(), "cpu_count": os.cpu_count(),
              "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "rows": rows}
    print(f"\ntrain step throughput: data={args.data} model={args.model} device={device} batch={args.batch_size}")
    print(f"{'policy':>10} {'where':>8} {'samples/s':>11} {'step ms':>9} {'overhead':>9} {'mix ms':>8} {'mix/step':>9}")
    for row in rows:
        oh = "" if row["overhead_pct"] is None else f"{row['overhead_pct']:+.1f}%"
        print(f"{row['policy']:>10} {row['where']:>8} {row['samples_per_second']:>11.0f} {row['step_ms']:>9.2f} "
              f"{oh:>9} {row['mix_ms_per_batch']:>8.3f} {row['mix_pct_of_vanilla_step']:>8.1f}%")
    print("overhead: step-time difference to vanilla in the full train loop (noisy on a shared machine);\n"
          "mix ms: the mixing call alone on one batch of the run's shape (median of many), mix/step: its share "
          "of the vanilla step")
    write_json_atomic(args.out, result)
    print(f"\nwrote {args.out}")
    return result


if __name__ == "__main__":
    main()
