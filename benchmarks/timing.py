"""Timing helpers shared by the benchmark scripts (run as ``python benchmarks/NAME.py``)."""
from __future__ import annotations

import statistics
import time
from typing import Callable, Optional

import torch


def sync(device: torch.device) -> None:
    """Waits for queued accelerator work so that wall-clock times include it."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device, repeats: int, warmup: int = 1) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved(fns: dict, device, rounds: int, warmup: int = 1, prepare: Optional[dict] = None) -> dict:
    """Seconds of each ``fns[name]()`` per round, the functions called in turn within every round.

    Interleaving exposes every function to the same machine load, so ratios taken round by round
    (``ratio_stats``) stay meaningful on a shared, noisy machine where separate medians do not.
    ``prepare[name]()``, where given, runs untimed just before each call of ``fns[name]`` (a fresh
    copy for a peer that mixes in place, or returning freed memory to the OS for a cold call).
    """
    prepare = prepare or {}
    for name, fn in fns.items():
        for _ in range(warmup):
            prepare.get(name, _nothing)()
            fn()
    sync(device)
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            prepare.get(name, _nothing)()
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return times


def _nothing() -> None:
    return None


def ratio_stats(numerator: list, denominator: list) -> dict:
    """Per-round ratios of two ``interleaved`` series: median, quartiles, and the ratio of the means."""
    ratios = sorted(a / b for a, b in zip(numerator, denominator))
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    return {"median": statistics.median(ratios), "q1": q[0], "q3": q[2],
            "ratio_of_means": statistics.fmean(numerator) / statistics.fmean(denominator)}
