"""``openmix-leaderboard``: render a suite's leaderboard from the results database.

    openmix-leaderboard --db results.db --suite cpu-small --out docs/leaderboard

writes ``<suite>.md`` (Markdown tables), ``<suite>.csv``, ``<suite>.png`` (bar chart with error
bars, one panel per dataset and model) and ``<suite>.html`` (self-contained: the same tables,
the chart inlined as base64). Each entry is the mean ± sample standard deviation over seeds of
the headline metric (median top-1 of the last k epochs for classification, RMSE for regression),
plus ECE (classification) and the time per epoch relative to the baseline policy (vanilla) on
the same dataset and model. Every file is written atomically (temporary file + os.replace).
"""
from __future__ import annotations

import argparse
import base64
import csv
import datetime as _dt
import html
import io
import json
import math
import os
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..files import write_bytes_atomic, write_text_atomic
from .db import ResultsDB
from .suite import DEFAULT_HEADLINE, lower_is_better

METRIC_TITLES = {
    "top1_median_last_k": "top-1 (median of last k epochs)",
    "top1": "top-1 (final)",
    "rmse": "RMSE (final)",
    "rmse_median_last_k": "RMSE (median of last k epochs)",
}

CSV_COLUMNS = (
    "suite", "dataset", "model", "epochs", "task", "policy", "mix", "policy_args", "loss", "loss_args",
    "metric", "mean", "std", "n", "seeds", "ece_mean", "ece_std", "seconds_per_epoch",
    "cost_vs_baseline", "samples_per_second", "peak_memory_mb",
)


@dataclass
class Entry:
    """One leaderboard line: a policy on a dataset and model, aggregated over seeds."""

    suite: str
    dataset: str
    model: str
    task: str
    policy: str
    mix: str | None
    policy_args: dict
    loss: str | None
    loss_args: dict
    metric: str
    values: list[float]
    seeds: list[int]
    epochs: int | None = None
    set_args: dict | None = None     # mix.* arguments the suite entry set (None: unknown)
    set_loss_args: dict | None = None  # loss.* arguments the suite entry set
    last_k: int | None = None          # trainer.last_k of the runs (headline = median of last k)
    ece: list[float] = field(default_factory=list)
    seconds_per_epoch: list[float] = field(default_factory=list)
    samples_per_second: list[float] = field(default_factory=list)
    peak_memory_mb: list[float] = field(default_factory=list)
    cost_vs_baseline: float | None = None

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return _mean(self.values)

    @property
    def std(self) -> float:
        return _std(self.values)


def _mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else math.nan


def _std(values: Sequence[float]) -> float:
    """Sample standard deviation (ddof 1); 0 for a single value."""
    if not values:
        return math.nan
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _num(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _set_by_overrides(overrides: Any, prefix: str) -> dict | None:
    """``{"alpha": "0.2"}`` from overrides such as ``mix.alpha=0.2`` (later ones win)."""
    if not overrides:
        return None
    out = {}
    for item in overrides:
        if isinstance(item, str) and item.startswith(prefix) and "=" in item:
            key, _, value = item[len(prefix):].partition("=")
            out[key] = value
    return out


def summarize(
    rows: Iterable[dict],
    baseline: str | None = "vanilla",
    headline: dict | None = None,
) -> list[Entry]:
    """Group successful run rows by (dataset, model, policy) and aggregate over seeds.

    Rows are the dicts of ``ResultsDB.runs``. The headline value of a row is its ``headline``
    column, or ``final[metric]`` for the suite's headline metric of its task.
    """
    headline = {**DEFAULT_HEADLINE, **(headline or {})}
    groups: dict[tuple, Entry] = {}
    for row in rows:
        if row.get("status", "ok") != "ok":
            continue
        task = row.get("task") or "classification"
        metric = row.get("headline_metric") or headline.get(task)
        final = row.get("final") or {}
        value = _num(row.get("headline"))
        if value is None and metric:
            value = _num(final.get(metric))
        if value is None:
            continue
        key = (row["suite"], row["dataset"], row["model"], row.get("epochs"), row["policy"], metric)
        entry = groups.get(key)
        if entry is None:
            entry = groups[key] = Entry(
                suite=row["suite"], dataset=row["dataset"], model=row["model"], task=task,
                policy=row["policy"], mix=row.get("mix_name"),
                policy_args=row.get("policy_args") or {}, loss=row.get("loss"),
                loss_args=row.get("loss_args") or {}, metric=metric, values=[], seeds=[],
                epochs=row.get("epochs"),
                set_args=_set_by_overrides(row.get("overrides"), "mix."),
                set_loss_args=_set_by_overrides(row.get("overrides"), "loss."),
                last_k=_last_k(row),
            )
        entry.values.append(value)
        entry.seeds.append(int(row["seed"]))
        for name, target in (
            ("seconds_per_epoch", entry.seconds_per_epoch),
            ("samples_per_second", entry.samples_per_second),
            ("peak_memory_mb", entry.peak_memory_mb),
        ):
            v = _num(row.get(name))
            if v is not None:
                target.append(v)
        ece = _num(final.get("ece"))
        if ece is not None:
            entry.ece.append(ece)

    entries = list(groups.values())
    by_panel: dict[tuple, list[Entry]] = {}
    for entry in entries:
        by_panel.setdefault((entry.suite, entry.dataset, entry.model, entry.epochs), []).append(entry)
    for panel in by_panel.values():
        base = next((e for e in panel if e.policy == baseline), None)
        base_cost = _mean(base.seconds_per_epoch) if base and base.seconds_per_epoch else None
        for entry in panel:
            if base_cost and entry.seconds_per_epoch:
                entry.cost_vs_baseline = _mean(entry.seconds_per_epoch) / base_cost
        # baseline first, then the order of the suite (first row id)
        panel.sort(key=lambda e: 0 if e.policy == baseline else 1)
    ordered = []
    for panel in by_panel.values():
        ordered.extend(panel)
    return ordered


# ---- formatting --------------------------------------------------------------------------
def fmt(value: float | None) -> str:
    """Four significant digits, 'n/a' for missing values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4g}"


def fmt_pm(values: Sequence[float]) -> str:
    """'mean ± std' with both at the decimals that give the mean four significant digits."""
    if not values:
        return "n/a"
    mean, std = _mean(values), _std(values)
    magnitude = math.floor(math.log10(abs(mean))) if mean else 0
    decimals = min(4, max(0, 3 - magnitude))
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def fmt_args(args: dict, limit: int | None = None) -> str:
    text = ", ".join(f"{k}={_short(v)}" for k, v in sorted(args.items()) if v is not None)
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def _short(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def metric_title(metric: str, last_k: int | None = None) -> str:
    arrow = "↓" if lower_is_better(metric) else "↑"
    title = METRIC_TITLES.get(metric, metric)
    if last_k is not None:
        title = title.replace("last k epochs", f"last {last_k} epochs")
    return f"{title} {arrow}"


def _last_k(row: dict) -> int | None:
    trainer = (row.get("config") or {}).get("trainer") or {}
    value = trainer.get("last_k") if isinstance(trainer, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def panel_title(e: Entry) -> str:
    epochs = "" if e.epochs is None else f" · {e.epochs} epochs"
    return f"{e.dataset} · {e.model}{epochs}"


def _panels(entries: Sequence[Entry]) -> list[list[Entry]]:
    panels: dict[tuple, list[Entry]] = {}
    for e in entries:
        panels.setdefault((e.dataset, e.model, e.epochs, e.metric), []).append(e)
    return list(panels.values())


def _best(panel: Sequence[Entry]) -> Entry | None:
    if not panel:
        return None
    pick = min if lower_is_better(panel[0].metric) else max
    return pick(panel, key=lambda e: e.mean)


def table_rows(panel: Sequence[Entry]) -> tuple[list[str], list[list[str]]]:
    """Header and text cells of one panel's table (shared by Markdown and HTML)."""
    metric = panel[0].metric
    has_ece = any(e.ece for e in panel)
    ks = {e.last_k for e in panel}
    header = ["policy", "loss", "arguments", metric_title(metric, ks.pop() if len(ks) == 1 else None)]
    if all(e.set_args is not None for e in panel):
        header[2] = "arguments set by the suite"
    if has_ece:
        header.append("ECE ↓")
    header += ["time/epoch vs baseline", "s/epoch", "seeds"]
    rows = []
    for e in panel:
        loss = e.loss or ""
        loss_args = e.loss_args if e.set_loss_args is None else e.set_loss_args
        if loss_args:
            loss += f" ({fmt_args(loss_args)})"
        args = e.policy_args if e.set_args is None else e.set_args
        cells = [e.policy, loss, fmt_args(args, limit=80), fmt_pm(e.values)]
        if has_ece:
            cells.append(fmt_pm(e.ece))
        cells += [
            "n/a" if e.cost_vs_baseline is None else f"×{e.cost_vs_baseline:.2f}",
            fmt(_mean(e.seconds_per_epoch)) if e.seconds_per_epoch else "n/a",
            str(e.n),
        ]
        rows.append(cells)
    return header, rows


def _md_cell(text: str) -> str:
    return html.escape(text, quote=False).replace("|", "\\|").replace("\n", " ")


def render_markdown(entries: Sequence[Entry], suite: str, command: str | None = None,
                    image: str | None = None, failed: int = 0, level: int = 2) -> str:
    """Markdown: a title at heading ``level``, the command, the chart, one table per panel."""
    h1, h2 = "#" * level, "#" * (level + 1)
    lines = [f"{h1} Leaderboard: {_md_cell(suite)}", ""]
    lines.append(
        "Mean ± standard deviation over seeds; the best mean of each table is in bold. "
        "Time per epoch is relative to the baseline on the same dataset and model."
    )
    if command:
        lines += ["", "Regenerate with:", "", "```bash", command, "```"]
    if failed:
        lines += ["", f"{failed} failed run(s) are in the database and not counted here."]
    if image:
        lines += ["", f"![{_md_cell(suite)} leaderboard]({image})"]
    for panel in _panels(entries):
        e0 = panel[0]
        lines += ["", f"{h2} {_md_cell(panel_title(e0))} ({e0.task})", ""]
        header, rows = table_rows(panel)
        best = _best(panel)
        lines.append("| " + " | ".join(_md_cell(h) for h in header) + " |")
        lines.append("|" + "|".join("---" for _ in header) + "|")
        for e, cells in zip(panel, rows):
            cells = [_md_cell(c) for c in cells]
            if e is best and len(panel) > 1:
                cells[3] = f"**{cells[3]}**"
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render_csv(entries: Sequence[Entry]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for e in entries:
        writer.writerow([
            e.suite, e.dataset, e.model, "" if e.epochs is None else e.epochs, e.task, e.policy, e.mix or "",
            json.dumps(e.policy_args, sort_keys=True), e.loss or "",
            json.dumps(e.loss_args, sort_keys=True), e.metric, repr(e.mean), repr(e.std), e.n,
            " ".join(str(s) for s in e.seeds),
            repr(_mean(e.ece)) if e.ece else "", repr(_std(e.ece)) if e.ece else "",
            repr(_mean(e.seconds_per_epoch)) if e.seconds_per_epoch else "",
            "" if e.cost_vs_baseline is None else repr(e.cost_vs_baseline),
            repr(_mean(e.samples_per_second)) if e.samples_per_second else "",
            repr(_mean(e.peak_memory_mb)) if e.peak_memory_mb else "",
        ])
    return buf.getvalue()


def render_png(entries: Sequence[Entry], suite: str, baseline: str | None = "vanilla") -> bytes:
    """Bar chart, one panel per dataset and model, error bars = std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = _panels(entries)
    if not panels:
        raise ValueError(f"entries: got no successful runs for suite {suite!r}, nothing to plot")
    ncols = 2 if len(panels) > 1 else 1
    nrows = math.ceil(len(panels) / ncols)
    height = max(len(p) for p in panels) * 0.36 + 1.3
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.4 * ncols, height * nrows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        e0 = panel[0]
        labels = [e.policy for e in panel]
        means = [e.mean for e in panel]
        stds = [e.std for e in panel]
        colors = ["#9e9e9e" if e.policy == baseline else "#3b75af" for e in panel]
        best = _best(panel)
        if best is not None and len(panel) > 1:
            colors[panel.index(best)] = "#d9822b"
        ypos = list(range(len(panel)))
        ax.barh(ypos, means, xerr=stds, color=colors, capsize=3,
                error_kw={"elinewidth": 1, "ecolor": "#333333"})
        ax.set_yticks(ypos, labels)
        ax.invert_yaxis()
        lo = min(m - s for m, s in zip(means, stds))
        hi = max(m + s for m, s in zip(means, stds))
        span = (hi - lo) or abs(hi) or 1.0
        left = lo - 0.35 * span
        if lo >= 0 and left < 0:
            left = 0.0
        ax.set_xlim(left, hi + 0.25 * span)
        for y, m in zip(ypos, means):
            ax.text(ax.get_xlim()[0], y, f" {m:.4g}", va="center", ha="left", fontsize=8,
                    color="white" if m > ax.get_xlim()[0] + 0.15 * span else "black")
        ax.set_title(panel_title(e0), fontsize=11)
        note = "" if left == 0 else " (axis does not start at 0)"
        ks = {e.last_k for e in panel}
        ax.set_xlabel(metric_title(e0.metric, ks.pop() if len(ks) == 1 else None) + note, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.set_axisbelow(True)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(
        f"openmix leaderboard: {suite} (mean ± std over seeds; grey: {baseline}, orange: best)",
        fontsize=11,
    )
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}tr.best td{font-weight:bold}
img{max-width:100%}code,pre{background:#f6f6f6;padding:.2em .4em}
"""


def render_html(entries: Sequence[Entry], suite: str, png: bytes | None = None,
                command: str | None = None, failed: Sequence[dict] = ()) -> str:
    """Self-contained HTML page; every value is escaped with html.escape."""
    esc = html.escape
    generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>openmix leaderboard: {esc(suite)}</title>", f"<style>{_CSS}</style>",
        "</head><body>", f"<h1>openmix leaderboard: {esc(suite)}</h1>",
        f"<p>Generated {esc(generated)}. Mean ± standard deviation over seeds; "
        "time per epoch relative to the baseline on the same dataset and model.</p>",
    ]
    if command:
        parts.append(f"<p>Regenerate with:</p><pre><code>{esc(command)}</code></pre>")
    if png:
        data = base64.b64encode(png).decode("ascii")
        parts.append(f'<img alt="{esc(suite)} leaderboard chart" src="data:image/png;base64,{data}">')
    for panel in _panels(entries):
        e0 = panel[0]
        parts.append(f"<h2>{esc(panel_title(e0))} ({esc(e0.task)})</h2>")
        header, rows = table_rows(panel)
        best = _best(panel)
        parts.append("<table><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header)
                     + "</tr></thead><tbody>")
        for e, cells in zip(panel, rows):
            cls = ' class="best"' if e is best and len(panel) > 1 else ""
            tds = []
            for i, c in enumerate(cells):
                num = ' class="num"' if i >= 3 else ""
                title = f' title="{esc(fmt_args(e.policy_args))}"' if i == 2 else ""
                tds.append(f"<td{num}{title}>{esc(c)}</td>")
            parts.append(f"<tr{cls}>" + "".join(tds) + "</tr>")
        parts.append("</tbody></table>")
    if failed:
        parts.append(f"<h2>Failed runs ({len(failed)})</h2><ul>")
        for row in failed:
            err = (row.get("error") or "").strip().splitlines()
            parts.append(
                f"<li>{esc(str(row.get('dataset')))} / {esc(str(row.get('model')))} / "
                f"{esc(str(row.get('policy')))} seed {esc(str(row.get('seed')))}: "
                f"<code>{esc(err[-1] if err else 'unknown error')}</code></li>"
            )
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# ---- files -------------------------------------------------------------------------------
def readme_markers(suite: str) -> tuple[str, str]:
    return f"<!-- openmix-leaderboard:{suite} -->", f"<!-- /openmix-leaderboard:{suite} -->"


def update_readme(readme: str | os.PathLike, suite: str, markdown: str) -> Path:
    """Replace the text between the suite's two markers in ``readme`` with ``markdown``."""
    path = Path(readme)
    if not path.is_file():
        raise ValueError(f"readme: got {str(path)!r}, which does not exist")
    text = path.read_text(encoding="utf-8")
    start, end = readme_markers(suite)
    i, j = text.find(start), text.find(end)
    if i < 0 or j < i:
        raise ValueError(f"readme: got {str(path)!r}, which lacks the markers {start} ... {end} "
                         "(put them where the leaderboard goes)")
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
) -> list[Path]:
    """Read ``suite`` from one or more databases and write <suite>.md/.csv/.png/.html (and the
    Markdown between the suite's markers in ``readme``, if given)."""
    dbs = [db] if isinstance(db, (str, os.PathLike)) else list(db)
    if not dbs:
        raise ValueError("db: got no database paths, expected at least one")
    rows, failed = [], []
    for path in dbs:
        if not Path(path).is_file():
            raise ValueError(f"db: got {str(path)!r}, which does not exist")
        results = ResultsDB(path)
        rows += results.runs(suite=suite, status="ok")
        failed += results.runs(suite=suite, status="failed")
    entries = summarize(rows, baseline=baseline, headline=headline)
    if not entries:
        known = sorted({s for p in dbs for s in ResultsDB(p).suites()})
        raise ValueError(
            f"suite: got {suite!r}, which has no successful runs in {', '.join(map(str, dbs))}; "
            f"suites there: {known}"
        )
    out = Path(out_dir)
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in suite)
    png = render_png(entries, suite, baseline)
    written = [
        write_bytes_atomic(out / f"{stem}.png", png),
        write_text_atomic(out / f"{stem}.csv", render_csv(entries)),
        write_text_atomic(out / f"{stem}.md", render_markdown(entries, suite, command, f"{stem}.png",
                                                         failed=len(failed))),
        write_text_atomic(out / f"{stem}.html", render_html(entries, suite, png, command, failed)),
    ]
    if readme is not None:
        image = os.path.relpath(out / f"{stem}.png", Path(readme).resolve().parent)
        section = render_markdown(entries, suite, command, Path(image).as_posix(),
                                  failed=len(failed), level=3)
        written.append(update_readme(readme, suite, section))
    return written


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="openmix-leaderboard",
        description="Render a suite's leaderboard (Markdown, CSV, PNG, HTML) from the results "
        "database.",
    )
    parser.add_argument("--db", action="append", default=None,
                        help="results database (repeat to merge several; default results.db)")
    parser.add_argument("--suite", default="cpu-small", help="suite name (default cpu-small)")
    parser.add_argument("--out", default="leaderboard", help="output directory")
    parser.add_argument("--baseline", default="vanilla",
                        help="policy label that costs are relative to (default vanilla)")
    parser.add_argument("--readme", default=None,
                        help="also write the tables into this Markdown file, between the lines "
                        "<!-- openmix-leaderboard:SUITE --> and <!-- /openmix-leaderboard:SUITE -->")
    parser.add_argument("--command", default=None,
                        help="regenerate command shown in the page (default: this command)")
    args = parser.parse_args(argv)
    dbs = args.db or ["results.db"]
    command = args.command or default_command(dbs, args.suite, args.out, args.readme)
    try:
        written = render_leaderboard(dbs, args.suite, args.out, baseline=args.baseline,
                                     command=command, readme=args.readme)
    except ValueError as err:
        parser.exit(2, f"openmix-leaderboard: {err}\n")
    for path in written:
        print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
