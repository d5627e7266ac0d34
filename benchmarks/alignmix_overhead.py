"""AlignMix overhead per training step against a vanilla step. A measurement, not a test.

    python benchmarks/alignmix_overhead.py                    # ResNet-18 (CIFAR stem), 128x3x32x32
    python benchmarks/alignmix_overhead.py --device cuda --repeats 20
    python benchmarks/alignmix_overhead.py --quick            # small CNN

Steps timed (forward + backward + SGD update), called in turn within each of ``--rounds`` rounds
so that all of them see the same machine load:
  * vanilla: the model on the clean batch;
  * align: AlignMix forced to align the last feature map (p_align = 1: the Sinkhorn step runs
    every iteration; the worst case);
  * alignmix: the authors' setting (p_align = 0.5: input mixup or alignment, drawn per step);
  * alignment: the alignment alone (cost, Sinkhorn, mixing) on the last feature map.
Overhead = step / vanilla - 1 from the per-round ratios (median and quartiles) and from the
ratio of the mean times (the right figure for the p_align = 0.5 mixture). Prints a table and
writes JSON (``--out``).
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timing import interleaved, ratio_stats  # noqa: E402  (benchmarks/timing.py)
import openmix  # noqa: E402
from openmix.files import write_json_atomic  # noqa: E402
from openmix.policies.alignmix import AlignMix  # noqa: E402


class Split(nn.Module):
    """stages + head, with an optional mixing hook after stage k (like the engine's MixNet)."""

    def __init__(self, stages, head):
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.head = head

    def forward(self, x, stage=0, mix=None):
        for k, s in enumerate(self.stages, start=1):
            x = s(x)
            if mix is not None and k == stage:
                x = mix(x)
        return self.head(x)


def resnet18_split(num_classes=100):
    import torchvision
    net = torchvision.models.resnet18(num_classes=num_classes)
    net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.layer1)
    return Split([stem, net.layer2, net.layer3, net.layer4],
                 nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), net.fc))


def small_split(num_classes=100):
    return Split([nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU()),
                  nn.Sequential(nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU()),
                  nn.Sequential(nn.Conv2d(64, 128, 3, stride=2, padding=1), nn.ReLU()),
                  nn.Sequential(nn.Conv2d(128, 256, 3, stride=2, padding=1), nn.ReLU())],
                 nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, num_classes)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="results/benchmarks/alignmix_overhead.json",
                    help="JSON output (default under the git-ignored results/; the committed figures are "
                         "benchmarks/results/alignmix_overhead.json)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = (small_split() if args.quick else resnet18_split()).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = openmix.build_loss("soft_ce")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 100, (args.batch,), generator=g).to(device)
    n_stages = len(model.stages)

    def step(policy):
        if policy is None:
            mb, out = openmix.MixedBatch(x=x, y=y, index=torch.arange(args.batch, device=device),
                                         lam=torch.ones(args.batch, device=device)), model(x)
        else:
            plan = policy.plan(x, y, num_stages=n_stages)
            if plan.stage == 0:
                xm = plan.mix_input(x)
                out, mb = model(xm), plan.batch(xm, y)
            else:
                out = model(x, stage=plan.stage, mix=lambda h: policy.mix_features(h, plan))
                mb = plan.batch(x, y)
        loss = loss_fn(out, mb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    align_always = AlignMix(p_align=1.0, seed=0)
    authors = AlignMix(seed=0)
    with torch.no_grad():
        h = x
        for s in model.stages:
            h = s(h)
    plan = align_always.plan(x, y, num_stages=n_stages)
    rounds = 3 if args.quick else args.rounds
    times = interleaved({"vanilla": lambda: step(None), "align": lambda: step(align_always),
                         "alignmix": lambda: step(authors), "alignment": lambda: align_always.mix_features(h, plan)},
                        device, rounds)
    align, mixture, alone = (ratio_stats(times[k], times["vanilla"]) for k in ("align", "alignmix", "alignment"))
    row = {"device": str(device), "threads": torch.get_num_threads(), "rounds": rounds,
           "model": "small-cnn" if args.quick else "resnet18-cifar", "batch": f"{args.batch}x3x32x32",
           "feature_map": list(h.shape[1:]),
           "vanilla_ms_median": statistics.median(times["vanilla"]) * 1e3,
           "alignment_only_ms_median": statistics.median(times["alignment"]) * 1e3,
           "overhead_align_every_step": align["median"] - 1,
           "overhead_align_every_step_q1_q3": [align["q1"] - 1, align["q3"] - 1],
           "overhead_alignmix_p0.5": mixture["ratio_of_means"] - 1,
           "alignment_over_vanilla": alone["median"],
           "alignment_over_vanilla_q1_q3": [alone["q1"], alone["q3"]]}
    for k, v in row.items():
        print(f"{k:34s} {v:.4f}" if isinstance(v, float) else f"{k:34s} {v}")
    write_json_atomic(args.out, row)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
