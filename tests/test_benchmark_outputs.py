"""Running a benchmarks/ script with its defaults must not rewrite tracked files (issue 15.8): every
``--out`` default points into the ignored ``results/`` folder."""
import ast
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "benchmarks").glob("*.py"))


def _out_default(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument" and node.args
                and isinstance(node.args[0], ast.Constant) and node.args[0].value == "--out"):
            for kw in node.keywords:
                if kw.arg == "default":
                    return ast.literal_eval(kw.value)
    return None


@pytest.mark.parametrize("script", [p for p in SCRIPTS if "--out" in p.read_text()], ids=lambda p: p.name)
def test_default_output_is_ignored_by_git(script):
    default = _out_default(script)
    assert isinstance(default, str), f"{script.name}: --out needs a literal default, got {default!r}"
    ignored = subprocess.run(["git", "check-ignore", "-q", "--no-index", default], cwd=ROOT)
    assert default.startswith("results/") and ignored.returncode == 0, \
        f"{script.name} writes {default} by default, a path git tracks"
