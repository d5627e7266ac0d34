"""A wheel carries the configs: built, installed into a throwaway folder, run from elsewhere."""
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(site folder with openmix installed from a freshly built wheel, an unrelated work folder)."""
    root = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(root / "dist"), str(REPO)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = (root / "dist").glob("openmix-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    repo_yamls = sorted(str(p.relative_to(REPO / "configs")) for p in (REPO / "configs").rglob("*.yaml"))
    assert sorted(n[len("openmix/configs/"):] for n in names if n.startswith("openmix/configs/")) == repo_yamls
    site = root / "site"
    inst = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
                           str(wheel)], capture_output=True, text=True, timeout=300)
    assert inst.returncode == 0, inst.stderr[-3000:]
    work = root / "elsewhere"
    work.mkdir()
    return site, work


def _run(site: Path, work: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENMIX_CONFIG_DIR", "PYTHONPATH")}
    env.update(PYTHONPATH=str(site), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *args], cwd=work, env=env, capture_output=True, text=True, timeout=300)


def test_wheel_install_trains_from_an_unrelated_folder(installed):
    site, work = installed
    res = _run(site, work, "-c", "import openmix.paths as p, openmix.train.app as a; print(p.config_dir()); "
               "print(a.__file__)")
    assert res.returncode == 0, res.stderr[-3000:]
    cfg_dir, app_file = res.stdout.split()
    assert Path(cfg_dir) == site / "openmix" / "configs" and Path(app_file).is_relative_to(site)
    res = _run(site, work, "-m", "openmix.train", "trainer.epochs=1", "trainer.out_dir=run",
               "trainer.tensorboard=false", "trainer.progress=false")
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((work / "run" / "summary.json").read_text())
    assert summary["dataset"] == "digits" and summary["epochs"] == 1 and summary["final"]["top1"] > 50


def test_wheel_install_lists_a_suite_from_an_unrelated_folder(installed):
    site, work = installed
    res = _run(site, work, "-c", "from openmix.bench.app import main; main()", "suite=tiny", "dry_run=true",
               "db=r.db")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "suite tiny: 4 runs" in res.stdout and "to run" in res.stdout
