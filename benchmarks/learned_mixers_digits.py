"""Learned mixers (automix, samix, adautomix) against mixup on digits: accuracy and time per epoch.
A measurement, not a test.

    python benchmarks/learned_mixers_digits.py                      # 3 seeds x 20 epochs, default configs
    python benchmarks/learned_mixers_digits.py --seeds 0 1 2 3 4 --epochs 20 --out results.json

Each seed is one round: every method trains once with that seed (``openmix-train data=digits
mix=NAME trainer.epochs=E seed=S``, the default config otherwise), in turn, so that all methods of a
round see the same machine load. Per method: the selected test top-1 (best validation epoch; never
reads test) and the final-epoch top-1, mean ± sample std over seeds; the training seconds per
epoch; the time ratio to mixup computed per round (mean ± std of the per-round ratios); and, for the
learned mixers, what the mixer learned: the mean and the within-row spread of its masks for the
probe pairs after the last epoch, and the own-mask mean for λ = 0.1 / 0.5 / 0.9. Prints a table and
writes JSON (``--out``).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from openmix.files import write_json_atomic  # noqa: E402
from openmix.policies.learned_mixer import Draw, LearnedMixer  # noqa: E402
from openmix.train import compose_config, train  # noqa: E402

METHODS = ("mixup", "automix", "samix", "adautomix")


def mixer_report(policy: LearnedMixer) -> dict:
    """What the trained mixer does on its probe rows (eval mode): own-mask mean and within-row std
    at λ = 1/K each, and the own-mask mean at λ = 0.1 / 0.5 / 0.9 (the rest shared equally)."""
    x = policy._probe["x"].to(policy._device)
    n, k = x.shape[0], policy.num_samples
    out = {}
    with torch.no_grad():
        policy.mixer.eval()
        policy.encoder.module.eval()
        feats = policy.encoder.features(x, policy.stage).float()
        for lam in (1.0 / k, 0.1, 0.5, 0.9):
            lams = torch.full((n, k), (1.0 - lam) / (k - 1))
            lams[:, 0] = lam
            masks = policy.masks(feats, Draw(policy._probe["indices"], lams, torch.zeros(n, dtype=torch.bool)),
                                 x.shape[2:])[:, 0]
            out[f"own_mean_lam_{lam:.2f}"] = float(masks.mean())
            out[f"within_row_std_lam_{lam:.2f}"] = float(masks.flatten(1).std(dim=1).mean())
        policy.mixer.train()
        policy.encoder.module.train()
    return out


def run_one(method: str, seed: int, epochs: int, folder: Path) -> dict:
    holder = {}
    original = LearnedMixer.setup

    def setup(self, ctx):
        holder["policy"] = self
        return original(self, ctx)

    LearnedMixer.setup = setup
    try:
        s = train(compose_config([f"mix={method}", "data=digits", f"trainer.epochs={epochs}", f"seed={seed}",
                                  "trainer.progress=false", "trainer.summary=false", "trainer.tensorboard=false",
                                  f"trainer.out_dir={folder / f'{method}_{seed}'}"]))
    finally:
        LearnedMixer.setup = original
    row = {"method": method, "seed": seed, "selected_top1": s["selected"]["test"]["top1"],
           "final_top1": s["final"]["top1"],
           "seconds_per_epoch": statistics.fmean(h["train_seconds"] for h in s["history"])}
    if "policy" in holder:
        row["mixer"] = mixer_report(holder["policy"])
    return row


def summarise(rows: list, methods: tuple) -> dict:
    def stats(values):
        return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "n": len(values)}
    base = {r["seed"]: r["seconds_per_epoch"] for r in rows if r["method"] == "mixup"}
    out = {}
    for m in methods:
        mine = [r for r in rows if r["method"] == m]
        entry = {k: stats([r[k] for r in mine]) for k in ("selected_top1", "final_top1", "seconds_per_epoch")}
        if base:
            entry["time_ratio_to_mixup"] = stats([r["seconds_per_epoch"] / base[r["seed"]] for r in mine])
        if mine and "mixer" in mine[0]:
            entry["mixer"] = {k: stats([r["mixer"][k] for r in mine]) for k in mine[0]["mixer"]}
        out[m] = entry
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--out", default="results/benchmarks/learned_mixers_digits.json")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for method in args.methods:
                rows.append(run_one(method, seed, args.epochs, Path(tmp)))
                r = rows[-1]
                print(f"seed {seed} {method:10s} selected {r['selected_top1']:.2f} final {r['final_top1']:.2f} "
                      f"{r['seconds_per_epoch']:.2f} s/epoch", flush=True)
    summary = summarise(rows, tuple(args.methods))
    print(f"\n{'method':10s} {'selected top-1':>16s} {'final top-1':>16s} {'s/epoch':>12s} {'time / mixup':>14s}")
    for m, e in summary.items():
        ratio = e.get("time_ratio_to_mixup", {"mean": float("nan"), "std": float("nan")})
        print(f"{m:10s} {e['selected_top1']['mean']:7.2f} ± {e['selected_top1']['std']:5.2f} "
              f"{e['final_top1']['mean']:7.2f} ± {e['final_top1']['std']:5.2f} "
              f"{e['seconds_per_epoch']['mean']:5.2f} ± {e['seconds_per_epoch']['std']:4.2f} "
              f"{ratio['mean']:6.2f} ± {ratio['std']:4.2f}")
    result = {"config": {"seeds": args.seeds, "epochs": args.epochs, "data": "digits", "model": "small_cnn (auto)",
                         "torch_threads": torch.get_num_threads()},
              "rows": rows, "summary": summary}
    write_json_atomic(args.out, result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
