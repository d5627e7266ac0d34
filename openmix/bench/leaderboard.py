"""``openmix-leaderboard``: render a suite's leaderboard from the results database.

    openmix-leaderboard --db results.db --suite cpu-small --out docs/leaderboard

writes ``<suite>.md`` (Markdown tables), ``<suite>.csv`` (every statistic at full precision),
``<suite>.png`` (bar chart with 95% interval error bars, one panel per dataset and model),
``<suite>-cd.png`` (critical-difference diagram of the ranks across datasets) and
``<suite>.html`` (self-contained: the same tables, the charts inlined as base64).

The pipeline has three layers: :mod:`~openmix.bench.aggregate` groups the per-seed rows of the
database and calls :mod:`~openmix.bench.stats` (mean ± 95% t-interval per cell, paired t-test
against the baseline with Holm's correction, mean ranks, Friedman, Nemenyi CD), which returns
frozen records; :mod:`~openmix.bench.render` and :mod:`~openmix.bench.plots` only read them.
This module reads the databases, writes the files atomically and holds the command line.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ..files import write_bytes_atomic, write_text_atomic
from .aggregate import Report, build_report
from .db import ResultsDB
from .plots import render_bars, render_cd
from .render import render_claims_csv, render_csv, render_html, render_markdown


def load_report(
    db: str | os.PathLike | Sequence[str | os.PathLike],
    suite: str,
    baseline: str | None = "vanilla",
    headline: dict | None = None,
    claims: Sequence = (),
) -> Report:
    """Read ``suite`` from one or more databases (later databases win a seed) into a Report."""
    dbs = [db] if isinstance(db, (str, os.PathLike)) else list(db)
    if not dbs:
        raise ValueError("db must name at least one database, got none")
    rows, failed = [], []
    for path in dbs:
        if not Path(path).is_file():
            raise ValueError(f"db must be an existing results database, got {str(path)!r}")
        results = ResultsDB(path)
        rows += results.runs(suite=suite, status="ok")
        failed += results.runs(suite=suite, status="failed")
    report = build_report(suite, rows, failed, baseline=baseline, headline=headline, claims=claims)
    if not report.panels:
        known = sorted({s for p in dbs for s in ResultsDB(p).suites()})
        raise ValueError(
            f"suite must have successful runs in {', '.join(map(str, dbs))}, got {suite!r}; "
            f"suites there: {known}"
        )
    return report


# ---- files -------------------------------------------------------------------------------
def readme_markers(suite: str) -> tuple[str, str]:
    return f"<!-- openmix-leaderboard:{suite} -->", f"<!-- /openmix-leaderboard:{suite} -->"


def update_readme(readme: str | os.PathLike, suite: str, markdown: str) -> Path:
    """Replace the text between the suite's two markers in ``readme`` with ``markdown``."""
    path = Path(readme)
    if not path.is_file():
        raise ValueError(f"readme must be an existing file, got {str(path)!r}")
    text = path.read_text(encoding="utf-8")
    start, end = readme_markers(suite)
    i, j = text.find(start), text.find(end)
    if i < 0 or j < i:
        raise ValueError(f"readme must contain the markers {start} ... {end} (put them where the "
                         f"leaderboard goes), got {str(path)!r}, which lacks them")
    new = text[: i + len(start)] + "\n" + markdown + text[j:]
    return write_text_atomic(path, new)


def default_command(db: Sequence[str] | str, suite: str, out: str,
                    readme: str | None = None) -> str:
    dbs = [db] if isinstance(db, (str, os.PathLike)) else list(db)
    db_args = " ".join(f"--db {d}" for d in dbs)
    extra = f" --readme {readme}" if readme else ""
    run = f"openmix-bench suite={suite}" + (f" db={dbs[0]}" if len(dbs) == 1 else "")
    return (f"{run}    # skips the runs already in the database\n"
            f"openmix-leaderboard {db_args} --suite {suite} --out {out}{extra}")


def render_leaderboard(
    db: str | os.PathLike | Sequence[str | os.PathLike],
    suite: str,
    out_dir: str | os.PathLike,
    baseline: str | None = "vanilla",
    headline: dict | None = None,
    command: str | None = None,
    readme: str | os.PathLike | None = None,
    claims: Sequence = (),
) -> list[Path]:
    """Read ``suite`` from one or more databases and write <suite>.md/.csv/.png/-cd.png/.html
    (-claims.csv when the suite states claims; and the Markdown between the suite's markers in
    ``readme``, if given)."""
    report = load_report(db, suite, baseline, headline, claims)
    out = Path(out_dir)
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in suite)
    bars, cd = render_bars(report), render_cd(report)
    written = [
        write_bytes_atomic(out / f"{stem}.png", bars),
        write_bytes_atomic(out / f"{stem}-cd.png", cd),
        write_text_atomic(out / f"{stem}.csv", render_csv(report)),
        write_text_atomic(out / f"{stem}.md", render_markdown(
            report, command, f"{stem}.png", f"{stem}-cd.png")),
        write_text_atomic(out / f"{stem}.html", render_html(report, bars, cd, command)),
    ]
    if report.claims:
        written.append(write_text_atomic(out / f"{stem}-claims.csv", render_claims_csv(report)))
    if readme is not None:
        folder = os.path.relpath(out, Path(readme).resolve().parent)
        section = render_markdown(report, command, Path(folder, f"{stem}.png").as_posix(),
                                  Path(folder, f"{stem}-cd.png").as_posix(), level=3)
        written.append(update_readme(readme, suite, section))
    return written


def known_suite(name: str):
    """The parsed suite ``configs/bench/suite/<name>.yaml`` (its headline and claims), or None
    when no such file exists (a suite defined elsewhere)."""
    from hydra import compose, initialize_config_dir

    from .app import bench_config_dir
    from .suite import load_suite
    if not (bench_config_dir() / "suite" / f"{name}.yaml").is_file():
        return None
    # composed as openmix-bench composes it, so suites built on others (``defaults:``) resolve
    with initialize_config_dir(str(bench_config_dir()), version_base=None):
        return load_suite(compose("bench", overrides=[f"suite={name}"]).suite)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="openmix-leaderboard",
        description="Render a suite's leaderboard (Markdown, CSV, PNGs, HTML) with 95% intervals, "
        "paired verdicts against the baseline and ranks across datasets, from the results database.",
    )
    parser.add_argument("--db", action="append", default=None,
                        help="results database (repeat to merge several; default results.db)")
    parser.add_argument("--suite", default="cpu-small", help="suite name (default cpu-small)")
    parser.add_argument("--out", default="leaderboard", help="output directory")
    parser.add_argument("--baseline", default="vanilla",
                        help="policy label that every policy is compared with, paired by seed, and that "
                        "costs are relative to (default vanilla)")
    parser.add_argument("--readme", default=None,
                        help="also write the tables into this Markdown file, between the lines "
                        "<!-- openmix-leaderboard:SUITE --> and <!-- /openmix-leaderboard:SUITE -->")
    parser.add_argument("--command", default=None,
                        help="regenerate command shown in the page (default: this command)")
    args = parser.parse_args(argv)
    dbs = args.db or ["results.db"]
    command = args.command or default_command(dbs, args.suite, args.out, args.readme)
    try:
        suite = known_suite(args.suite)
        written = render_leaderboard(dbs, args.suite, args.out, baseline=args.baseline,
                                     headline=dict(suite.headline) if suite else None, command=command,
                                     readme=args.readme, claims=suite.claims if suite else ())
    except ValueError as err:
        parser.exit(2, f"openmix-leaderboard: {err}\n")
    for path in written:
        print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
