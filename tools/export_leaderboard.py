#!/usr/bin/env python
"""Export a benchmark suite's results as a Markdown, CSV or LaTeX table.

Reads the successful runs of SUITE from one or more results databases (openmix-bench's SQLite
files), groups them by (dataset, model, policy) and prints one row per group: the suite's
headline metric as mean and sample standard deviation over the seeds, with n and the seeds.
Rows keep the suite's order. It ranks nothing and marks no winner: for intervals, paired
comparisons and verdicts use openmix-leaderboard.

    python tools/export_leaderboard.py --db results/cpu-small.db --suite cpu-small
    python tools/export_leaderboard.py --db a.db --db b.db --suite cpu-small --format latex -o table.tex
"""
from __future__ import annotations

import argparse
import csv
import io
import math
import statistics
import sys
from pathlib import Path

FORMATS = ("md", "csv", "latex")
COLUMNS = ("dataset", "model", "policy", "metric", "mean", "std", "n", "seeds")


def load_rows(dbs: list[Path], suite: str | None) -> tuple[str, list[dict]]:
    """(suite, its successful runs) from the databases; the suite may be left out when they hold one."""
    from openmix.bench.db import ResultsDB
    for path in dbs:
        if not path.is_file():
            raise SystemExit(f"--db must be an existing results database, got {str(path)!r}")
    databases = [ResultsDB(path) for path in dbs]
    suites = sorted({s for db in databases for s in db.suites()})
    if suite is None:
        if len(suites) != 1:
            raise SystemExit(f"--suite is needed: the databases hold suites {suites}")
        suite = suites[0]
    rows = [row for db in databases for row in db.runs(suite=suite)]
    if not rows:
        raise SystemExit(f"--suite must name a suite with successful runs in {[str(p) for p in dbs]}; "
                         f"got {suite!r}, known suites: {suites}")
    return suite, rows


def aggregate(rows: list[dict]) -> list[dict]:
    """One entry per (dataset, model, policy), in first-seen order: headline mean, std, n, seeds."""
    groups: dict[tuple, dict] = {}
    for row in rows:
        key = (row["dataset"], row["model"], row["policy"])
        group = groups.setdefault(key, {"dataset": key[0], "model": key[1], "policy": key[2],
                                        "metric": row.get("headline_metric") or "", "values": {}})
        value = row.get("headline")
        if isinstance(value, (int, float)) and math.isfinite(value):
            group["values"][int(row["seed"])] = float(value)   # one value per seed (several DBs may repeat it)
    entries = []
    for group in groups.values():
        values = [group["values"][s] for s in sorted(group["values"])]
        entries.append({**{k: group[k] for k in ("dataset", "model", "policy", "metric")},
                        "mean": statistics.fmean(values) if values else None,
                        "std": statistics.stdev(values) if len(values) > 1 else None,
                        "n": len(values), "seeds": " ".join(str(s) for s in sorted(group["values"]))})
    return entries


def cells(entry: dict, digits: int) -> list[str]:
    number = lambda v: "" if v is None else f"{v:.{digits}f}"  # noqa: E731
    return [entry["dataset"], entry["model"], entry["policy"], entry["metric"], number(entry["mean"]),
            number(entry["std"]), str(entry["n"]), entry["seeds"]]


def render_markdown(suite: str, entries: list[dict], digits: int) -> str:
    escape = lambda text: text.replace("|", "\\|")  # noqa: E731
    lines = [f"**{suite}**", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(escape(c) for c in cells(e, digits)) + " |" for e in entries]
    return "\n".join(lines) + "\n"


def render_csv(suite: str, entries: list[dict], digits: int) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("suite",) + COLUMNS)
    writer.writerows([suite] + cells(e, digits) for e in entries)
    return buffer.getvalue()


LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIAL.get(char, char) for char in text)


def render_latex(suite: str, entries: list[dict], digits: int) -> str:
    lines = [f"% {latex_escape(suite)}: headline metric, mean and std over seeds", r"\begin{tabular}{llllrrrl}",
             r"\hline", " & ".join(COLUMNS) + r" \\", r"\hline"]
    lines += [" & ".join(latex_escape(c) for c in cells(e, digits)) + r" \\" for e in entries]
    return "\n".join(lines + [r"\hline", r"\end{tabular}"]) + "\n"


RENDERERS = {"md": render_markdown, "csv": render_csv, "latex": render_latex}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--db", type=Path, action="append", required=True,
                        help="results database (repeat to merge several, e.g. shards)")
    parser.add_argument("--suite", default=None, help="suite name (optional when the databases hold one suite)")
    parser.add_argument("--format", choices=FORMATS, default="md", help="table format (default md)")
    parser.add_argument("--digits", type=int, default=2, help="decimals of mean and std (default 2)")
    parser.add_argument("-o", "--out", type=Path, default=None, help="write the table here instead of printing it")
    args = parser.parse_args(argv)
    if not 0 <= args.digits <= 10:
        parser.error(f"--digits must be in [0, 10], got {args.digits}")
    suite, rows = load_rows(args.db, args.suite)
    table = RENDERERS[args.format](suite, aggregate(rows), args.digits)
    if args.out is None:
        print(table, end="")
    else:
        from openmix.files import write_text_atomic
        write_text_atomic(args.out, table)
        print(f"wrote {args.out}: {args.format} table of suite {suite}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
