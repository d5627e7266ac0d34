"""The light core: `import openmix` needs torch and numpy alone, on an older torch too.

The throwaway-venv test installs torch (default 2.13.0, this machine's local CPU wheel) and
numpy into a fresh virtual environment, adds openmix from a wheel built from this checkout
with ``--no-deps``, and runs tests/core_smoke.py there. It takes about a minute, so it runs
only with OPENMIX_TEST_CORE_VENV=1 (CI runs it as its own step). OPENMIX_CORE_TORCH and
OPENMIX_CORE_NUMPY choose other versions, e.g. OPENMIX_CORE_TORCH=2.1.2 OPENMIX_CORE_NUMPY="numpy<2".
"""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OPTIONAL = ("timm", "torchvision", "hydra", "omegaconf", "sklearn", "scipy", "matplotlib", "tensorboard",
            "mnist1d", "maxflow", "yaml", "PIL")


def clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "OPENMIX_CONFIG_DIR")}
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_import_openmix_loads_no_optional_dependency():
    code = ("import sys, openmix, openmix.data, openmix.losses, openmix.pairing, openmix.policies, openmix.checks; "
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({OPTIONAL!r})))")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=clean_env(), capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "[]", f"import openmix loaded optional packages: {res.stdout.strip()}"


def test_core_declares_only_torch_and_numpy():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = sorted(dep.split(">")[0].split("=")[0].split("<")[0].strip() for dep in project["dependencies"])
    assert names == ["numpy", "torch"]
    extras = project["optional-dependencies"]
    assert {"train", "bench", "dev"} <= set(extras)
    assert "openmix[train,bench,graphcut]" in extras["dev"] and "openmix[train]" in extras["bench"]
    train = " ".join(extras["train"])
    for needed in ("torchvision", "timm", "hydra-core", "scikit-learn", "scipy", "mnist1d", "tqdm", "tensorboard",
                   "matplotlib"):
        assert needed in train, needed


def run(cmd: list, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    res = subprocess.run([str(c) for c in cmd], cwd=cwd, env=clean_env(), capture_output=True, text=True,
                         timeout=timeout)
    assert res.returncode == 0, f"{' '.join(map(str, cmd))}\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    return res


@pytest.mark.skipif(os.environ.get("OPENMIX_TEST_CORE_VENV") != "1",
                    reason="builds a throwaway venv (about a minute); set OPENMIX_TEST_CORE_VENV=1")
def test_core_runs_in_a_venv_with_only_torch_and_numpy(tmp_path):
    torch_version = os.environ.get("OPENMIX_CORE_TORCH", "2.13.0")
    numpy_spec = os.environ.get("OPENMIX_CORE_NUMPY", "numpy")
    start = time.perf_counter()
    # the venv's own setuptools is too old for the project's PEP 639 metadata: build the wheel here
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path / "dist",
         REPO], cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("openmix-*.whl")
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv], cwd=tmp_path)
    python = venv / "bin" / "python"
    run([python, "-m", "pip", "install", "-q", f"torch=={torch_version}", numpy_spec], cwd=tmp_path)
    run([python, "-m", "pip", "install", "-q", "--no-deps", wheel], cwd=tmp_path)
    installed = run([python, "-m", "pip", "list", "--format=freeze"], cwd=tmp_path).stdout.lower()
    for name in ("timm", "torchvision", "hydra-core", "scikit-learn", "scipy", "matplotlib"):
        assert f"{name}==" not in installed, f"{name} is in the core venv"
    smoke = run([python, REPO / "tests" / "core_smoke.py"], cwd=tmp_path)
    assert f"core smoke ok: torch {torch_version}" in smoke.stdout, smoke.stdout
    assert str(venv) in smoke.stdout, "openmix was not imported from the venv"
    print(f"{smoke.stdout.strip()}; venv built and tested in {time.perf_counter() - start:.0f} s")
