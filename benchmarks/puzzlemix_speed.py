"""PuzzleMix speed: mixing time per batch against per-sample CPU graph cuts, and the train step
as a ratio of the vanilla step. A measurement, not a test.

    python benchmarks/puzzlemix_speed.py --threads 1          # CPU, both input sizes, all grids
    python benchmarks/puzzlemix_speed.py --device cuda --repeats 20
    python benchmarks/puzzlemix_speed.py --quick              # fewer repeats, smaller step model

Part 1 - mixing time per batch (the saliency pass excluded), per grid size n and averaged over
the authors' uniform draw of n in {2, 4, 8, 16}, at 128x3x32x32 and 64x3x224x224:
  * ours: ``PuzzleMix.apply`` (costs, batched labelling, transport, mix) on ``--device``;
  * baseline "authors": the authors' pipeline re-implemented - the same costs, the labelling
    solved per sample on the CPU by alpha-beta swap moves (the authors' gco algorithm, each move
    an exact PyMaxflow min-cut), their greedy transport on the full (B, N, N) cost matrix for
    every round (``puzzle_reference.transport_order_full``), blocks moved by their plan-matrix
    product and mixed through a full-size pixel mask;
  * baseline "swap": our pipeline with only the labelling replaced by the per-sample alpha-beta
    swap (isolates the labelling; the transport and image work are ours and shared);
  * baseline "exact": the same with one exact PyMaxflow min-cut per sample (Ishikawa graph).
Part 2 - train step (ResNet-18, CIFAR stem, 100 classes, SGD) on 128x3x32x32: vanilla step,
saliency pass, labelling + transport, and the whole PuzzleMix step.

Prints tables and writes JSON (``--out``, default results/benchmarks/puzzlemix_speed.json; the
committed run is benchmarks/results/puzzlemix_speed.json).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the per-sample reference solvers

from timing import interleaved, ratio_stats  # noqa: E402  (benchmarks/timing.py)
from openmix.files import write_json_atomic  # noqa: E402
from openmix.ops import puzzle as ops  # noqa: E402
from openmix.policies import puzzlemix as puzzlemix_module  # noqa: E402
from openmix.policies.puzzlemix import PuzzleMix  # noqa: E402


def make_batch(b: int, size: int, device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.rand(b, 3, 8, 8, generator=g), size=(size, size), mode="bilinear", align_corners=False)
    x = (x + 0.1 * torch.rand(b, 3, size, size, generator=g)).clamp(0, 1)
    s = F.interpolate(torch.rand(b, 1, 6, 6, generator=g) ** 3, size=(size, size), mode="bilinear",
                      align_corners=False).squeeze(1)
    y = torch.randint(0, 100, (b,), generator=g)
    return x.to(device), y.to(device), s.to(device)


def _costs(policy: PuzzleMix, x, s, params):
    n = params["grid"].shape[1]
    index = params["index"]
    sal_block = ops.block_saliency(s, n)
    dv, dh = ops.boundary_differences(x, index, n, policy.neigh_size)
    return sal_block, ops.labelling_costs(sal_block, sal_block[index], dv, dh,
                                          params["lam"].clamp(1e-6, 1 - 1e-6), policy.n_labels,
                                          policy.beta, policy.gamma, policy.eta)


def baseline_mix(policy: PuzzleMix, x, s, params, solver):
    """PuzzleMix.apply with only the labelling replaced by a per-sample CPU solver (round trip included)."""
    def per_sample(unary, wv, wh, iters=-1):
        return solver(unary, wv, wh).to(unary.device)          # .cpu() inside: the authors' round trip

    with mock.patch.object(puzzlemix_module, "solve_labelling", per_sample):
        return policy.apply(x, params, saliency=s)[0]


def _plan_transport(x, src, t):
    """The authors' image transport: a one-hot plan (B, N, N) applied by a batched matrix product."""
    b, c, h, w = x.shape
    nb = t * t
    plan = torch.zeros(b, nb, nb, dtype=x.dtype, device=x.device).scatter_(1, src.unsqueeze(1), 1.0)
    blocks = x.reshape(b, c, t, h // t, t, w // t).permute(0, 2, 4, 1, 3, 5).reshape(b, nb, -1)
    moved = plan.transpose(1, 2) @ blocks
    return moved.reshape(b, t, t, c, h // t, w // t).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


def authors_mix(policy: PuzzleMix, x, s, params):
    """The authors' pipeline: per-sample alpha-beta swap, full-matrix greedy transport, plan product."""
    from puzzle_reference import solve_labelling_swap, transport_order_full
    b, c, h, w = x.shape
    n = params["grid"].shape[1]
    index = params["index"]
    sal_block, costs = _costs(policy, x, s, params)
    labels = solve_labelling_swap(*costs).to(x.device)
    block_mask = labels.to(x.dtype) / (policy.n_labels - 1)
    t = policy.transport_grid(n, h, w)
    mask_t = F.interpolate(block_mask.unsqueeze(1), size=(t, t), mode="nearest").squeeze(1)
    sal_t = ops.block_saliency(s, t) if t != n else sal_block
    own = _plan_transport(x, transport_order_full(mask_t > 0, sal_t, policy.t_eps), t)
    partner = _plan_transport(x[index], transport_order_full(mask_t < 1, sal_t[index], policy.t_eps), t)
    mask = F.interpolate(mask_t.unsqueeze(1), size=(h, w), mode="nearest")
    return mask * own + (1 - mask) * partner


def mixing_table(device, repeats: int, sizes, grids):
    from puzzle_reference import solve_labelling_exact, solve_labelling_swap
    rows = []
    for b, size in sizes:
        x, y, s = make_batch(b, size, device)
        for n in grids:
            policy = PuzzleMix(grid_sizes=(n,), t_size=4 if size <= 64 else -1, seed=0)
            g = torch.Generator(device="cpu").manual_seed(0)
            params = policy.sample_params(x.shape, g, y)
            params = {k: v.to(device) for k, v in params.items()}
            _, costs = _costs(policy, x, s, params)
            # called in turn within each round: every ratio compares calls made under the same load
            times = interleaved({
                "ours": lambda: policy.apply(x, params, saliency=s),
                "authors": lambda: authors_mix(policy, x, s, params),
                "swap": lambda: baseline_mix(policy, x, s, params, solve_labelling_swap),
                "exact": lambda: baseline_mix(policy, x, s, params, solve_labelling_exact),
                "label_ours": lambda: ops.solve_labelling(*costs),
                "label_swap": lambda: solve_labelling_swap(*costs),
                "label_exact": lambda: solve_labelling_exact(*costs)}, device, repeats)
            row = {"batch": f"{b}x3x{size}x{size}", "grid": n}
            row.update({f"{k}_ms": statistics.median(v) * 1e3 for k, v in times.items()})
            for k in ("authors", "swap", "exact"):
                row[f"speedup_vs_{k}"] = ratio_stats(times[k], times["ours"])["median"]
            for k in ("swap", "exact"):
                row[f"label_speedup_vs_{k}"] = ratio_stats(times[f"label_{k}"], times["label_ours"])["median"]
            rows.append(row)
        part = [r for r in rows if r["batch"] == f"{b}x3x{size}x{size}"]
        # the authors draw n uniformly from {2, 4, 8, 16}: the expected time per batch is the mean
        mean = {k: statistics.mean(r[k] for r in part) for k in part[0] if k.endswith("_ms")}
        mean.update({f"speedup_vs_{k}": mean[f"{k}_ms"] / mean["ours_ms"] for k in ("authors", "swap", "exact")})
        mean.update({f"label_speedup_vs_{k}": mean[f"label_{k}_ms"] / mean["label_ours_ms"] for k in ("swap", "exact")})
        rows.append({"batch": f"{b}x3x{size}x{size}", "grid": "mean(2,4,8,16)", **mean})
    return rows


def cifar_resnet18(num_classes: int = 100):
    import torchvision
    net = torchvision.models.resnet18(num_classes=num_classes)
    net.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    net.maxpool = torch.nn.Identity()
    return net


def step_table(device, repeats: int, batch: int, quick: bool):
    import openmix
    from openmix.train.engine import input_saliency
    import contextlib
    torch.manual_seed(0)
    model = cifar_resnet18().to(device) if not quick else torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(32, 64, 3, stride=2, padding=1),
        torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(64, 100)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = openmix.build_loss("soft_ce")
    x, y, _ = make_batch(batch, 32, device)
    policy = PuzzleMix(seed=0)
    vanilla = openmix.build_policy("vanilla")

    def train_on(mb):
        out = model(mb.x)
        loss = loss_fn(out, mb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    gen = torch.Generator().manual_seed(0)
    saliency, _ = input_saliency(model, x, y, "classification", contextlib.nullcontext)

    def puzzle_step():
        s, _ = input_saliency(model, x, y, "classification", contextlib.nullcontext)
        train_on(policy(x, y, generator=gen, saliency=s))

    times = interleaved({
        "vanilla": lambda: train_on(vanilla(x, y)),
        "saliency": lambda: input_saliency(model, x, y, "classification", contextlib.nullcontext),
        "mix": lambda: policy(x, y, generator=gen, saliency=saliency),
        "step": puzzle_step}, device, repeats)
    t_vanilla, t_saliency, t_mix, t_step = (statistics.median(times[k]) for k in ("vanilla", "saliency", "mix", "step"))
    return {"model": "resnet18-cifar" if not quick else "small-cnn", "batch": f"{batch}x3x32x32",
            "vanilla_step_ms": t_vanilla * 1e3, "saliency_pass_ms": t_saliency * 1e3,
            "labelling_and_transport_ms": t_mix * 1e3, "puzzlemix_step_ms": t_step * 1e3,
            # the grid is drawn per call, so the expected cost is a ratio of mean times
            "mix_over_vanilla": ratio_stats(times["mix"], times["vanilla"])["ratio_of_means"],
            "step_over_vanilla": ratio_stats(times["step"], times["vanilla"])["ratio_of_means"]}


def print_table(rows, keys):
    widths = [max(len(k), *(len(f"{r[k]:.2f}" if isinstance(r[k], float) else str(r[k])) for r in rows)) for k in keys]
    print("  ".join(k.ljust(w) for k, w in zip(keys, widths)))
    for r in rows:
        print("  ".join((f"{r[k]:.2f}" if isinstance(r[k], float) else str(r[k])).ljust(w) for k, w in zip(keys, widths)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    ap.add_argument("--quick", action="store_true", help="fewer repeats, a small CNN for the step ratio")
    ap.add_argument("--skip-step", action="store_true")
    ap.add_argument("--out", default="results/benchmarks/puzzlemix_speed.json",
                    help="JSON output (default under the git-ignored results/; the committed figures are "
                         "benchmarks/results/puzzlemix_speed.json)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    repeats = 2 if args.quick else args.repeats
    result = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
              "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    print(f"PuzzleMix mixing time per batch ({device}, {torch.get_num_threads()} threads; saliency excluded)")
    rows = mixing_table(device, repeats, [(128, 32), (64, 224)], (2, 4, 8, 16))
    print_table(rows, ["batch", "grid", "ours_ms", "authors_ms", "speedup_vs_authors", "swap_ms", "speedup_vs_swap",
                       "exact_ms", "speedup_vs_exact", "label_ours_ms", "label_swap_ms", "label_speedup_vs_swap",
                       "label_exact_ms", "label_speedup_vs_exact"])
    result["mixing"] = rows
    if not args.skip_step:
        print("\nPuzzleMix train step vs vanilla")
        step = step_table(device, repeats, 128, args.quick)
        print_table([step], list(step))
        result["step"] = step
    write_json_atomic(args.out, result)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
