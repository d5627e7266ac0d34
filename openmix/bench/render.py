"""Text renderers of a leaderboard :class:`~openmix.bench.aggregate.Report`: Markdown, CSV and a
self-contained HTML page. They only read the report; every number was computed before.
"""
from __future__ import annotations

import base64
import csv
import datetime as _dt
import html
import io
import json
import math
from collections.abc import Sequence
from typing import Any

from .aggregate import CellReport, PanelReport, Report, Selection
from .stats import RankSummary

METRIC_TITLES = {
    "top1_median_last_k": "top-1 (median of last k epochs)",
    "top1": "top-1 (final)",
    "rmse": "RMSE (final)",
    "rmse_median_last_k": "RMSE (median of last k epochs)",
    "selected.test.top1": "top-1 (validation-selected epoch)",
    "selected.test.rmse": "RMSE (validation-selected epoch)",
}
VERDICT_MARKS = {"better": "✓ better", "worse": "✗ worse", "not significant": "≈ not significant"}

CSV_COLUMNS = (
    "suite", "dataset", "model", "epochs", "task", "policy", "mix", "policy_args", "loss",
    "loss_args", "metric", "higher_is_better", "selection", "n", "seeds", "mean", "std", "ci_low",
    "ci_high", "ci_level", "ci_method", "baseline", "n_pairs", "delta", "delta_ci_low",
    "delta_ci_high", "delta_ci_level", "p_value", "p_holm", "verdict", "verdict_reason",
    "prob_improvement", "best", "mean_rank", "rank_group", "ece_mean", "ece_std",
    "seconds_per_epoch", "cost_vs_baseline", "samples_per_second", "peak_memory_mb",
)


# ---- numbers -----------------------------------------------------------------------------
def fmt(value: float | None) -> str:
    """Four significant digits, 'n/a' for missing values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4g}"


def decimals_for(value: float) -> int:
    """Decimals that give ``value`` four significant digits (at most 4)."""
    if not value or not math.isfinite(value):
        return 3
    return min(4, max(0, 3 - math.floor(math.log10(abs(value)))))


def fmt_pm(mean: float, half_width: float, decimals: int) -> str:
    """'mean ± half-width' at ``decimals``; the mean alone when there is no interval."""
    if math.isnan(half_width):
        return f"{mean:.{decimals}f} (no interval)"
    return f"{mean:.{decimals}f} ± {half_width:.{decimals}f}"


def fmt_signed_pm(delta: float, low: float, high: float, decimals: int) -> str:
    if math.isnan(delta):
        return "n/a"
    sign = "+" if delta >= 0 else "−"
    text = f"{sign}{abs(delta):.{decimals}f}"
    if math.isnan(low):
        return text
    return f"{text} ± {(high - low) / 2:.{decimals}f}"


def fmt_p(p_value: float) -> str:
    if math.isnan(p_value):
        return "n/a"
    return "< 0.001" if p_value < 0.001 else f"{p_value:.3f}"


def fmt_args(args: dict, limit: int | None = None) -> str:
    text = ", ".join(f"{k}={_short(v)}" for k, v in sorted(args.items()) if v is not None)
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def _short(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def metric_title(panel: PanelReport) -> str:
    name = panel.metric.name
    title = METRIC_TITLES.get(name)
    if title is None:
        title = f"{panel.metric.leaf} ({name})" if "." in name else name
    ks = {s.last_k for s in panel.selections if s.last_k is not None}
    if len(ks) == 1:
        title = title.replace("last k epochs", f"last {ks.pop()} epochs")
    return f"{title} {'↑' if panel.metric.higher_is_better else '↓'}"


# ---- the explanations every page carries -------------------------------------------------
def selection_sentence(selection: Selection) -> str:
    k = f" {selection.last_k}" if selection.last_k else " k"
    if selection.rule == "best_val":
        on = f" {selection.on}" if selection.on else ""
        return (f"The headline is the test metric at the epoch with the best validation{on}, on "
                "a validation split carved from the training data. Test metrics never influence "
                "which epoch is chosen.")
    if selection.rule == "last_k":
        return (f"The headline is the median of the last{k} test epochs (OpenMixup-style), not "
                "validation-selected. The test set is looked at when reporting, so small "
                "differences deserve extra caution.")
    if selection.rule == "final":
        return ("The headline is the test metric of the final epoch, not validation-selected. "
                "No epoch is chosen, so the test set does not influence the number.")
    return (f"The runs do not say how the headline epoch was chosen (rule {selection.rule!r}). "
            "Read the numbers as test metrics of an unknown epoch.")


def explanations(report: Report) -> list[tuple[str, str]]:
    """(topic, two sentences) pairs shown above the tables of every page."""
    level = f"{report.confidence:.0%}"
    base = report.baseline or "the baseline"
    out = [
        ("Interval", (
            f"Each headline cell is the mean over n seeds ± the half-width of a {level} "
            "Student-t interval, mean ± t(n−1)·s/√n. With 3–5 seeds a bootstrap percentile "
            "interval is too narrow, so the t-interval is used; one seed gives no interval.")),
        ("Paired test", (
            f"Δ is the mean over the seeds both ran of (policy − {base}), tested with a two-sided "
            "paired t-test (a Wilcoxon signed-rank test cannot reach p < 0.05 with fewer than 6 "
            "pairs). The p-values of one table are Holm-corrected and the Δ interval is the "
            f"t-interval at the matching level 1 − {report.alpha:g}·p/p_Holm, so the verdict is "
            "better or worse (in the metric's direction, ↑ or ↓) exactly when that interval "
            "excludes 0, and not significant otherwise.")),
    ]
    rules = tuple(dict.fromkeys(s for p in report.panels for s in p.selections))
    for rule in rules or (Selection("unknown"),):
        where = [p.title for p in report.panels if rule in p.selections]
        topic = "Selection" if len(rules) < 2 else f"Selection ({'; '.join(where)})"
        out.append((topic, selection_sentence(rule)))
    out.append(("Ranks", (
        "Across the tables of one task each policy is ranked per table (1 = best, ties averaged) "
        "and the ranks are averaged; the Friedman test asks whether any mean ranks differ. Only "
        f"if it does (p < {report.alpha:g}) are two policies called different when their mean "
        "ranks are at least the Nemenyi critical difference CD = q·√(k(k+1)/6N) apart "
        "(Demšar 2006). A policy that does not run on every table of its task (e.g. a 2-D-only "
        "method in a suite with 1-D data) is left out of the ranks: its mean rank is blank.")))
    if report.claims:
        out.append(("Claims", (
            "Each claim compares a policy with its baseline on the datasets it names, paired by seed "
            "with Holm's correction across those datasets; it is reproduced when every dataset is "
            "significant in the claimed direction, not reproduced when any is significant the other "
            "way, and inconclusive otherwise. A claim that something does not help (expect not_better) "
            "is reproduced when no dataset is significantly better, which is only as strong as its interval.")))
    out.append(("Best", (
        "A policy is bold only when its interval clears the runner-up's; otherwise the tables "
        "name the policies tied with the top mean. A paired verdict can be better while the "
        "intervals overlap, because pairing by seed removes the spread that seeds share; time "
        f"per epoch is relative to {base}.")))
    return out


# ---- one table's cells (shared by Markdown and HTML) -------------------------------------
def _has_comparison(panel: PanelReport) -> bool:
    return any(c.comparison is not None for c in panel.cells)


def table_header(panel: PanelReport, baseline: str | None) -> list[str]:
    set_args = all(c.data.set_args is not None for c in panel.cells)
    header = ["policy", "loss", "arguments set by the suite" if set_args else "arguments",
              f"{metric_title(panel)}: mean ± 95% CI (n)"]
    if _has_comparison(panel):
        header += [f"Δ vs {baseline} ± Holm CI (pairs)", "p (Holm)", "verdict"]
    if any(c.mean_rank is not None for c in panel.cells):
        header.append("mean rank")
    if any(c.ece is not None for c in panel.cells):
        header.append("ECE ↓")
    return header + ["time/epoch vs baseline", "s/epoch"]


def _comparison_cells(cell: CellReport, decimals: int) -> list[str]:
    c = cell.comparison
    if c is None:
        return ["", "", "baseline"]
    delta = fmt_signed_pm(c.delta, c.delta_ci_low, c.delta_ci_high, decimals)
    untested = math.isnan(c.p_value)
    verdict = VERDICT_MARKS[c.verdict] + (" (not tested)" if untested else "")
    p_text = "n/a" if untested else f"{fmt_p(c.p_value)} ({fmt_p(c.p_holm)})"
    return [f"{delta} ({c.n_pairs})", p_text, verdict]


def _headline_decimals(panel: PanelReport) -> int:
    means = [abs(c.stats.mean) for c in panel.cells if math.isfinite(c.stats.mean)]
    return decimals_for(max(means)) if means else 3


def table_rows(panel: PanelReport, baseline: str | None) -> list[list[str]]:
    """Text cells of one table, in the order of :func:`table_header`."""
    decimals = _headline_decimals(panel)
    header = table_header(panel, baseline)
    rows = []
    for cell in panel.cells:
        d = cell.data
        loss_args = d.loss_args if d.set_loss_args is None else d.set_loss_args
        loss = (d.loss or "") + (f" ({fmt_args(loss_args)})" if loss_args else "")
        args = d.policy_args if d.set_args is None else d.set_args
        s = cell.stats
        headline = (f"{s.mean:.{decimals}f} (n=1, no interval)" if s.n < 2 else
                    f"{fmt_pm(s.mean, s.half_width, decimals)} (n={s.n})")
        cells = [d.policy, loss, fmt_args(args, limit=80), headline]
        if _has_comparison(panel):
            cells += _comparison_cells(cell, decimals)
        if "mean rank" in header:
            cells.append("" if cell.mean_rank is None else f"{cell.mean_rank:.2f}")
        if "ECE ↓" in header:
            cells.append(_ece_cell(cell))
        cells += ["n/a" if cell.cost_vs_baseline is None else f"×{cell.cost_vs_baseline:.2f}",
                  fmt(sum(d.seconds_per_epoch) / len(d.seconds_per_epoch))
                  if d.seconds_per_epoch else "n/a"]
        rows.append(cells)
    return rows


def _ece_cell(cell: CellReport) -> str:
    if cell.ece is None:
        return "n/a"
    text = fmt_pm(cell.ece.mean, cell.ece.half_width, 4)
    return text if cell.ece.n == cell.stats.n else f"{text} (n={cell.ece.n})"


def best_sentence(panel: PanelReport) -> str:
    if panel.winner is not None:
        return f"Best: {panel.winner} (its 95% interval clears the runner-up's)."
    if panel.tied:
        return (f"No clear best — tie: {', '.join(panel.tied)} (each interval overlaps the "
                f"top mean's, {panel.tied[0]}).")
    if len(panel.cells) > 1:
        return "No clear best: the top mean has no interval (one seed)."
    return ""


def rank_lines(summary: RankSummary, baseline: str | None) -> list[str]:
    """Sentences on one rank group: Friedman result, CD and the groups it leaves together."""
    k, n = len(summary.policies), summary.n_datasets
    where = f"all {n} tables" if n > 1 else "the one table"
    lines = [f"{k} policies are in {where} of this task ({'; '.join(summary.panels)})."]
    if summary.reason:
        lines.append(f"No Friedman test: {summary.reason}.")
        return lines
    verdict = "some mean ranks differ" if summary.friedman_p < summary.alpha else \
        "no difference between mean ranks detected, so no post-hoc test"
    lines.append(f"Friedman χ² = {summary.friedman_statistic:.3g}, p = {fmt_p(summary.friedman_p)} "
                 f"(k = {k}, N = {n}): {verdict}. Nemenyi CD = {summary.critical_difference:.3g}"
                 + (" (no pair can differ: the CD spans every rank)." if
                    summary.critical_difference >= k - 1 else "."))
    if summary.cliques:
        groups = "; ".join("{" + ", ".join(c) + "}" for c in summary.cliques)
        lines.append(f"Not significantly different from each other: {groups}.")
    return lines


# ---- Markdown ----------------------------------------------------------------------------
def _md(text: str) -> str:
    return html.escape(text, quote=False).replace("|", "\\|").replace("\n", " ")


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]], bold_row: int | None = None,
              bold_col: int = 3) -> list[str]:
    lines = ["| " + " | ".join(_md(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    for i, row in enumerate(rows):
        cells = [_md(c) for c in row]
        if i == bold_row:
            cells[0], cells[bold_col] = f"**{cells[0]}**", f"**{cells[bold_col]}**"
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _md_ranks(report: Report, h2: str, cd_image: str | None) -> list[str]:
    lines = ["", f"{h2} Ranks across datasets"]
    if cd_image:
        lines += ["", f"![{_md(report.suite)} critical-difference diagram]({cd_image})"]
    for summary in report.ranks:
        lines += ["", f"**{_md(summary.group)}.** " + " ".join(_md(s) for s in rank_lines(
            summary, report.baseline)), ""]
        order = sorted(range(len(summary.policies)), key=lambda j: summary.mean_ranks[j])
        rows = [[summary.policies[j], f"{summary.mean_ranks[j]:.2f}"] for j in order]
        lines += _md_table(["policy", f"mean rank (N = {summary.n_datasets})"], rows, bold_col=1)
    return lines


# ---- claims -------------------------------------------------------------------------------
CLAIM_MARKS = {"reproduced": "✓ reproduced", "not reproduced": "✗ not reproduced", "inconclusive": "≈ inconclusive"}
CLAIM_HEADER = ["claim", "source", "metric", "dataset", "policy − baseline (95% CI, n)", "Holm p", "verdict"]


def claim_rows(result: Any) -> list[list[str]]:
    """One row per dataset of a claim (the claim's text, source and verdict on its first row)."""
    spec, arrow = result.spec, "↑" if result.higher_is_better else "↓"
    label = f"{spec.policy} vs {spec.baseline}" + (f", gain vs {spec.reference}" if spec.reference else "")
    rows = []
    for i, r in enumerate(result.results):
        c = r.comparison
        decimals = decimals_for(abs(c.delta)) if math.isfinite(c.delta) else 2
        delta = (fmt_signed_pm(c.delta, c.delta_ci_low, c.delta_ci_high, decimals) if math.isfinite(c.delta_ci_low)
                 else (f"{c.delta:+.{decimals}f}" if math.isfinite(c.delta) else "n/a"))
        first = i == 0
        rows.append([f"{spec.text} ({label})" if first else "", spec.source if first else "",
                     f"{result.metric} {arrow}" if first else "", r.dataset, f"{delta} (n={c.n_pairs})",
                     fmt_p(c.p_holm), CLAIM_MARKS[result.verdict] if first else ""])
    return rows


def claim_outcome(result: Any) -> str:
    """The verdict, why, and the suite's reading of it (``note``: e.g. the likely reason a claim fails)."""
    text = f"{result.verdict}: {result.reason}"
    return f"{text}. {result.spec.note}" if result.spec.note else text


def _md_claims(report: Report, h2: str) -> list[str]:
    lines = ["", f"{h2} Claims", ""]
    rows = [row for result in report.claims for row in claim_rows(result)]
    lines += _md_table(CLAIM_HEADER, rows)
    lines += [""] + [f"- **{_md(r.spec.id)}**: {_md(claim_outcome(r))}" for r in report.claims]
    return lines


def render_claims_csv(report: Report) -> str:
    """One row per (claim, dataset): the comparison at full precision and the claim's verdict."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["claim", "text", "source", "expect", "metric", "higher_is_better", "policy", "baseline",
                     "reference", "dataset", "n_pairs", "policy_mean", "baseline_mean", "delta", "delta_ci_low",
                     "delta_ci_high", "p_value", "p_holm", "dataset_verdict", "verdict", "reason", "note"])
    for result in report.claims:
        spec = result.spec
        for r in result.results:
            c = r.comparison
            writer.writerow([spec.id, spec.text, spec.source, spec.expect, result.metric, result.higher_is_better,
                             spec.policy, spec.baseline, spec.reference or "", r.dataset, c.n_pairs,
                             _num(r.policy_mean), _num(r.baseline_mean), _num(c.delta), _num(c.delta_ci_low),
                             _num(c.delta_ci_high), _num(c.p_value), _num(c.p_holm), c.verdict, result.verdict,
                             result.reason, spec.note])
    return buf.getvalue()


def _html_claims(report: Report) -> list[str]:
    esc = html.escape
    parts = ["<h2>Claims</h2>", "<table><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in CLAIM_HEADER)
             + "</tr></thead><tbody>"]
    for result in report.claims:
        css = {"reproduced": "better", "not reproduced": "worse"}.get(result.verdict, "ns")
        for row in claim_rows(result):
            cells = "".join(f"<td>{esc(c)}</td>" for c in row[:-1])
            parts.append(f"<tr>{cells}<td class=\"{css}\">{esc(row[-1])}</td></tr>")
    parts.append("</tbody></table><ul>")
    parts += [f"<li><b>{esc(r.spec.id)}</b>: {esc(claim_outcome(r))}</li>" for r in report.claims]
    return parts + ["</ul>"]


def render_markdown(report: Report, command: str | None = None, image: str | None = None,
                    cd_image: str | None = None, level: int = 2) -> str:
    """Markdown: title at heading ``level``, explanations, command, charts, one table per panel,
    the ranks across datasets."""
    h1, h2 = "#" * level, "#" * (level + 1)
    lines = [f"{h1} Leaderboard: {_md(report.suite)}", ""]
    lines += [f"- **{topic}.** {_md(text)}" for topic, text in explanations(report)]
    if command:
        lines += ["", "Regenerate with:", "", "```bash", command, "```"]
    if report.failed:
        lines += ["", f"{len(report.failed)} failed run(s) are in the database and not counted here."]
    if report.superseded:
        lines += ["", (f"{report.superseded} older run(s) were replaced by a later run of the "
                       "same seed and are not counted.")]
    if report.claims:
        lines += _md_claims(report, h2)
    if image:
        lines += ["", f"![{_md(report.suite)} leaderboard]({image})"]
    for panel in report.panels:
        lines += ["", f"{h2} {_md(panel.title)} ({_md(panel.task)})", ""]
        winner = next((i for i, c in enumerate(panel.cells) if c.data.policy == panel.winner), None)
        lines += _md_table(table_header(panel, report.baseline), table_rows(panel, report.baseline),
                           bold_row=winner)
        sentence = best_sentence(panel)
        if sentence:
            lines += ["", _md(sentence)]
    if report.ranks:
        lines += _md_ranks(report, h2, cd_image)
    return "\n".join(lines) + "\n"


# ---- CSV ---------------------------------------------------------------------------------
def _num(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return repr(value) if isinstance(value, float) else str(value)


def _csv_row(report: Report, panel: PanelReport, cell: CellReport) -> list[str]:
    d, s, c = cell.data, cell.stats, cell.comparison
    mean_of = (lambda xs: _num(sum(xs) / len(xs)) if xs else "")
    best = "winner" if d.policy == panel.winner else ("tie" if d.policy in panel.tied else "")
    comparison = ["", "", "", "", "", "", "", "", "", ""] if c is None else [
        _num(c.n_pairs), _num(c.delta), _num(c.delta_ci_low), _num(c.delta_ci_high),
        _num(c.delta_confidence), _num(c.p_value), _num(c.p_holm), c.verdict, c.reason,
        _num(c.prob_improvement)]
    return [
        d.suite, d.dataset, d.model, _num(d.epochs), d.task, d.policy, d.mix or "",
        json.dumps(d.policy_args, sort_keys=True), d.loss or "", json.dumps(d.loss_args, sort_keys=True),
        d.metric, str(panel.metric.higher_is_better).lower(),
        " ".join(sorted({sel.rule for sel in d.selections})), _num(s.n),
        " ".join(str(seed) for seed in d.seeds), _num(s.mean), _num(s.std), _num(s.ci_low),
        _num(s.ci_high), _num(s.confidence), s.method, report.baseline or "", *comparison, best,
        _num(cell.mean_rank), cell.rank_group or "",
        _num(cell.ece.mean) if cell.ece else "", _num(cell.ece.std) if cell.ece else "",
        mean_of(d.seconds_per_epoch), _num(cell.cost_vs_baseline),
        mean_of(d.samples_per_second), mean_of(d.peak_memory_mb),
    ]


def render_csv(report: Report) -> str:
    """One line per cell with :data:`CSV_COLUMNS`; empty fields are missing values."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for panel in report.panels:
        for cell in panel.cells:
            writer.writerow(_csv_row(report, panel, cell))
    return buf.getvalue()


# ---- HTML --------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1400px;color:#222;padding:0 1em}
div.scroll{overflow-x:auto}table{border-collapse:collapse;margin:.5em 0 .6em;font-size:.9em}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left}
th{background:#f3f3f3;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.best td{font-weight:bold}td.better{background:#e3f4e1}td.worse{background:#f9e0de}td.ns{color:#666}
td.baseline{color:#666;font-style:italic}td.better,td.worse,td.ns,td.baseline{white-space:nowrap}p.note{margin:.2em 0 1.6em;color:#444}
img{max-width:100%}code,pre{background:#f6f6f6;padding:.2em .4em}dl dt{font-weight:600;margin-top:.4em}
dl dd{margin-left:1.5em}
"""
_VERDICT_CLASS = {"better": "better", "worse": "worse", "not significant": "ns"}


def _html_cell(cell: CellReport, index: int, text: str, header: Sequence[str]) -> str:
    esc = html.escape
    name = header[index]
    classes, title = [], ""
    if index >= 3 and name != "verdict":
        classes.append("num")
    if index == 2:
        title = fmt_args(cell.data.policy_args)
    if name == "verdict":
        c = cell.comparison
        classes.append("baseline" if c is None else _VERDICT_CLASS[c.verdict])
        title = "" if c is None else c.reason
    attrs = (f' class="{" ".join(classes)}"' if classes else "") + (f' title="{esc(title)}"' if title else "")
    return f"<td{attrs}>{esc(text)}</td>"


def _html_table(panel: PanelReport, baseline: str | None) -> list[str]:
    esc = html.escape
    header = table_header(panel, baseline)
    parts = ['<div class="scroll"><table><thead><tr>'
             + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr></thead><tbody>"]
    for cell, texts in zip(panel.cells, table_rows(panel, baseline)):
        cls = ' class="best"' if cell.data.policy == panel.winner else ""
        tds = "".join(_html_cell(cell, i, t, header) for i, t in enumerate(texts))
        parts.append(f"<tr{cls}>{tds}</tr>")
    parts.append("</tbody></table></div>")
    sentence = best_sentence(panel)
    if sentence:
        parts.append(f'<p class="note">{esc(sentence)}</p>')
    return parts


def _html_ranks(report: Report, cd_png: bytes | None) -> list[str]:
    esc = html.escape
    parts = ["<h2>Ranks across datasets</h2>"]
    if cd_png:
        data = base64.b64encode(cd_png).decode("ascii")
        parts.append(f'<img alt="{esc(report.suite)} critical-difference diagram" '
                     f'src="data:image/png;base64,{data}">')
    for summary in report.ranks:
        parts.append(f"<h3>{esc(summary.group)}</h3>")
        parts += [f"<p>{esc(line)}</p>" for line in rank_lines(summary, report.baseline)]
        order = sorted(range(len(summary.policies)), key=lambda j: summary.mean_ranks[j])
        parts.append(f"<table><thead><tr><th>policy</th><th>mean rank (N = {summary.n_datasets})"
                     "</th></tr></thead><tbody>")
        parts += [f'<tr><td>{esc(summary.policies[j])}</td><td class="num">'
                  f"{summary.mean_ranks[j]:.2f}</td></tr>" for j in order]
        parts.append("</tbody></table>")
    return parts


def _html_failed(report: Report) -> list[str]:
    esc = html.escape
    parts = [f"<h2>Failed runs ({len(report.failed)})</h2><ul>"]
    for run in report.failed:
        parts.append(f"<li>{esc(run.dataset)} / {esc(run.model)} / {esc(run.policy)} seed "
                     f"{esc(str(run.seed))}: <code>{esc(run.error)}</code></li>")
    return parts + ["</ul>"]


def render_html(report: Report, png: bytes | None = None, cd_png: bytes | None = None,
                command: str | None = None) -> str:
    """Self-contained HTML page (charts inlined); every value is escaped with html.escape."""
    esc = html.escape
    generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>openmix leaderboard: {esc(report.suite)}</title>", f"<style>{_CSS}</style>",
        "</head><body>", f"<h1>openmix leaderboard: {esc(report.suite)}</h1>",
        f"<p>Generated {esc(generated)} from the per-seed rows of the results database.</p><dl>",
    ]
    parts += [f"<dt>{esc(topic)}</dt><dd>{esc(text)}</dd>" for topic, text in explanations(report)]
    parts.append("</dl>")
    if command:
        parts.append(f"<p>Regenerate with:</p><pre><code>{esc(command)}</code></pre>")
    if report.superseded:
        parts.append(f"<p>{report.superseded} older run(s) were replaced by a later run of the "
                     "same seed and are not counted.</p>")
    if report.claims:
        parts += _html_claims(report)
    if png:
        data = base64.b64encode(png).decode("ascii")
        parts.append(f'<img alt="{esc(report.suite)} leaderboard chart" src="data:image/png;base64,{data}">')
    for panel in report.panels:
        parts.append(f"<h2>{esc(panel.title)} ({esc(panel.task)})</h2>")
        parts += _html_table(panel, report.baseline)
    if report.ranks:
        parts += _html_ranks(report, cd_png)
    if report.failed:
        parts += _html_failed(report)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
