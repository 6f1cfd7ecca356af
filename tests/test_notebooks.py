"""Every colabs/*.ipynb runs top to bottom with its small settings, plots, and is stored stripped."""

import os
import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

from tests import compile_flags

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "colabs").glob("*.ipynb"))
SMALL_FLAG = "BONJAX_NOTEBOOK_SMALL"  # each notebook shrinks its settings when this is set


def test_there_are_notebooks():
  assert NOTEBOOKS, "no notebook in colabs/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_is_stored_without_outputs(path):
  notebook = nbformat.read(path, as_version=4)
  nbformat.validate(notebook)
  for index, cell in enumerate(notebook.cells):
    if cell.cell_type == "code":
      assert not cell.outputs and cell.execution_count is None, (
          f"{path.name} cell {index} has outputs: clear them before committing "
          "(Jupyter: Edit > Clear Outputs of All Cells)")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_runs_and_plots(path, monkeypatch):
  monkeypatch.setenv(SMALL_FLAG, "1")
  # The kernel is a fresh process: it must import this checkout's bonjax and draw inline.
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT),
                                                                  os.environ.get("PYTHONPATH")])))
  monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
  # The notebooks train for many steps: give their kernel XLA's optimizing compiler back, which
  # tests/conftest.py turns off for the rest of the suite (short programs).
  monkeypatch.setenv("XLA_FLAGS",
                     compile_flags.without_fast_compile(os.environ.get("XLA_FLAGS", "")))
  notebook = nbformat.read(path, as_version=4)
  client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                          resources={"metadata": {"path": str(path.parent)}})
  client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error
  images = [output for cell in notebook.cells if cell.cell_type == "code"
            for output in cell.outputs if "image/png" in output.get("data", {})]
  assert images, f"{path.name} produced no plot"
