"""PNG renderers of a leaderboard :class:`~openmix.bench.aggregate.Report`: a bar chart with
95% interval error bars and a critical-difference diagram. They only read the report."""
from __future__ import annotations

import io
import math
from collections.abc import Sequence

from .aggregate import PanelReport, Report
from .render import metric_title
from .stats import RankSummary

COLORS = {"baseline": "#9e9e9e", "better": "#3a9a4a", "worse": "#c8473d",
          "not significant": "#3b75af", None: "#3b75af"}
MARKS = {"better": "✓", "worse": "✗", "not significant": "", "baseline": "", None: ""}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    _pyplot().close(fig)
    return buf.getvalue()


def _bar_panel(ax, panel: PanelReport, baseline: str | None, rows: int) -> None:
    cells = panel.cells
    means = [c.stats.mean for c in cells]
    halves = [0.0 if math.isnan(c.stats.half_width) else c.stats.half_width for c in cells]
    verdicts = ["baseline" if c.data.policy == baseline else
                (c.comparison.verdict if c.comparison else None) for c in cells]
    ypos = list(range(len(cells)))
    ax.barh(ypos, means, color=[COLORS[v] for v in verdicts],
            edgecolor=["#d9822b" if c.data.policy == panel.winner else "none" for c in cells],
            linewidth=2)
    with_interval = [i for i, c in enumerate(cells) if c.stats.n > 1]  # one seed: no bar drawn
    ax.errorbar([means[i] for i in with_interval], with_interval,
                xerr=[halves[i] for i in with_interval], fmt="none", ecolor="#333333",
                elinewidth=1, capsize=3)
    ax.set_yticks(ypos, [f"{c.data.policy} {MARKS[v]}".strip() + f" (n={c.stats.n})"
                         for c, v in zip(cells, verdicts)], fontsize=8)
    ax.set_ylim(rows - 0.5, -0.5)  # top to bottom, same bar thickness in every panel
    lo = min(m - h for m, h in zip(means, halves))
    hi = max(m + h for m, h in zip(means, halves))
    span = (hi - lo) or abs(hi) or 1.0
    left = lo - 0.35 * span
    if lo >= 0 and left < 0:
        left = 0.0
    ax.set_xlim(left, hi + 0.1 * span)
    for y, m in zip(ypos, means):
        ax.text(left, y, f" {m:.4g}", va="center", ha="left", fontsize=8, color="white")
    ax.set_title(panel.title, fontsize=10)
    note = "" if left == 0 else " (axis does not start at 0)"
    ax.set_xlabel(metric_title(panel) + note, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)


def render_bars(report: Report) -> bytes:
    """Bar chart, one panel per table: mean over seeds with its 95% t-interval as error bar;
    colour = verdict against the baseline, orange edge = clear winner."""
    plt = _pyplot()
    panels = report.panels
    if not panels:
        raise ValueError(f"report must hold at least one table, got none for suite {report.suite!r}")
    ncols = 2 if len(panels) > 1 else 1
    nrows = math.ceil(len(panels) / ncols)
    # each row of panels as tall as its longest table, bars equally thick everywhere
    counts = [max(len(p.cells) for p in panels[r * ncols:(r + 1) * ncols]) for r in range(nrows)]
    heights = [0.34 * c + 1.1 for c in counts]
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.6 * ncols, sum(heights) + 0.9), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for i, panel in enumerate(panels):
        _bar_panel(axes.flat[i], panel, report.baseline, counts[i // ncols])
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"openmix leaderboard: {report.suite} — mean ± 95% t-interval over seeds\n"
                 f"vs {report.baseline}: green ✓ better, red ✗ worse, blue not significant "
                 "(paired t-test, Holm); grey: baseline; orange edge: clear winner", fontsize=10)
    fig.tight_layout()
    return _png(fig)


def _cd_layout(summary: RankSummary) -> tuple[float, float, float]:
    """(y of the first label row, step between rows, lowest y) of one diagram, axis at y = 0."""
    first = -0.35 - 0.22 * len(summary.cliques) - 0.3
    step = 0.42
    rows = (len(summary.policies) + 1) // 2
    return first, step, first - step * (rows - 1) - 0.35


def _cd_axis(ax, summary: RankSummary) -> None:
    """One critical-difference diagram: rank axis (1 = best, left), each policy hanging from its
    mean rank to a label at the side, the CD as a red bar, Nemenyi's groups as thick lines."""
    k = len(summary.policies)
    top = max(k, 2)
    margin = 0.4 * (top - 1)
    first, step, bottom = _cd_layout(summary)
    ax.set_xlim(1 - margin, top + margin)
    ax.set_ylim(bottom, 1.45)
    ax.axis("off")
    ax.hlines(0, 1, top, color="black", linewidth=1)
    for r in range(1, top + 1):
        ax.vlines(r, 0, 0.12, color="black", linewidth=1)
        ax.text(r, 0.17, str(r), ha="center", va="bottom", fontsize=8)
    order = sorted(range(k), key=lambda j: summary.mean_ranks[j])
    half = (k + 1) // 2
    for pos, j in enumerate(order):
        rank = summary.mean_ranks[j]
        left = pos < half
        y = first - step * (pos if left else k - 1 - pos)
        x_end = 1 - 0.04 * (top - 1) if left else top + 0.04 * (top - 1)
        ax.plot([rank, rank, x_end], [0, y, y], color="#333333", linewidth=0.8)
        ax.text(x_end - 0.02 * (top - 1) if left else x_end + 0.02 * (top - 1), y,
                f"{summary.policies[j]} ({rank:.2f})", fontsize=8, va="center",
                ha="right" if left else "left")
    if math.isfinite(summary.critical_difference):
        cd = summary.critical_difference
        ax.plot([1, 1 + cd], [0.85, 0.85], color="#c8473d", linewidth=2)
        ax.vlines([1, 1 + cd], 0.78, 0.92, color="#c8473d", linewidth=1)
        ax.text(1 + cd / 2, 0.97, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=8)
    for level, clique in enumerate(summary.cliques):
        ranks = [summary.rank_of(p) for p in clique]
        y = -0.35 - 0.22 * level
        ax.plot([min(ranks) - 0.04, max(ranks) + 0.04], [y, y], color="black", linewidth=3,
                solid_capstyle="butt")


def _cd_title(summary: RankSummary) -> str:
    head = f"{summary.group}: {len(summary.policies)} policies on {summary.n_datasets} table(s)"
    if summary.reason:
        return f"{head}\nno Friedman test: {summary.reason}"
    outcome = "groups joined by a bar do not differ (Nemenyi)" if summary.cliques else \
        "no difference detected, no post-hoc test"
    if summary.critical_difference >= len(summary.policies) - 1:
        outcome += "; CD spans every rank: too few datasets for any pair to differ"
    return f"{head}\nFriedman p = {summary.friedman_p:.3g}: {outcome}"


def render_cd(report: Report) -> bytes:
    """Critical-difference diagram(s), one per rank group (Demšar 2006, Fig. 1 style)."""
    plt = _pyplot()
    groups: Sequence[RankSummary] = report.ranks
    if not groups:
        fig, ax = plt.subplots(figsize=(6, 1.2))
        ax.axis("off")
        ax.text(0.5, 0.5, "no policy was run on every table of a task: nothing to rank",
                ha="center", va="center", fontsize=9)
        return _png(fig)
    heights = [(1.45 - _cd_layout(g)[2]) * 0.75 + 0.6 for g in groups]
    fig, axes = plt.subplots(len(groups), 1, figsize=(9, sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, summary in zip(axes[:, 0], groups):
        _cd_axis(ax, summary)
        ax.set_title(_cd_title(summary), fontsize=9)
    fig.tight_layout()
    return _png(fig)
