"""Leaderboard: every figure of the CSV recomputed from the database rows with plain
numpy/scipy, the pages' statistics and explanations, escaping, README markers, errors."""
import csv
import math
import re

import numpy as np
import pytest
from scipy import stats as sps

from openmix.bench.aggregate import build_report
from openmix.bench.db import ResultsDB, RunRecord
from openmix.bench.leaderboard import main, render_leaderboard
from openmix.bench.render import CSV_COLUMNS

EVIL = "<script>alert('x')</script>"
# digits: per-seed top-1 of the last-k headline; seeds 0-4 (mixup lacks seed 4)
DIGITS = {
    "vanilla": [90.0, 91.0, 92.5, 89.5, 90.5],
    "mixup": [93.0, 94.25, 95.0, 92.0],
    "cutmix": [90.2, 91.1, 92.4, 89.8, 90.4],
    EVIL: [80.0],
}
# mnist1d: the same policies, so they can be ranked across the two datasets
MNIST1D = {"vanilla": [70.0, 71.0, 72.0], "mixup": [72.0, 73.5, 74.0], "cutmix": [69.0, 70.5, 70.0]}
# airfoil: RMSE read from the validation-selected epoch (a dotted headline metric), no headline column
AIRFOIL = {"vanilla": [2.0, 2.2, 2.1], "cmixup": [1.5, 1.75, 1.6]}


def _fill(path):
    db = ResultsDB(path)
    i = 0
    for dataset, table in (("digits", DIGITS), ("mnist1d", MNIST1D)):
        for policy, values in table.items():
            for seed, head in enumerate(values):
                i += 1
                db.record(RunRecord(
                    suite="tiny", config_hash=f"h{i}", status="ok", dataset=dataset, model="mlp",
                    policy=policy, seed=seed, task="classification", mix_name="mixup",
                    policy_args={"alpha": 0.2, "note": EVIL}, loss="soft_ce",
                    headline_metric="top1_median_last_k", headline=head,
                    final={"top1_median_last_k": head, "ece": 0.01 * (seed + 1)},
                    seconds_per_epoch=1.0 + (policy == "mixup") * 0.5 + 0.1 * seed,
                    config={"trainer": {"last_k": 3}},
                ))
    for policy, values in AIRFOIL.items():
        for seed, rmse in enumerate(values):
            i += 1
            db.record(RunRecord(
                suite="tiny", config_hash=f"h{i}", status="ok", dataset="airfoil", model="mlp",
                policy=policy, seed=seed, task="regression", headline_metric="selected.test.rmse",
                final={"rmse": 9.9, "selected": {"epoch": 4, "rule": "best_val", "metric": "rmse", "k": None,
                                                 "val": {"rmse": rmse + 0.1}, "test": {"rmse": rmse}}},
                loss="mse", policy_args={"alpha": 2.0, "pairing": {"name": "cmixup", "sigma": 0.5}},
                overrides=["data=airfoil", f"mix={policy}", "mix.alpha=2.0", "mix.pairing.sigma=0.5"],
            ))
    db.record(RunRecord(suite="tiny", config_hash="f", status="failed", dataset="digits",
                        model="mlp", policy="fmix", seed=0, error="Traceback\nRuntimeError: " + EVIL))
    db.record(RunRecord(suite="other", config_hash="o", status="ok", dataset="digits",
                        model="mlp", policy="vanilla", seed=0, task="classification", headline=10.0))
    return db


# ---- an independent recomputation of the CSV, from the rows, with numpy/scipy ------------
def _value(row):
    if row["headline"] is not None:
        return row["headline"]
    node = row["final"]
    for part in row["headline_metric"].split("."):
        node = node[part]
    return node


def _expected(rows):
    cells = {}
    for r in rows:
        cells.setdefault((r["dataset"], r["policy"]), {})[r["seed"]] = _value(r)
    out = {}
    for (dataset, policy), by_seed in cells.items():
        x = np.array(list(by_seed.values()))
        e = {"mean": x.mean(), "n": len(x), "seeds": " ".join(map(str, by_seed))}
        if len(x) > 1:
            e["std"] = x.std(ddof=1)
            e["ci_low"], e["ci_high"] = sps.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=sps.sem(x))
        base = cells.get((dataset, "vanilla"))
        if policy != "vanilla" and base:
            common = sorted(set(by_seed) & set(base))
            a, b = np.array([by_seed[s] for s in common]), np.array([base[s] for s in common])
            e["n_pairs"], e["delta"] = len(common), (a - b).mean()
            if len(common) > 1:
                e["p_value"] = sps.ttest_rel(a, b).pvalue
        out[dataset, policy] = e
    return out


def _holm(p):
    """Holm's step-down adjustment, written out from its definition."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    adjusted, running = [0.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def _read_csv(path):
    with open(path) as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        return {(r["dataset"], r["policy"]): r for r in reader}


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """The filled database and the leaderboard rendered from it once, through the CLI."""
    root = tmp_path_factory.mktemp("board")
    db = _fill(root / "r.db")
    main(["--db", str(root / "r.db"), "--suite", "tiny", "--out", str(root / "out")])
    return db, root / "out"


def test_csv_is_recomputed_independently_from_the_database(board):
    db, out = board
    table = _read_csv(out / "tiny.csv")
    expected = _expected(db.runs(suite="tiny"))
    assert set(table) == set(expected)
    for key, e in expected.items():
        row = table[key]
        assert int(row["n"]) == e["n"] and row["seeds"] == e["seeds"]
        for name in ("mean", "std", "ci_low", "ci_high", "delta", "p_value"):
            if name in e:
                assert float(row[name]) == pytest.approx(e[name], rel=1e-9), (key, name)
            else:
                assert row[name] == "", (key, name)
        if "n_pairs" in e:
            assert int(row["n_pairs"]) == e["n_pairs"]
    # Holm within each table, then the verdict in the metric's direction
    for dataset in ("digits", "mnist1d", "airfoil"):
        keys = [k for k, e in expected.items() if k[0] == dataset and "p_value" in e]
        for key, p_holm in zip(keys, _holm([expected[k]["p_value"] for k in keys])):
            row = table[key]
            assert float(row["p_holm"]) == pytest.approx(p_holm)
            higher = dataset != "airfoil"
            want = "not significant" if p_holm >= 0.05 else (
                "better" if (expected[key]["delta"] > 0) == higher else "worse")
            assert row["verdict"] == want, key
            excludes = float(row["delta_ci_low"]) > 0 or float(row["delta_ci_high"]) < 0
            assert excludes == (want != "not significant")
    assert table["digits", EVIL]["verdict"] == "not significant"  # one pair: not tested
    assert table["digits", EVIL]["p_value"] == "" and "not tested" in table["digits", EVIL]["verdict_reason"]
    assert table["airfoil", "cmixup"]["verdict"] == "better"  # lower RMSE on every seed
    assert table["airfoil", "cmixup"]["higher_is_better"] == "false"
    assert table["airfoil", "cmixup"]["selection"] == "best_val"
    assert table["digits", "vanilla"]["verdict"] == "" and table["digits", "vanilla"]["baseline"] == "vanilla"


def test_mean_rank_is_recomputed_from_the_rows(board):
    db, out = board
    table = _read_csv(out / "tiny.csv")
    expected = _expected(db.runs(suite="tiny"))
    policies = ["vanilla", "mixup", "cutmix"]  # the classification policies run on both datasets
    ranks = [sps.rankdata([-expected[d, p]["mean"] for p in policies]) for d in ("digits", "mnist1d")]
    for policy, mean_rank in zip(policies, np.mean(ranks, axis=0)):
        for dataset in ("digits", "mnist1d"):
            assert float(table[dataset, policy]["mean_rank"]) == pytest.approx(mean_rank)
            assert table[dataset, policy]["rank_group"] == "classification"
    assert table["digits", EVIL]["mean_rank"] == ""  # not run on mnist1d: not ranked


def test_pages_show_intervals_verdicts_and_explanations(board):
    _, out = board
    for name in ("tiny.md", "tiny.csv", "tiny.png", "tiny-cd.png", "tiny.html"):
        assert (out / name).stat().st_size > 0
    for name in ("tiny.png", "tiny-cd.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*tmp"))
    md = (out / "tiny.md").read_text()
    digits = md.split("### digits")[1].split("###")[0]
    lines = {l.split(" | ")[0][2:].strip("*"): l for l in digits.splitlines() if l.startswith("| ")}
    # "mean ± half-width (n=…)" at the decimals shown, from the database values
    values = DIGITS["vanilla"]
    half = sps.t.ppf(0.975, 4) * np.std(values, ddof=1) / math.sqrt(5)
    assert f"{np.mean(values):.2f} ± {half:.2f} (n=5)" in lines["vanilla"]
    assert "✓ better" in lines["mixup"] and "(4)" in lines["mixup"]  # 4 paired seeds
    assert "≈ not significant" in lines["cutmix"]
    # mixup has the top mean, but its 4-seed interval overlaps cutmix's: a tie, nothing bold
    assert "**mixup**" not in md and "No clear best — tie: mixup, cutmix" in md
    for sentence in ("Student-t interval", "paired t-test", "Holm-corrected",
                     "median of the last 3 test epochs (OpenMixup-style), not validation-selected",
                     "best validation rmse", "Friedman", "×1.00", "openmix-leaderboard --db",
                     "1 failed run(s)", "Friedman χ² = ", "got 2 policies on 1 dataset"):
        assert sentence in md, sentence
    assert "| cmixup | mse | alpha=2.0, pairing.sigma=0.5 |" in md
    assert "<script>" not in md and "&lt;script&gt;" in md
    page = (out / "tiny.html").read_text()
    assert "<script" not in page.lower()
    assert page.count("&lt;script&gt;") >= 3  # policy label, its arguments, the failed run error
    assert page.count("data:image/png;base64,") == 2 and 'src="http' not in page


def test_a_winner_is_bold_only_when_its_interval_clears_the_runner_up(tmp_path):
    db = ResultsDB(tmp_path / "r.db")
    tables = {"vanilla": [90.0, 90.5, 91.0], "clear": [95.0, 95.2, 95.4], "close": [90.2, 90.8, 91.1]}
    for i, (policy, values) in enumerate(tables.items()):
        for seed, value in enumerate(values):
            db.record(RunRecord(suite="s", config_hash=f"{i}-{seed}", status="ok", dataset="d",
                                model="m", policy=policy, seed=seed, task="classification",
                                headline=value))
    report = build_report("s", db.runs(suite="s"))
    assert report.panels[0].winner == "clear"
    render_leaderboard(tmp_path / "r.db", "s", tmp_path / "out")
    md = (tmp_path / "out" / "s.md").read_text()
    assert re.search(r"\| \*\*clear\*\* \|.*\| \*\*95\.20 ± ", md)
    without = build_report("s", [r for r in db.runs(suite="s") if r["policy"] != "clear"])
    assert without.panels[0].winner is None and without.panels[0].tied == ("close", "vanilla")


def test_a_later_run_of_the_same_seed_replaces_the_earlier(tmp_path):
    db = ResultsDB(tmp_path / "r.db")
    for i, value in enumerate([50.0, 60.0, 61.0]):
        db.record(RunRecord(suite="s", config_hash=f"h{i}", status="ok", dataset="d", model="m",
                            policy="vanilla", seed=min(i, 1), task="classification", headline=value))
    report = build_report("s", db.runs(suite="s"))
    cell = report.panels[0].cells[0]
    assert dict(cell.data.values) == {0: 50.0, 1: 61.0} and report.superseded == 1


def test_errors_name_the_argument(board, tmp_path):
    db, _ = board
    with pytest.raises(ValueError, match="suite must have successful runs.*got 'nope'.*'other', 'tiny'"):
        render_leaderboard(db.path, "nope", tmp_path / "out")
    with pytest.raises(ValueError, match="db must be an existing results database, got"):
        render_leaderboard(tmp_path / "missing.db", "tiny", tmp_path / "out")


def test_readme_section_is_replaced_between_markers(board, tmp_path):
    db, _ = board
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n<!-- openmix-leaderboard:tiny -->\nold\n"
                      "<!-- /openmix-leaderboard:tiny -->\n\nafter\n")
    main(["--db", str(db.path), "--suite", "tiny", "--out", str(tmp_path / "docs"),
          "--readme", str(readme)])
    text = readme.read_text()
    assert "\nold\n" not in text and text.startswith("# x\n") and text.endswith("\n\nafter\n")
    assert "### Leaderboard: tiny" in text and "![tiny leaderboard](docs/tiny.png)" in text
    assert "(docs/tiny-cd.png)" in text
    assert "--readme" in text and "| mixup |" in text
    bare = tmp_path / "BARE.md"
    bare.write_text("no markers\n")
    with pytest.raises(ValueError, match="readme must contain the markers"):
        render_leaderboard(db.path, "tiny", tmp_path / "docs", readme=bare)


def test_selection_rule_is_read_from_the_trainers_selected_record():
    from openmix.bench.aggregate import Selection, selection_of
    from openmix.bench.render import selection_sentence

    last = {"final": {"selected": {"rule": "last_k", "metric": "top1", "k": 5, "epoch": None}}}
    assert selection_of(last, "selected.test.top1") == Selection("last_k", "top1", 5)
    assert "median of the last 5 test epochs (OpenMixup-style), not validation-selected" in \
        selection_sentence(selection_of(last, "selected.test.top1"))
    best = {"selected": {"rule": "best_val", "metric": "top1", "k": None, "epoch": 7}}
    assert selection_of(best, "selected.test.top1") == Selection("best_val", "top1", None)
    assert "Test metrics never influence" in selection_sentence(selection_of(best, "selected.test.top1"))
    # a plain metric name is read as what it says, whatever else the row holds
    assert selection_of(best, "top1_median_last_k").rule == "last_k"
    assert selection_of(best, "top1").rule == "final"
    assert selection_of({}, "selected.test.top1").rule == "unknown"


def test_the_leaderboard_reads_shipped_suites_as_the_runner_composes_them():
    from openmix.bench.leaderboard import known_suite
    tuned = known_suite("cpu-small-tuned")          # a suite built on another one (Hydra defaults)
    assert tuned.name == "cpu-small-tuned" and tuned.tune is not None and len(tuned.runs) == 200
    assert [c.id for c in known_suite("cpu-vit").claims] == ["transmix-beats-cutmix", "smmix-beats-cutmix"]
    assert known_suite("no-such-suite") is None
