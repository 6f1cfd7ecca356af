"""Runs every python code block of docs/objectives.md, so the documented examples stay correct."""

import pathlib
import re

import pytest

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "objectives.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.DOTALL)


def test_doc_has_examples():
  assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", [pytest.param(i, marks=pytest.mark.slow) if "optax" in block
                                   else i for i, block in enumerate(BLOCKS)])
def test_doc_example_runs(index):
  exec(compile(BLOCKS[index], f"{DOC.name}[block {index}]", "exec"), {"__name__": "__doc_example__"})
