"""README's python examples run, and its commands are the ones CI and setup.py provide."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_python_examples_run():
  blocks = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)
  assert blocks
  for i, block in enumerate(blocks):
    exec(compile(block, f"README.md[block {i}]", "exec"), {"__name__": "__readme__"})


def test_ci_runs_readme_install_and_test_commands():
  ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
  install = re.search(r'pip install -e "(\.\[[a-z,]+\])"', README).group(1)
  assert f'pip install -q -e "{install}"' in ci
  assert "python -m pytest -q -n auto" in README and "python -m pytest -q -n auto" in ci


def test_readme_main_command_is_a_cli_command():
  from bonjax import main  # pylint: disable=g-import-not-at-top
  command = re.search(r"^    bonjax (\w+) --workdir", README, flags=re.MULTILINE).group(1)
  assert command in main.COMMANDS
