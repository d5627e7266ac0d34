#!/usr/bin/env python
"""Compare two openmix-train runs: the settings that differ and the final metrics side by side.

Each RUN is a run folder (holding summary.json, and config.yaml when present) or a summary.json
file. Settings come from the summary (dataset, model, policy, loss, seed, epochs, versions, ...)
and, when PyYAML is installed and config.yaml lies beside it, from the whole composed config;
only the ones that differ are shown unless --all. Metrics are the final ones, the selected
(best) epoch and the speed figures, with the difference B - A.

    python tools/compare_runs.py runs/mixup runs/cutmix
    python tools/compare_runs.py a/summary.json b/summary.json --markdown
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

SETTING_KEYS = ("task", "dataset", "model", "policy", "loss", "seed", "epochs", "device", "world_size",
                "last_k", "where", "versions", "info")
SPEED_KEYS = ("seconds_per_epoch", "samples_per_second", "peak_memory_mb")


def summary_file(run: Path) -> Path:
    path = run / "summary.json" if run.is_dir() else run
    if not path.is_file():
        raise SystemExit(f"run must be a run folder with summary.json or a summary.json file, got {str(run)!r}")
    return path


def flatten(value: Any, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay whole."""
    if isinstance(value, dict):
        out: dict = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: value}


def load_run(path: Path) -> tuple[dict, dict]:
    """(settings, metrics) of one run, each flattened to dotted keys."""
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SystemExit(f"{path} is not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(summary, dict) or "final" not in summary:
        raise SystemExit(f"{path} is not an openmix-train summary (no 'final' key)")
    settings = flatten({k: summary[k] for k in SETTING_KEYS if k in summary})
    config = path.parent / "config.yaml"
    if config.is_file():
        try:
            import yaml
        except ImportError:
            yaml = None
        if yaml is not None:
            settings.update(flatten(yaml.safe_load(config.read_text()) or {}, "config."))
    metrics = flatten({"final": summary["final"], "best": summary.get("best") or {}})
    metrics.update({k: summary[k] for k in SPEED_KEYS if k in summary})
    return settings, metrics


def show(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def delta(a: Any, b: Any) -> str:
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
    return f"{b - a:+.4g}" if numbers else ""


def table_rows(run_a: Path, run_b: Path, show_all: bool) -> list[list[str]]:
    settings_a, metrics_a = load_run(run_a)
    settings_b, metrics_b = load_run(run_b)
    rows = []
    for key in sorted(set(settings_a) | set(settings_b)):
        a, b = settings_a.get(key), settings_b.get(key)
        if show_all or a != b:
            rows.append(["setting", key, show(a), show(b), ""])
    for key in list(dict.fromkeys([*metrics_a, *metrics_b])):
        a, b = metrics_a.get(key), metrics_b.get(key)
        rows.append(["metric", key, show(a), show(b), delta(a, b)])
    return rows


def render_text(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def render_markdown(header: list[str], rows: list[list[str]]) -> str:
    cell = lambda text: text.replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("run_a", type=Path, metavar="RUN_A", help="first run folder or summary.json")
    parser.add_argument("run_b", type=Path, metavar="RUN_B", help="second run folder or summary.json")
    parser.add_argument("--all", action="store_true", help="also list the settings that are the same")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args(argv)
    file_a, file_b = summary_file(args.run_a), summary_file(args.run_b)
    rows = table_rows(file_a, file_b, args.all)
    header = ["kind", "key", f"A ({file_a.parent.name})", f"B ({file_b.parent.name})", "B - A"]
    print((render_markdown if args.markdown else render_text)(header, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
