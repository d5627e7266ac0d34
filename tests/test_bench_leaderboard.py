"""Leaderboard: numbers equal the database's, files written, HTML escaped."""
import csv
import re
import statistics

import pytest

from openmix.bench.db import ResultsDB, RunRecord
from openmix.bench.leaderboard import main, render_leaderboard, summarize

EVIL = "<script>alert('x')</script>"


def _fill(path):
    db = ResultsDB(path)
    rows = [
        # dataset, policy, seed, headline, ece, sec/epoch
        ("digits", "vanilla", 0, 90.0, 0.05, 1.0),
        ("digits", "vanilla", 1, 91.0, 0.07, 1.2),
        ("digits", "vanilla", 2, 92.5, 0.06, 0.8),
        ("digits", "mixup", 0, 93.0, 0.02, 1.5),
        ("digits", "mixup", 1, 94.25, 0.03, 1.5),
        ("digits", EVIL, 0, 80.0, 0.1, 2.0),
    ]
    for i, (ds, pol, seed, head, ece, spe) in enumerate(rows):
        db.record(RunRecord(
            suite="tiny", config_hash=f"h{i}", status="ok", dataset=ds, model="mlp", policy=pol,
            seed=seed, task="classification", mix_name="mixup",
            policy_args={"alpha": 0.2, "note": EVIL}, loss="soft_ce",
            headline_metric="top1_median_last_k", headline=head,
            final={"top1_median_last_k": head, "ece": ece}, seconds_per_epoch=spe,
        ))
    for i, (seed, rmse) in enumerate([(0, 1.5), (1, 1.7)]):
        db.record(RunRecord(
            suite="tiny", config_hash=f"r{i}", status="ok", dataset="airfoil", model="mlp",
            policy="cmixup", seed=seed, task="regression", headline_metric="rmse_median_last_k",
            headline=rmse, final={"rmse_median_last_k": rmse, "rmse": rmse}, loss="mse",
            policy_args={"alpha": 2.0, "mode": "batch", "pairing": {"name": "cmixup", "sigma": 0.5}},
            overrides=["data=airfoil", "mix=cmixup", "mix.alpha=2.0", "mix.pairing.sigma=0.5", "seed=0"],
        ))
    db.record(RunRecord(suite="tiny", config_hash="f", status="failed", dataset="digits",
                        model="mlp", policy="fmix", seed=0, error="Traceback\nRuntimeError: " + EVIL))
    db.record(RunRecord(suite="other", config_hash="o", status="ok", dataset="digits",
                        model="mlp", policy="vanilla", seed=0, task="classification",
                        headline=10.0))
    return db


def test_summary_matches_database(tmp_path):
    db = _fill(tmp_path / "r.db")
    entries = summarize(db.runs(suite="tiny"))
    by = {(e.dataset, e.policy): e for e in entries}
    assert set(by) == {("digits", "vanilla"), ("digits", "mixup"), ("digits", EVIL),
                       ("airfoil", "cmixup")}
    van = by["digits", "vanilla"]
    assert van.mean == pytest.approx(statistics.mean([90.0, 91.0, 92.5]))
    assert van.std == pytest.approx(statistics.stdev([90.0, 91.0, 92.5]))
    assert van.n == 3 and van.cost_vs_baseline == pytest.approx(1.0)
    assert by["digits", "mixup"].cost_vs_baseline == pytest.approx(1.5 / 1.0)
    assert by["digits", EVIL].std == 0.0
    assert by["airfoil", "cmixup"].cost_vs_baseline is None
    assert entries[0].policy == "vanilla"


def test_rendered_files(tmp_path):
    db_path = tmp_path / "r.db"
    db = _fill(db_path)
    out = tmp_path / "board"
    main(["--db", str(db_path), "--suite", "tiny", "--out", str(out)])
    for ext in ("md", "csv", "png", "html"):
        assert (out / f"tiny.{ext}").stat().st_size > 0
    assert (out / "tiny.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*tmp"))

    # CSV numbers are the database's
    with open(out / "tiny.csv") as f:
        rows = {(r["dataset"], r["policy"]): r for r in csv.DictReader(f)}
    for (dataset, policy), r in rows.items():
        values = [x["headline"] for x in db.runs(suite="tiny")
                  if x["dataset"] == dataset and x["policy"] == policy]
        assert float(r["mean"]) == pytest.approx(statistics.mean(values))
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        assert float(r["std"]) == pytest.approx(std)
        assert int(r["n"]) == len(values)

    # Markdown: "mean ± std" cells are the database's values rounded to the decimals shown
    md = (out / "tiny.md").read_text()
    lines = {l.split(" | ")[0][2:]: l for l in md.splitlines() if l.startswith("| ")}
    for policy, values in (("mixup", [93.0, 94.25]), ("vanilla", [90.0, 91.0, 92.5])):
        mean, std = re.search(r"([\d.]+) ± ([\d.]+)", lines[policy].split(" | ")[3]).groups()
        decimals = len(mean.split(".")[1])
        assert mean == f"{statistics.mean(values):.{decimals}f}"
        assert std == f"{statistics.stdev(values):.{decimals}f}"
    assert "**93.62 ± 0.88**" in lines["mixup"]  # best mean in bold
    assert "<script>" not in md and "&lt;script&gt;" in md
    assert "1 failed run(s)" in md
    # with the suite's overrides known, the table shows the arguments the suite set
    assert "| cmixup | mse | alpha=2.0, pairing.sigma=0.5 |" in md
    assert "openmix-leaderboard --db" in md

    # HTML: self-contained, every hostile string rendered as text
    page = (out / "tiny.html").read_text()
    assert "<script" not in page.lower()
    assert page.count("&lt;script&gt;") >= 3  # policy label, its arguments, the failed run error
    assert "data:image/png;base64," in page
    assert "src=\"http" not in page


def test_errors_name_the_argument(tmp_path):
    _fill(tmp_path / "r.db")
    with pytest.raises(ValueError, match="suite: got 'nope'.*'other', 'tiny'"):
        render_leaderboard(tmp_path / "r.db", "nope", tmp_path / "out")
    with pytest.raises(ValueError, match="db: got"):
        render_leaderboard(tmp_path / "missing.db", "tiny", tmp_path / "out")


def test_readme_section_is_replaced_between_markers(tmp_path):
    _fill(tmp_path / "r.db")
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n<!-- openmix-leaderboard:tiny -->\nold\n"
                      "<!-- /openmix-leaderboard:tiny -->\n\nafter\n")
    main(["--db", str(tmp_path / "r.db"), "--suite", "tiny", "--out", str(tmp_path / "docs"),
          "--readme", str(readme)])
    text = readme.read_text()
    assert "\nold\n" not in text and text.startswith("# x\n") and text.endswith("\n\nafter\n")
    assert "### Leaderboard: tiny" in text and "![tiny leaderboard](docs/tiny.png)" in text
    assert "--readme" in text and "| mixup |" in text
    bare = tmp_path / "BARE.md"
    bare.write_text("no markers\n")
    with pytest.raises(ValueError, match="lacks the markers"):
        render_leaderboard(tmp_path / "r.db", "tiny", tmp_path / "docs", readme=bare)
