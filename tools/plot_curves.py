#!/usr/bin/env python
"""Plot training curves of one or more openmix-train runs into a PNG.

Each RUN is a run folder (holding metrics.jsonl, as openmix-train writes it) or a metrics.jsonl
file. The left panel shows the train loss per epoch, the right one a test metric (default: top1
for classification runs, rmse for regression runs). Needs matplotlib (the [train] extra).

    python tools/plot_curves.py runs/mixup runs/cutmix -o curves.png
    python tools/plot_curves.py runs/*/metrics.jsonl --metric nll --label-key policy
"""
from __future__ import annotations

import argparse
import io
import json
import math
import sys
from pathlib import Path

DEFAULT_METRICS = ("top1", "rmse")


def metrics_file(run: Path) -> Path:
    path = run / "metrics.jsonl" if run.is_dir() else run
    if not path.is_file():
        raise SystemExit(f"run must be a run folder with metrics.jsonl or a metrics.jsonl file, got {str(run)!r}")
    return path


def read_history(path: Path) -> list[dict]:
    """The epoch rows of a metrics.jsonl file (one JSON object per line)."""
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SystemExit(f"{path}:{number} is not a JSON line ({exc.msg}); metrics.jsonl holds one object "
                             "per epoch") from None
        if not isinstance(row, dict) or "epoch" not in row:
            raise SystemExit(f"{path}:{number} has no 'epoch' key; got {str(row)[:80]}")
        rows.append(row)
    if not rows:
        raise SystemExit(f"{path} holds no epochs")
    return rows


def run_label(path: Path, label_key: str | None) -> str:
    """The run folder's name, or a key of its summary.json (e.g. policy) when asked and present."""
    folder = path.parent
    summary = folder / "summary.json"
    if label_key and summary.is_file():
        value = json.loads(summary.read_text()).get(label_key)
        if value is not None:
            return f"{value} ({folder.name})"
    return folder.name or str(path)


def pick_metric(histories: list[list[dict]], metric: str | None) -> str:
    keys = set().union(*(row.keys() for rows in histories for row in rows))
    if metric is not None:
        if metric not in keys:
            raise SystemExit(f"--metric must be one of the logged keys {sorted(keys - {'epoch'})}, got {metric!r}")
        return metric
    for name in DEFAULT_METRICS:
        if name in keys:
            return name
    raise SystemExit(f"no default test metric {DEFAULT_METRICS} in the runs; choose one with --metric from "
                     f"{sorted(keys - {'epoch'})}")


def series(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    points = [(r["epoch"], r[key]) for r in rows
              if isinstance(r.get(key), (int, float)) and math.isfinite(float(r[key]))]
    return [p[0] for p in points], [p[1] for p in points]


def render(runs: list[tuple[str, list[dict]]], metric: str, title: str | None) -> bytes:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, rows in runs:
        ax_loss.plot(*series(rows, "train_loss"), marker=".", label=label)
        ax_metric.plot(*series(rows, metric), marker=".", label=label)
    ax_loss.set(xlabel="epoch", ylabel="train loss", title="train loss")
    ax_metric.set(xlabel="epoch", ylabel=metric, title=f"test {metric}")
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_metric.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run folder or metrics.jsonl file")
    parser.add_argument("-o", "--out", type=Path, default=Path("curves.png"), help="PNG to write (default curves.png)")
    parser.add_argument("--metric", default=None, help="test metric for the right panel (default: top1 or rmse)")
    parser.add_argument("--label-key", default=None,
                        help="label each run by this key of its summary.json (e.g. policy); default: folder name")
    parser.add_argument("--title", default=None, help="figure title")
    args = parser.parse_args(argv)
    files = [metrics_file(run) for run in args.runs]
    histories = [read_history(f) for f in files]
    metric = pick_metric(histories, args.metric)
    runs = [(run_label(f, args.label_key), rows) for f, rows in zip(files, histories)]
    from openmix.files import write_bytes_atomic
    write_bytes_atomic(args.out, render(runs, metric, args.title))
    print(f"wrote {args.out}: train loss and {metric} of {len(runs)} run(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
