"""Time to mix one batch, for every registered static (input-level) policy and mode, as a ratio
to copying the batch, measured in the same interleaved rounds. A measurement, not a test.

    python benchmarks/mixing_speed.py                  # 32, 64, 224 px; 1 thread and all threads
    python benchmarks/mixing_speed.py --quick          # fewer rounds, a minute or so
    python benchmarks/mixing_speed.py --sizes 224 --threads 1 --rounds 30
    python benchmarks/mixing_speed.py --baseline /tmp/old   # /tmp/old/openmix: an older export

Batches: 256x3x32x32, 128x3x64x64 and 64x3x224x224 float32 (uniform noise, 10 classes).
Allocator state. What a fresh output costs depends on where its memory comes from: memory the
process freed earlier is already paged in (warm), memory new from the kernel faults in page by
page (cold; 5x a warm copy at 224 px on a 2-core VM). Left alone, glibc's state drifts with
the calls made before, so each allocating call is timed in both states, each against the
floor in the same state:
  * warm: the script asks glibc to keep freed memory (``mallopt``), as a training loop's steady
    state or a caching allocator would; floor ``x.clone()``;
  * cold (entries ending in ``cold``): ``malloc_trim(0)`` returns freed memory to the OS just
    before each call; floor ``x.clone() cold``.
  * ``copy_ into buffer``: ``out.copy_(x)`` into a buffer reused across calls, the floor of
    ``out=`` calls.
Entries: ``policy(x, y)`` and ``policy(x, y)`` cold; ``policy(x, y, out=buf)`` against ``copy_``;
``channels_last`` inputs (batch and elem modes; the output layout is recorded); timm's ``Mixup``
(batch and elem; it mixes in place, so each call gets a fresh copy made untimed) and
torchvision's v2 ``MixUp``/``CutMix``. The uint8 collate path: ``MixCollate`` against timm's
``FastCollateMixup`` on the same list of uint8 numpy samples.

Ratios are medians of per-round ratios (``timing.ratio_stats``); ``x_<floor>_best`` in the JSON
is the fastest round over the floor's fastest, the cost with the least interference from other
load. Writes JSON (``--out``, default results/benchmarks/mixing_speed_cpu.json, an ignored folder;
the committed runs are in benchmarks/results/) and a PNG chart
next to it, and prints a table and the goals of issue 19 with the worst ratio against each.
"""
from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import openmix  # noqa: E402
from openmix.files import write_json_atomic  # noqa: E402
from timing import interleaved, ratio_stats  # noqa: E402  (benchmarks/timing.py)

SHAPES = {32: (256, 3, 32, 32), 64: (128, 3, 64, 64), 224: (64, 3, 224, 224)}
MODES = ("batch", "pair", "elem")
CHOICE = [{"name": "mixup", "alpha": 0.8}, {"name": "cutmix", "alpha": 1.0}]   # configs/mix/choice.yaml
NUM_CLASSES = 10
_LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if ctypes.util.find_library("c") else None
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3        # glibc's malloc.h


def keep_freed_memory() -> bool:
    """Asks glibc to serve every allocation from its heap and never give freed memory back on
    its own (the warm state); True when it accepted."""
    if _LIBC is None or not hasattr(_LIBC, "mallopt"):
        return False
    return bool(_LIBC.mallopt(M_MMAP_THRESHOLD, 1 << 30)) and bool(_LIBC.mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1))


def load_baseline(path: str):
    """The ``openmix`` package found in directory ``path`` (e.g. an export of an older commit),
    imported as ``openmix_baseline`` beside the current one (its imports must be relative)."""
    import importlib.util
    init = Path(path) / "openmix" / "__init__.py"
    spec = importlib.util.spec_from_file_location("openmix_baseline", init,
                                                  submodule_search_locations=[str(init.parent)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["openmix_baseline"] = module
    spec.loader.exec_module(module)
    return module


def baseline_entries(baseline, names: List[str], x, y):
    """The baseline's allocating calls, ``before <policy> <mode>`` (warm) and ``... cold``, for
    the policies it has; ({entry: fn}, {entry: prepare}, {entry: info})."""
    fns, prepare, info = {}, {}, {}
    for name in names:
        if name == "vanilla" or name not in baseline.list_policies():
            continue
        for mode in MODES:
            kwargs = dict(policies=[dict(p, mode=mode) for p in CHOICE]) if name == "choice" else dict(mode=mode)
            policy = baseline.build_policy(name, seed=0, **kwargs)
            fns[f"before {name} {mode}"] = (lambda p: lambda: p(x, y))(policy)
            info[f"before {name} {mode}"] = dict(policy=name, mode=mode, variant="before")
            if _LIBC is not None:
                fns[f"before {name} {mode} cold"] = fns[f"before {name} {mode}"]
                prepare[f"before {name} {mode} cold"] = trim
                info[f"before {name} {mode} cold"] = dict(policy=name, mode=mode, variant="before cold")
    return fns, prepare, info


def static_policy_names() -> List[str]:
    """Every registered policy that mixes inputs alone (needs == "input"), vanilla included."""
    names = []
    for name in openmix.list_policies():
        try:
            policy = build(name, "batch")
        except (TypeError, ValueError) as error:      # needs arguments this script cannot guess
            print(f"skipping {name}: {error}", file=sys.stderr)
            continue
        if getattr(policy, "needs", None) == "input":
            names.append(name)
    return names


def build(name: str, mode: str):
    if name == "choice":
        return openmix.build_policy("choice", policies=[dict(p, mode=mode) for p in CHOICE], seed=0)
    return openmix.build_policy(name, mode=mode, seed=0)


def takes_out(policy, x, y) -> bool:
    try:
        policy(x[:2], y[:2], out=torch.empty_like(x[:2]))
    except TypeError:
        return False
    return True


def trim() -> None:
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def floor_entries(x: torch.Tensor, buf: torch.Tensor):
    fns = {"x.clone()": lambda: x.clone(), "copy_ into buffer": lambda: buf.copy_(x)}
    prepare = {}
    if _LIBC is not None:
        fns["x.clone() cold"] = lambda: x.clone()
        prepare["x.clone() cold"] = trim
    return fns, prepare


def policy_entries(names: List[str], x, y, buf, x_cl):
    """{entry: fn}, {entry: prepare} and {entry: info} for every policy and mode (allocating warm
    and cold, out=, channels_last)."""
    fns, prepare, info = {}, {}, {}
    for name in names:
        for mode in MODES:
            policy = build(name, mode)
            key = f"{name} {mode}"
            fns[key] = (lambda p: lambda: p(x, y))(policy)
            info[key] = dict(policy=name, mode=mode, variant="alloc")
            if _LIBC is not None and name != "vanilla":
                fns[key + " cold"], prepare[key + " cold"] = fns[key], trim
                info[key + " cold"] = dict(policy=name, mode=mode, variant="alloc cold")
            if name != "vanilla" and takes_out(policy, x, y):   # vanilla returns x; out= is moot
                fns[key + " out="] = (lambda p: lambda: p(x, y, out=buf))(policy)
                info[key + " out="] = dict(policy=name, mode=mode, variant="out")
            if x_cl is not None and mode != "pair" and name != "vanilla":
                fns[key + " channels_last"] = (lambda p: lambda: p(x_cl, y))(policy)
                info[key + " channels_last"] = dict(policy=name, mode=mode, variant="channels_last",
                                                    keeps_channels_last=keeps_channels_last(policy, x_cl, y))
    return fns, prepare, info


def keeps_channels_last(policy, x_cl, y) -> bool:
    out = policy(x_cl, y, generator=torch.Generator().manual_seed(1)).x
    return bool(out.is_contiguous(memory_format=torch.channels_last))


def inplace_entries(x: torch.Tensor, y: torch.Tensor):
    """mixup and CutMix built with inplace=True, like timm's Mixup (an untimed fresh copy per call)."""
    work = torch.empty_like(x)
    fns, prepare, info = {}, {}, {}
    for name in ("mixup", "cutmix"):
        for mode in ("batch", "elem"):
            policy = openmix.build_policy(name, mode=mode, seed=0, inplace=True)
            key = f"{name} {mode} inplace"
            fns[key] = (lambda p: lambda: p(work, y))(policy)
            prepare[key] = lambda: work.copy_(x)
            info[key] = dict(policy=name, mode=mode, variant="inplace")
    return fns, prepare, info


def peer_entries(x: torch.Tensor, y: torch.Tensor):
    """timm's Mixup (in place: each call gets an untimed fresh copy) and torchvision's v2."""
    from timm.data.mixup import Mixup
    from torchvision.transforms import v2
    work = torch.empty_like(x)
    fns, prepare, info = {}, {}, {}
    for mode in ("batch", "elem"):
        for kind, kw in (("mixup", dict(mixup_alpha=1.0, cutmix_alpha=0.0)),
                         ("cutmix", dict(mixup_alpha=0.0, cutmix_alpha=1.0))):
            mixer = Mixup(mode=mode, num_classes=NUM_CLASSES, label_smoothing=0.0, **kw)
            key = f"timm {kind} {mode}"
            fns[key] = (lambda m: lambda: m(work, y))(mixer)
            prepare[key] = lambda: work.copy_(x)
            info[key] = dict(policy=kind, mode=mode, variant="timm")
            if _LIBC is not None:     # timm's elem mode allocates a copy of the batch
                fns[key + " cold"] = fns[key]
                prepare[key + " cold"] = lambda: (work.copy_(x), trim())
                info[key + " cold"] = dict(policy=kind, mode=mode, variant="timm cold")
    tv_mixup, tv_cutmix = v2.MixUp(alpha=1.0, num_classes=NUM_CLASSES), v2.CutMix(alpha=1.0, num_classes=NUM_CLASSES)
    fns["torchvision MixUp"] = lambda: tv_mixup(x, y)
    fns["torchvision CutMix"] = lambda: tv_cutmix(x, y)
    info["torchvision MixUp"] = dict(policy="mixup", mode="batch", variant="torchvision")
    info["torchvision CutMix"] = dict(policy="cutmix", mode="batch", variant="torchvision")
    return fns, prepare, info


def collate_entries(shape, seed: int = 0):
    """MixCollate (uint8 fast path) and timm's FastCollateMixup on the same uint8 numpy samples."""
    from timm.data.mixup import FastCollateMixup
    rng = np.random.default_rng(seed)
    samples = [(rng.integers(0, 256, shape[1:], dtype=np.uint8), int(rng.integers(NUM_CLASSES)))
               for _ in range(shape[0])]
    fns, info = {}, {}
    for kind, kw in (("mixup", dict(mixup_alpha=1.0, cutmix_alpha=0.0)),
                     ("cutmix", dict(mixup_alpha=0.0, cutmix_alpha=1.0))):
        for mode in MODES:
            ours = openmix.MixCollate(build(kind, mode), seed=0)
            theirs = FastCollateMixup(mode=mode, num_classes=NUM_CLASSES, label_smoothing=0.0, **kw)
            fns[f"MixCollate {kind} {mode}"] = (lambda c: lambda: c(samples))(ours)
            if hasattr(build(kind, mode), "mix_uint8"):       # (absent before the fast paths)
                fns[f"MixCollate+mix_uint8 {kind} {mode}"] = uint8_collate(build(kind, mode), samples)
            fns[f"timm FastCollateMixup {kind} {mode}"] = (lambda c: lambda: c(samples))(theirs)
            info[f"MixCollate {kind} {mode}"] = dict(policy=kind, mode=mode, variant="collate")
            info[f"MixCollate+mix_uint8 {kind} {mode}"] = dict(policy=kind, mode=mode, variant="collate uint8")
            info[f"timm FastCollateMixup {kind} {mode}"] = dict(policy=kind, mode=mode, variant="timm collate")
    return fns, info


def uint8_collate(policy, samples) -> Callable[[], object]:
    """default_collate, then ``policy.mix_uint8`` on a batch it may not overwrite: MixCollate's
    uint8 branch without ``overwrite=True`` (and without its per-worker generators)."""
    from torch.utils.data import default_collate
    generator = torch.Generator().manual_seed(0)

    def collate():
        x, y = default_collate(samples)
        return policy.mix_uint8(x, torch.as_tensor(y), generator=generator)
    return collate


def summarise(times: Dict[str, list], info: Dict[str, dict], base: Dict[str, str], extra: dict) -> List[dict]:
    """One row per entry: median ms and per-round ratios to its floor (``base[variant]``)."""
    rows = []
    for key, series in times.items():
        row = dict(extra, entry=key, ms=1e3 * statistics.median(series), ms_min=1e3 * min(series),
                   **info.get(key, dict(variant="floor")))
        for label, floor in base.items():
            if floor in times:
                stats = ratio_stats(series, times[floor])
                row[f"x_{label}"] = stats["median"]
                row[f"x_{label}_iqr"] = [stats["q1"], stats["q3"]]
                # best of the rounds over best of the rounds: the cost without other load
                row[f"x_{label}_best"] = min(series) / min(times[floor])
        rows.append(row)
    return rows


def measure_size(size: int, names: List[str], rounds: int, peers: bool, collate: bool, baseline=None) -> List[dict]:
    shape = SHAPES[size]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=g)
    y = torch.randint(0, NUM_CLASSES, (shape[0],), generator=g)
    buf = torch.empty_like(x)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    fns, prepare = floor_entries(x, buf)
    more, more_prepare, info = policy_entries(names, x, y, buf, x_cl)
    fns.update(more)
    prepare.update(more_prepare)
    for add in ((inplace_entries, peer_entries) if peers else ()):
        more, more_prepare, more_info = add(x, y)
        fns.update(more)
        prepare.update(more_prepare)
        info.update(more_info)
    if baseline is not None:
        more, more_prepare, more_info = baseline_entries(baseline, names, x, y)
        fns.update(more)
        prepare.update(more_prepare)
        info.update(more_info)
    extra = dict(size=size, shape="x".join(map(str, shape)), threads=torch.get_num_threads())
    # two passes: the warm one never trims, so freed memory stays paged in; the cold one trims
    # before every call
    cold = {key for key in fns if key.endswith(" cold")}
    times = interleaved({k: f for k, f in fns.items() if k not in cold}, "cpu", rounds, warmup=2, prepare=prepare)
    times.update(interleaved({k: fns[k] for k in fns if k in cold}, "cpu", rounds, warmup=1, prepare=prepare))
    rows = summarise(times, info, {"clone": "x.clone()", "copy": "copy_ into buffer",
                                   "clone_cold": "x.clone() cold"}, extra)
    for row in rows:       # each allocating call against the floor in its own allocator state
        floor = {"alloc": "x_clone", "alloc cold": "x_clone_cold"}.get(row.get("variant"))
        if floor in row:
            row["x_floor"] = row[floor]
    for row in rows:       # the same call before and after, round by round, in the same state
        cold = " cold" if row.get("variant") == "alloc cold" else ""
        before = f"before {row.get('policy')} {row.get('mode')}{cold}"
        if row.get("variant") in ("alloc", "alloc cold") and before in times:
            row["speedup_vs_before"] = ratio_stats(times[before], times[row["entry"]])["median"]
    if collate:
        fns, info = collate_entries(shape)
        times = interleaved(fns, "cpu", max(3, rounds // 2), warmup=1)
        for row in summarise(times, info, {}, extra):
            if row["variant"] in ("collate", "collate uint8"):
                peer = times[f"timm FastCollateMixup {row['policy']} {row['mode']}"]
                row["x_timm"] = ratio_stats(times[row["entry"]], peer)["median"]
            rows.append(row)
    return rows


def add_peer_speedups(rows: List[dict]) -> None:
    """timm elem/batch time over ours, from the medians of the same interleaved rounds (a cold
    call against timm's cold call)."""
    ms = {(r["threads"], r["size"], r["entry"]): r["ms"] for r in rows}
    for r in rows:
        if r.get("variant") in ("alloc", "alloc cold", "inplace") and r["policy"] in ("mixup", "cutmix") \
                and r["mode"] != "pair":
            cold = " cold" if r["variant"] == "alloc cold" else ""
            peer = ms.get((r["threads"], r["size"], f"timm {r['policy']} {r['mode']}{cold}"))
            if peer is not None:
                r["speedup_vs_timm"] = peer / r["ms"]


def goal(rows, name: str, target: float, pick: Callable[[dict], bool], value: str, higher_is_better=False) -> dict:
    """The worst value of ``value`` over the rows ``pick`` selects, against ``target``."""
    chosen = [r for r in rows if pick(r) and r.get(value) is not None]
    if not chosen:
        return dict(goal=name, target=target, measured=None, ok=None, worst=None)
    worst = (min if higher_is_better else max)(chosen, key=lambda r: r[value])
    ok = worst[value] >= target if higher_is_better else worst[value] <= target
    return dict(goal=name, target=target, measured=worst[value], ok=ok,
                worst=f"{worst['entry']} @ {worst['size']} px, {worst['threads']} thread(s)")


def goals(rows: List[dict]) -> List[dict]:
    alloc = lambda r: r.get("variant") in ("alloc", "alloc cold")              # noqa: E731
    out = lambda r: r.get("variant") == "out"                                  # noqa: E731
    core = lambda r: r.get("policy") in ("mixup", "cutmix", "resizemix") and r.get("mode") in ("batch", "elem")  # noqa: E731
    fmix_elem = lambda r: r.get("policy") == "fmix" and r.get("mode") == "elem"  # noqa: E731
    elem = lambda r: r.get("mode") == "elem" and r.get("policy") in ("mixup", "cutmix")  # noqa: E731
    return [
        goal(rows, "elem mixup/CutMix vs timm elem at 224 px, warm and cold (times faster)", 1.5,
             lambda r: alloc(r) and elem(r) and r["size"] == 224, "speedup_vs_timm", higher_is_better=True),
        goal(rows, "same, both in place (inplace=True; timm mixes in place)", 1.5,
             lambda r: r.get("variant") == "inplace" and elem(r) and r["size"] == 224, "speedup_vs_timm",
             higher_is_better=True),
        goal(rows, "elem mixup/CutMix vs timm elem at 32 px (times faster)", 5.0,
             lambda r: alloc(r) and elem(r) and r["size"] == 32, "speedup_vs_timm", higher_is_better=True),
        goal(rows, "mixup/CutMix/ResizeMix batch+elem at 224 px, x x.clone() (warm and cold)", 3.0,
             lambda r: alloc(r) and core(r) and r["size"] == 224, "x_floor"),
        goal(rows, "same with out=, x copy_ into buffer", 3.0,
             lambda r: out(r) and core(r) and r["size"] == 224, "x_copy"),
        goal(rows, "FMix elem at 224 px, x x.clone() (warm and cold)", 6.0,
             lambda r: alloc(r) and fmix_elem(r) and r["size"] == 224, "x_floor"),
        goal(rows, "FMix elem at 224 px with out=, x copy_ into buffer", 6.0,
             lambda r: out(r) and fmix_elem(r) and r["size"] == 224, "x_copy"),
        goal(rows, "every static policy and mode at 32 px, x x.clone() (warm and cold)", 10.0,
             lambda r: alloc(r) and r["size"] == 32, "x_floor"),
        goal(rows, "every static policy and mode at 32 px with out=, x copy_ into buffer", 10.0,
             lambda r: out(r) and r["size"] == 32, "x_copy"),
        goal(rows, "channels_last time / contiguous time (same entry)", 1.15,
             lambda r: r.get("variant") == "channels_last", "vs_contiguous"),
        goal(rows, "channels_last outputs that are not channels_last (count)", 0,
             lambda r: r.get("variant") == "channels_last", "lost_channels_last"),
        goal(rows, "MixCollate uint8 / timm FastCollateMixup (same samples)", 1.0,
             lambda r: r.get("variant") == "collate", "x_timm"),
        goal(rows, "collate + mix_uint8 without overwrite / timm FastCollateMixup", 1.0,
             lambda r: r.get("variant") == "collate uint8", "x_timm"),
    ]


def add_layout_ratios(rows: List[dict]) -> None:
    ms = {(r["threads"], r["size"], r["entry"]): r["ms"] for r in rows}
    for r in rows:
        if r.get("variant") == "channels_last":
            base = ms[(r["threads"], r["size"], r["entry"].replace(" channels_last", ""))]
            r["vs_contiguous"] = r["ms"] / base
            r["lost_channels_last"] = 0 if r["keeps_channels_last"] else 1


def print_table(rows: List[dict]) -> None:
    print(f"{'thr':>3} {'px':>4} {'entry':<40} {'ms':>9} {'x floor':>8} {'x copy':>7} {'other':>16}")
    for r in rows:
        other = ""
        if "speedup_vs_before" in r:
            other = f"{r['speedup_vs_before']:.2f}x faster than before"
        if "speedup_vs_timm" in r:
            other = f"{r['speedup_vs_timm']:.1f}x faster than timm"
        elif "x_timm" in r:
            other = f"{r['x_timm']:.2f}x timm"
        elif "vs_contiguous" in r:
            other = f"{r['vs_contiguous']:.2f}x NCHW, kept={r['keeps_channels_last']}"
        fmt = lambda v: "" if v is None else f"{v:.2f}"   # noqa: E731
        print(f"{r['threads']:>3} {r['size']:>4} {r['entry']:<40} {r['ms']:>9.3f} {fmt(r.get('x_floor', r.get('x_clone'))):>8} "
              f"{fmt(r.get('x_copy')):>7} {other:>16}")


def print_goals(results: List[dict]) -> None:
    print("\ngoals (issue 19); worst measured value against each:")
    for g in results:
        verdict = "n/a" if g["ok"] is None else ("ok" if g["ok"] else "NOT MET")
        measured = "-" if g["measured"] is None else f"{g['measured']:.2f}"
        print(f"  [{verdict:>7}] {g['goal']}: {measured} (target {g['target']}) at {g['worst']}")


def plot(rows: List[dict], path: str) -> None:
    """Bars of time / floor per policy and mode: one panel per image size and thread count."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = sorted({(r["size"], r["threads"]) for r in rows})
    sizes, threads = sorted({p[0] for p in panels}), sorted({p[1] for p in panels})
    fig, axes = plt.subplots(len(sizes), len(threads), figsize=(9.5 * len(threads), 3.8 * len(sizes)),
                             squeeze=False)
    for (size, thr) in panels:
        ax = axes[sizes.index(size)][threads.index(thr)]
        here = [r for r in rows if r["size"] == size and r["threads"] == thr]
        alloc = [r for r in here if r.get("variant") == "alloc" and r["policy"] != "vanilla"]
        out = {(r["policy"], r["mode"]): r for r in here if r.get("variant") == "out"}
        cold = {(r["policy"], r["mode"]): r for r in here if r.get("variant") == "alloc cold"}
        before = {(r["policy"], r["mode"]): r for r in here if r.get("variant") == "before"}
        pos = np.arange(len(alloc))
        pick = lambda table, key: [table[(r["policy"], r["mode"])][key] if (r["policy"], r["mode"]) in table else 0  # noqa: E731
                                   for r in alloc]
        before_cold = {(r["policy"], r["mode"]): r for r in here if r.get("variant") == "before cold"}
        bars = [("before: policy(x, y) / x.clone(), warm", before, "x_clone", "lightgrey")] if before else []
        bars += [("policy(x, y) / x.clone(), warm", {(r["policy"], r["mode"]): r for r in alloc}, "x_clone", "tab:blue")]
        bars += [("before: policy(x, y) / x.clone(), both cold", before_cold, "x_clone_cold", "dimgrey")] if before_cold else []
        bars += [("policy(x, y) / x.clone(), both cold", cold, "x_clone_cold", "tab:orange"),
                 ("policy(x, y, out=buf) / buf.copy_(x)", out, "x_copy", "tab:green")]
        width = 0.8 / len(bars)
        for k, (label, table, key, color) in enumerate(bars):
            ax.bar(pos - 0.4 + width * (k + 0.5), pick(table, key), width, label=label, color=color)
        for level, style in ((3, "--"), (6, ":"), (10, "-.")):
            ax.axhline(level, color="grey", linestyle=style, linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xticks(pos, [f"{r['policy']} {r['mode']}" for r in alloc], rotation=60, ha="right", fontsize=7)
        floors = {r["entry"]: r["ms"] for r in here if r.get("variant") == "floor"}
        ax.set_title(f"{here[0]['shape']}, {thr} thread(s): clone {floors.get('x.clone()', 0):.2f} ms, "
                     f"copy_ {floors.get('copy_ into buffer', 0):.2f} ms", fontsize=9)
        ax.set_ylabel("time / floor (log)")
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.suptitle("openmix mixing time per batch as a multiple of copying the batch (lines at 3x, 6x, 10x)")
    fig.tight_layout()
    tmp = f"{path}.{os.getpid()}.tmp.png"
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)


def markdown_table(rows: List[dict], threads: int, sizes=(32, 224)) -> str:
    """The README's table: per static policy and mode, at each size, the median ms of a warm
    allocating call and its multiple of the floor in the same state (warm, cold, out=), and the
    speed-up over the baseline when one was timed."""
    at = {(r["size"], r["entry"]): r for r in rows if r["threads"] == threads}
    sizes = [s for s in sizes if (s, "x.clone()") in at]
    with_before = any(r.get("variant") == "before" for r in rows)
    head = ["policy", "mode"]
    for size in sizes:
        head += [f"{size} px ms", "× clone", "cold × cold clone", "out= × copy_"]
        head += ["vs before (warm / cold)"] if with_before else []
    floors = "; ".join(f"{size} px: `x.clone()` {at[(size, 'x.clone()')]['ms']:.2f} ms, cold "
                       f"{at[(size, 'x.clone() cold')]['ms']:.2f} ms, `copy_` {at[(size, 'copy_ into buffer')]['ms']:.2f} ms"
                       for size in sizes if (size, "x.clone() cold") in at)
    lines = [f"Floors, {threads} thread(s): {floors}.", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    keys = sorted({(r["policy"], r["mode"]) for r in rows if r.get("variant") == "alloc" and r["policy"] != "vanilla"},
                  key=lambda k: (k[0], MODES.index(k[1])))
    fmt = lambda row, key: "" if row is None or row.get(key) is None else f"{row[key]:.2f}"   # noqa: E731
    for name, mode in keys:
        cells = [name, mode]
        for size in sizes:
            warm, cold = at.get((size, f"{name} {mode}")), at.get((size, f"{name} {mode} cold"))
            out = at.get((size, f"{name} {mode} out="))
            cells += ["" if warm is None else f"{warm['ms']:.2f}", fmt(warm, "x_floor"), fmt(cold, "x_floor"),
                      fmt(out, "x_copy")]
            if with_before:
                speedups = [fmt(warm, "speedup_vs_before"), fmt(cold, "speedup_vs_before")]
                cells.append(" / ".join(v + "×" for v in speedups if v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a minute or so), no 64 px")
    parser.add_argument("--sizes", default="", help="comma-separated image sides among 32,64,224")
    parser.add_argument("--threads", default="1,all", help="comma-separated thread counts; 'all' = torch's default")
    parser.add_argument("--rounds", type=int, default=0, help="interleaved rounds (default 60 / 40 / 20 by size)")
    parser.add_argument("--policies", default="", help="comma-separated subset of the static policies")
    parser.add_argument("--no-peers", action="store_true", help="skip timm and torchvision")
    parser.add_argument("--no-collate", action="store_true", help="skip the uint8 collate comparison")
    parser.add_argument("--baseline", default="", help="a directory holding an older openmix/ package: its "
                        "allocating calls are timed in the same rounds (before/after per entry)")
    parser.add_argument("--out", default="results/benchmarks/mixing_speed_cpu.json")
    parser.add_argument("--table", default="", metavar="JSON", help="print the README's markdown table "
                        "from a written JSON (with --table-threads) and exit")
    parser.add_argument("--table-threads", type=int, default=1)
    parser.add_argument("--plot", default="", metavar="JSON", help="redraw the chart of a written JSON "
                        "(next to it) and exit")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.table or args.plot:
        import json
        with open(args.table or args.plot) as f:
            rows = json.load(f)["rows"]
        if args.table:
            print(markdown_table(rows, args.table_threads))
        else:
            plot(rows, str(Path(args.plot).with_suffix(".png")))
        return 0
    load_at_start = os.getloadavg()     # a shared machine: say how busy it was
    warm = keep_freed_memory()
    all_threads = torch.get_num_threads()
    sizes = [int(s) for s in args.sizes.split(",") if s] or ([32, 224] if args.quick else [32, 64, 224])
    threads = [all_threads if t == "all" else int(t) for t in args.threads.split(",")]
    names = [n for n in args.policies.split(",") if n] or static_policy_names()
    baseline = load_baseline(args.baseline) if args.baseline else None
    default_rounds = {32: 60, 64: 40, 224: 20} if not args.quick else {32: 10, 64: 8, 224: 4}
    rows: List[dict] = []
    for n_threads in dict.fromkeys(threads):
        torch.set_num_threads(n_threads)
        for size in sizes:
            rounds = args.rounds or default_rounds[size]
            print(f"... {n_threads} thread(s), {size} px, {rounds} rounds", flush=True)
            rows += measure_size(size, names, rounds, not args.no_peers, not args.no_collate, baseline)
    torch.set_num_threads(all_threads)
    add_peer_speedups(rows)
    add_layout_ratios(rows)
    print_table(rows)
    results = goals(rows)
    print_goals(results)
    meta = dict(device="cpu", torch=torch.__version__, numpy=np.__version__, machine=platform.machine(),
                load_average_at_start=load_at_start, load_average_at_end=os.getloadavg(),
                processor=platform.processor(), python=sys.version.split()[0], cpu_count=os.cpu_count(),
                all_threads=all_threads, quick=args.quick, policies=names, baseline=args.baseline or None,
                allocator=("glibc: freed memory kept (warm); 'cold' entries trimmed before each call"
                           if warm else "as the C library left it (warm state not set)"),
                huge_pages=os.environ.get("OPENMIX_HUGE_PAGES", "1") != "0")
    write_json_atomic(args.out, dict(meta=meta, goals=results, rows=rows), indent=1)
    png = str(Path(args.out).with_suffix(".png"))
    plot(rows, png)
    print(f"wrote {args.out} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
