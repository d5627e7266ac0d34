"""Extra cost per training step of every registered policy against mixup. A measurement, not a test.

    python benchmarks/step_cost.py                       # CNN and ViT, 64 x 3 x 32 x 32, CPU
    python benchmarks/step_cost.py --device cuda --rounds 30
    python benchmarks/step_cost.py --quick               # small models, few rounds (smoke run)

Each policy is built from its ``configs/mix/NAME.yaml`` (the defaults ``openmix-train mix=NAME``
uses; every name ``openmix.list_policies()`` returns at run time, learned mixers included) and
trained by the trainer's own ``Engine.train_step`` on the same batch and model (each policy its own
copy of the same initial weights and its own SGD): input-level policies mix on the device
(``mix.where=device``), saliency policies take the engine's extra saliency pass, feature-level
policies mix inside the forward, step policies run their own ``training_step``. Two models:

- ``cnn``: openmix's small_cnn (width 32, the trainer's default) on 3 x 32 x 32;
- ``vit``: timm ``vit_tiny_patch16_224`` with ``img_size=32, patch_size=4, depth=4`` (the ViT-only
  policies, TransMix and SMMix, run here; policies that cannot run on a model are listed as such).

All steps of one model are called in turn within each of ``--rounds`` rounds (``timing.interleaved``),
so each sees the same machine load; the cost of a policy is the per-round ratio of its step time to
mixup's step time (median and quartiles; also the ratio of the mean times, the right figure for
policies that switch between branches per batch: SMMix, AlignMix, choice). Prints a table,
writes JSON and a PNG chart (``--out``, default ``results/benchmarks/step_cost.json`` / ``.png``, an ignored folder; the
committed run is ``benchmarks/results/step_cost.{json,png}``).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timing import interleaved, ratio_stats  # noqa: E402  (benchmarks/timing.py)
import openmix  # noqa: E402
from openmix.files import write_bytes_atomic, write_json_atomic  # noqa: E402

REFERENCE = "mixup"


def policy_from_yaml(name: str):
    """The policy as ``openmix-train mix=NAME`` builds it (YAML defaults, seed 0)."""
    from omegaconf import OmegaConf
    from openmix.paths import config_dir
    path = config_dir() / "mix" / f"{name}.yaml"
    kwargs = {}
    if path.exists():
        kwargs = OmegaConf.to_container(OmegaConf.load(path))
        kwargs = {k: v for k, v in kwargs.items() if k not in ("name", "where")}
    from openmix.train.settings import accepted_arguments
    if "seed" in accepted_arguments(openmix.policies.POLICIES.get(name)):
        kwargs["seed"] = 0
    return openmix.build_policy(name, **kwargs)


def build_models(quick: bool, num_classes: int) -> dict:
    import timm
    from openmix.train.models import build_model
    torch.manual_seed(0)
    width = 16 if quick else 32
    vit = dict(img_size=32, patch_size=4, depth=2 if quick else 4, num_classes=num_classes)
    if quick:
        vit.update(embed_dim=64, num_heads=2)
    return {"cnn": build_model("small_cnn", (3, 32, 32), num_classes, width=width),
            "vit": timm.create_model("vit_tiny_patch16_224", **vit)}


def make_engine(model, policy, device, num_classes: int):
    """The trainer's Engine around ``model`` (a fresh copy) and ``policy``, without data or loaders."""
    from openmix.features import MixNet
    from openmix.train.engine import Engine
    net = MixNet(copy.deepcopy(model)).to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    mixer = openmix.DeviceMixer(policy, device=device) if getattr(policy, "needs", "input") == "input" else None
    run = SimpleNamespace(
        settings=SimpleNamespace(trainer=SimpleNamespace(channels_last=False, clip_grad=None, ema={"eval": False})),
        data=SimpleNamespace(task="classification", mean=None, std=None, target_mean=0.0, target_std=1.0,
                             num_classes=num_classes),
        net=net, train_module=net, policy=policy, loss_fn=openmix.build_loss("soft_ce"), optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0),
        scaler=torch.amp.GradScaler(device.type, enabled=False), device=device, device_mixer=mixer,
        amp_dtype=None, ema=None, dist=SimpleNamespace(enabled=False, rank=0, world_size=1))
    return Engine(run)


def steps_for(model_name: str, model, names: list, batch, device, num_classes: int) -> tuple[dict, dict]:
    """{policy: step function} for the policies that run on ``model``, and {policy: why not} for the rest."""
    steps, skipped = {}, {}
    for name in names:
        try:
            engine = make_engine(model, policy_from_yaml(name), device, num_classes)
            engine.train_step(batch)                  # one real step: fails here if the model does not fit
        except Exception as exc:  # noqa: BLE001 - a policy that cannot run on this model is reported, not fatal
            skipped[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
            continue
        steps[name] = (lambda e=engine: e.train_step(batch))
    return steps, skipped


def measure(model_name, model, names, batch, device, rounds, num_classes) -> dict:
    steps, skipped = steps_for(model_name, model, names, batch, device, num_classes)
    if REFERENCE not in steps:
        raise RuntimeError(f"{REFERENCE} could not run on {model_name}: {skipped.get(REFERENCE)}")
    times = interleaved(steps, device, rounds)
    rows = {}
    for name, series in times.items():
        stats = ratio_stats(series, times[REFERENCE])
        policy = policy_from_yaml(name)
        rows[name] = {"needs": getattr(policy, "needs", "input"), "ms_median": statistics.median(series) * 1e3,
                      "ratio_median": stats["median"], "ratio_q1": stats["q1"], "ratio_q3": stats["q3"],
                      "ratio_of_means": stats["ratio_of_means"], "extra_vs_mixup": stats["median"] - 1.0}
    return {"policies": rows, "not_applicable": skipped}


def chart(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    models = list(results["models"])
    fig, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 0.32 * max(
        len(results["models"][m]["policies"]) for m in models) + 1.6), squeeze=False)
    colours = {"input": "tab:blue", "saliency": "tab:orange", "features": "tab:red", "step": "tab:green"}
    for ax, model in zip(axes[0], models):
        rows = sorted(results["models"][model]["policies"].items(), key=lambda kv: kv[1]["ratio_median"])
        names = [n for n, _ in rows]
        med = [r["ratio_median"] for _, r in rows]
        err = [[r["ratio_median"] - r["ratio_q1"] for _, r in rows], [r["ratio_q3"] - r["ratio_median"] for _, r in rows]]
        ax.barh(names, med, xerr=err, color=[colours.get(r["needs"], "grey") for _, r in rows], capsize=2)
        ax.axvline(1.0, color="black", lw=0.8)
        ax.set_xlabel("step time / mixup step time (median over rounds, bars: quartiles)")
        ax.set_title(f"{model}: {results['models'][model]['model']}", fontsize=9)
        skipped = sorted(results["models"][model]["not_applicable"])
        if skipped:
            ax.text(0.99, 0.01, "cannot run on this model: " + ", ".join(skipped), transform=ax.transAxes,
                    ha="right", va="bottom", fontsize=7, color="dimgray")
        ax.tick_params(axis="y", labelsize=8)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colours.values()]
    fig.legend(handles, list(colours), loc="lower center", ncol=4, fontsize=8, title="policy.needs")
    fig.suptitle(f"Training-step cost against mixup ({results['device']}, batch {results['batch']})", fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 0.96))
    import io
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: 1 on the CPU, where a shared machine makes more threads spin)")
    ap.add_argument("--policies", nargs="*", default=None, help="default: every registered policy")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="results/benchmarks/step_cost.json")
    args = ap.parse_args(argv)
    device, num_classes = torch.device(args.device), 10
    threads = args.threads if args.threads is not None else (1 if device.type == "cpu" else 0)
    if threads:
        torch.set_num_threads(threads)
    names = args.policies or [n for n in openmix.list_policies() if not n.startswith("_")]
    if REFERENCE not in names:
        names = [REFERENCE, *names]
    g = torch.Generator().manual_seed(0)
    batch = (torch.randn(args.batch, 3, 32, 32, generator=g).to(device),
             torch.randint(0, num_classes, (args.batch,), generator=g).to(device))
    rounds = 3 if args.quick else args.rounds
    results = {"device": str(device), "threads": torch.get_num_threads(), "rounds": rounds,
               "batch": f"{args.batch}x3x32x32", "reference": REFERENCE, "models": {}}
    descriptions = {"cnn": "small_cnn", "vit": "vit_tiny_patch16_224 img 32 patch 4"}
    for model_name, model in build_models(args.quick, num_classes).items():
        out = measure(model_name, model, names, batch, device, rounds, num_classes)
        results["models"][model_name] = {"model": descriptions[model_name], **out}
        print(f"\n{model_name} ({descriptions[model_name]}), {rounds} rounds, step time / {REFERENCE}:")
        print(f"{'policy':14s} {'needs':9s} {'ms':>8s} {'ratio':>7s} {'q1':>6s} {'q3':>6s} {'of means':>9s}")
        for name, r in sorted(out["policies"].items(), key=lambda kv: kv[1]["ratio_median"]):
            print(f"{name:14s} {r['needs']:9s} {r['ms_median']:8.1f} {r['ratio_median']:7.2f} "
                  f"{r['ratio_q1']:6.2f} {r['ratio_q3']:6.2f} {r['ratio_of_means']:9.2f}")
        for name, why in out["not_applicable"].items():
            print(f"{name:14s} not applicable: {why}")
    write_json_atomic(Path(args.out), results)
    chart(results, Path(args.out).with_suffix(".png"))
    print(f"wrote {args.out} and {Path(args.out).with_suffix('.png')}")


if __name__ == "__main__":
    main()
