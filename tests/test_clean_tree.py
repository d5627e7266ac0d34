"""The suite leaves the working tree as it found it: conftest.py fails a run that changes it,
and .gitignore covers what the README's commands write."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def git(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def run_pytest(project: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=project,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def project(tmp_path):
    """A throwaway git checkout holding this repository's tests/conftest.py and one test."""
    (tmp_path / "tests").mkdir()
    shutil.copy(REPO / "tests" / "conftest.py", tmp_path / "tests" / "conftest.py")
    (tmp_path / ".gitignore").write_text("ignored/\n")
    for args in (["init", "-q"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]):
        assert git(tmp_path, *args).returncode == 0
    return tmp_path


def test_a_test_that_writes_into_the_tree_fails_the_run(project):
    (project / "tests" / "test_writer.py").write_text(
        "from pathlib import Path\n"
        "def test_writes():\n"
        "    (Path(__file__).parents[1] / 'left_behind.txt').write_text('x')\n")
    res = run_pytest(project)
    assert res.returncode != 0, res.stdout
    assert "the tests changed the working tree" in res.stdout and "left_behind.txt" in res.stdout


def test_a_test_that_writes_only_ignored_files_passes(project):
    (project / "tests" / "test_writer.py").write_text(
        "from pathlib import Path\n"
        "def test_writes():\n"
        "    (Path(__file__).parents[1] / 'ignored').mkdir()\n"
        "    (Path(__file__).parents[1] / 'ignored' / 'out.txt').write_text('x')\n")
    res = run_pytest(project)
    assert res.returncode == 0, res.stdout[-2000:]


@pytest.mark.parametrize("path", ["runs/x/summary.json", "outputs/2026-01-01/x.log", "multirun/a/b", "mixes.png",
                                  "leaderboard/cpu-small.md"])
def test_gitignore_covers_what_the_commands_write(path):
    if git(REPO, "rev-parse", "--show-toplevel").returncode != 0:
        pytest.skip("not a git checkout")
    assert git(REPO, "check-ignore", "-q", path).returncode == 0, f"{path} is not ignored"
