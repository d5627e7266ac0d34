"""tools/: each script has --help and works on small fixture files."""
import importlib.util
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOOLS = ["env_check", "plot_curves", "compare_runs", "export_leaderboard"]


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", TOOLS)
def test_help(name):
    res = subprocess.run([sys.executable, str(REPO / "tools" / f"{name}.py"), "--help"], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.startswith("usage:"), res.stderr
    assert "python tools/" in res.stdout                      # the examples are shown


def write_run(folder: Path, policy: str, top1: list, loss: list, alpha: float) -> Path:
    folder.mkdir(parents=True)
    history = [{"epoch": e + 1, "train_loss": l, "top1": t, "nll": 0.5 / (e + 1)} for e, (t, l) in
               enumerate(zip(top1, loss))]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    summary = {"task": "classification", "dataset": "digits", "model": "small_cnn", "policy": policy,
               "loss": "soft_ce", "seed": 0, "epochs": len(top1), "final": {"top1": top1[-1], "nll": 0.1},
               "best": {"epoch": len(top1), "metric": "top1", "value": max(top1)}, "history": history,
               "seconds_per_epoch": 1.5, "samples_per_second": 1000.0, "peak_memory_mb": 800.0}
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "config.yaml").write_text(f"mix:\n  name: {policy}\n  alpha: {alpha}\nseed: 0\n")
    return folder


@pytest.fixture
def runs(tmp_path):
    return (write_run(tmp_path / "a", "mixup", [90.0, 95.0, 96.0], [1.5, 1.0, 0.8], 1.0),
            write_run(tmp_path / "b", "cutmix", [88.0, 94.0, 97.5], [1.7, 1.2, 0.9], 0.2))


def png_size(path: Path) -> tuple:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_plot_curves_writes_a_png_of_both_runs(runs, tmp_path, capsys):
    out = tmp_path / "curves.png"
    assert load("plot_curves").main([str(runs[0]), str(runs[1] / "metrics.jsonl"), "-o", str(out),
                                     "--label-key", "policy"]) == 0
    width, height = png_size(out)
    assert width > 600 and height > 300
    assert "train loss and top1 of 2 run(s)" in capsys.readouterr().out


def test_plot_curves_errors_name_the_problem(runs, tmp_path):
    tool = load("plot_curves")
    with pytest.raises(SystemExit, match=r"--metric must be one of the logged keys .*'top1'.*got 'acc'"):
        tool.main([str(runs[0]), "--metric", "acc", "-o", str(tmp_path / "x.png")])
    with pytest.raises(SystemExit, match="run must be a run folder with metrics.jsonl"):
        tool.main([str(tmp_path / "nowhere"), "-o", str(tmp_path / "x.png")])
    (tmp_path / "bad.jsonl").write_text('{"epoch": 1}\nnot json\n')
    with pytest.raises(SystemExit, match=r"bad.jsonl:2 is not a JSON line"):
        tool.main([str(tmp_path / "bad.jsonl"), "-o", str(tmp_path / "x.png")])
    assert not (tmp_path / "x.png").exists()


def test_compare_runs_lists_differences_and_metric_deltas(runs, capsys):
    assert load("compare_runs").main([str(runs[0]), str(runs[1] / "summary.json")]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = {line.split()[1]: line.split()[2:] for line in lines[2:]}
    assert row["policy"] == ["mixup", "cutmix"] and row["config.mix.alpha"] == ["1", "0.2"]
    assert "config.seed" not in row and "dataset" not in row         # equal settings are left out
    assert row["final.top1"] == ["96", "97.5", "+1.5"]
    assert row["best.value"] == ["96", "97.5", "+1.5"]
    assert row["seconds_per_epoch"] == ["1.5", "1.5", "+0"]


def test_compare_runs_markdown_and_all(runs, capsys):
    load("compare_runs").main([str(runs[0]), str(runs[1]), "--markdown", "--all"])
    out = capsys.readouterr().out
    assert out.startswith("| kind | key | A (a) | B (b) | B - A |")
    assert "| setting | dataset | digits | digits |  |" in out


@pytest.fixture
def results_db(tmp_path):
    from openmix.bench.db import ResultsDB, RunRecord
    path = tmp_path / "results.db"
    db = ResultsDB(path)
    values = {"vanilla": [90.0, 92.0, 94.0], "mix_up": [93.0, 95.0]}
    for policy, headlines in values.items():
        for seed, value in enumerate(headlines):
            db.record(RunRecord(suite="tiny", config_hash=f"{policy}-{seed}", status="ok", dataset="digits",
                                model="small_cnn", policy=policy, seed=seed, headline_metric="top1",
                                headline=value, final={"top1": value}))
    db.record(RunRecord(suite="tiny", config_hash="f", status="failed", dataset="digits", model="small_cnn",
                        policy="fmix", seed=0))
    db.record(RunRecord(suite="other", config_hash="o", status="ok", dataset="sine1d", model="mlp",
                        policy="vanilla", seed=0, headline_metric="rmse", headline=0.5))
    return path


def test_export_leaderboard_formats(results_db, tmp_path, capsys):
    tool = load("export_leaderboard")
    tool.main(["--db", str(results_db), "--suite", "tiny"])
    md = capsys.readouterr().out
    # mean and sample std by hand: vanilla 92 ± 2 (n 3), mix_up 94 ± 1.41 (n 2); failed runs left out
    assert "| digits | small_cnn | vanilla | top1 | 92.00 | 2.00 | 3 | 0 1 2 |" in md
    assert "| digits | small_cnn | mix_up | top1 | 94.00 | 1.41 | 2 | 0 1 |" in md and "fmix" not in md
    tool.main(["--db", str(results_db), "--suite", "tiny", "--format", "csv", "-o", str(tmp_path / "t.csv")])
    assert (tmp_path / "t.csv").read_text().splitlines()[1:] == [
        "tiny,digits,small_cnn,vanilla,top1,92.00,2.00,3,0 1 2", "tiny,digits,small_cnn,mix_up,top1,94.00,1.41,2,0 1"]
    tool.main(["--db", str(results_db), "--suite", "tiny", "--format", "latex", "--digits", "1"])
    latex = capsys.readouterr().out
    assert r"digits & small\_cnn & mix\_up & top1 & 94.0 & 1.4 & 2 & 0 1 \\" in latex
    assert latex.count(r"\begin{tabular}") == 1 and latex.rstrip().endswith(r"\end{tabular}")


def test_export_leaderboard_errors(results_db, tmp_path):
    tool = load("export_leaderboard")
    with pytest.raises(SystemExit, match=r"--suite is needed: the databases hold suites \['other', 'tiny'\]"):
        tool.main(["--db", str(results_db)])
    with pytest.raises(SystemExit, match=r"got 'nope', known suites: \['other', 'tiny'\]"):
        tool.main(["--db", str(results_db), "--suite", "nope"])
    with pytest.raises(SystemExit, match="--db must be an existing results database"):
        tool.main(["--db", str(tmp_path / "missing.db")])
    assert not (tmp_path / "missing.db").exists()


def test_env_check_reports_versions_devices_and_every_policy(tmp_path, capsys):
    out = tmp_path / "env.json"
    assert load("env_check").main(["--device", "cpu", "--batch", "4", "--size", "16", "--repeats", "1",
                                   "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    import openmix
    import torch
    assert report["versions"]["torch"] == torch.__version__ and "cpu" in [d["device"] for d in report["devices"]]
    input_level = {n for n in openmix.list_policies() if n != "choice" and openmix.build_policy(n).needs == "input"}
    assert {r["policy"] for r in report["smoke"]} == input_level
    assert all(r["ok"] and r["ms"] >= 0 for r in report["smoke"])
    assert {r["mode"] for r in report["smoke"] if r["policy"] == "cutmix"} == {"batch", "pair", "elem"}
    assert load("env_check").main(["--device", "tpu"]) == 2
