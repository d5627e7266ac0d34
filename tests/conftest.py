"""Session-wide checks shared by every test module."""
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _git_status() -> "list[str] | None":
    """`git status --porcelain` lines of the repository, or None outside a git checkout."""
    if shutil.which("git") is None:
        return None
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=REPO, capture_output=True,
                             text=True, timeout=60)
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != REPO:
            return None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO,
                                capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return sorted(status.stdout.splitlines()) if status.returncode == 0 else None


@pytest.fixture(scope="session", autouse=True)
def working_tree_left_clean():
    """Fails the run if the tests created, changed or deleted anything git tracks or would track
    (ignored folders such as build/ or .pytest_cache/ are allowed)."""
    before = _git_status()
    yield
    if before is None:
        return
    after = _git_status()
    if after is not None and after != before:
        added = sorted(set(after) - set(before))
        gone = sorted(set(before) - set(after))
        pytest.fail("the tests changed the working tree (git status --porcelain):\n"
                    + "".join(f"  now: {line}\n" for line in added)
                    + "".join(f"  was: {line}\n" for line in gone), pytrace=False)
