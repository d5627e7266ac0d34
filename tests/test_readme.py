"""The README's Python examples run as written."""
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("number", range(len(BLOCKS)))
def test_readme_example_runs(number):
    exec(compile(BLOCKS[number], f"README.md python block {number}", "exec"), {"__name__": "readme"})


def _train_commands():
    """Every ``openmix-train ...`` line of the README's bash blocks, as override lists (a multirun's
    comma lists expanded to their first and last choice)."""
    import shlex
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if "openmix.train" in words:
                words = ["openmix-train", *words[words.index("openmix.train") + 1:]]
            if not words or words[0] != "openmix-train" or any(w.startswith("hydra.searchpath") for w in words):
                continue            # (a command on the user's own config folder cannot run here)
            overrides = [w for w in words[1:] if not w.startswith("-")]
            for pick in (0, -1):
                commands.append([o.split("=", 1)[0] + "=" + o.split("=", 1)[1].split(",")[pick]
                                 if "=" in o and "," in o and "[" not in o else o for o in overrides])
    return commands


def test_readme_train_commands_are_valid_configs():
    """The trainer commands the README shows compose and pass validation (nothing is trained)."""
    from openmix.train import compose_config
    from openmix.train.settings import validate
    commands = _train_commands()
    assert len(commands) >= 16
    for overrides in commands:
        validate(compose_config(overrides))
