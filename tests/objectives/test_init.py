"""Tests for bonjax/objectives/__init__.py: the public API and the package's import discipline."""

import ast
import pathlib
import sys

from bonjax import objectives as bo

PACKAGE = pathlib.Path(bo.__file__).resolve().parent
ALLOWED_THIRD_PARTY = {"jax", "numpy", "optax"}


def test_public_api_is_exported_and_documented():
  for name in bo.__all__:
    fn = getattr(bo, name)
    doc = fn.__doc__ or ""
    assert "docs/bon_math.md §" in doc, name  # every public function cites its section


def test_imports_only_jax_numpy_optax_and_the_standard_library():
  for path in PACKAGE.glob("*.py"):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
      if isinstance(node, ast.Import):
        roots = {alias.name.split(".")[0] for alias in node.names}
      elif isinstance(node, ast.ImportFrom) and node.level == 0:
        roots = {node.module.split(".")[0]}
      else:
        continue
      for root in roots - {"bonjax", "__future__"}:
        assert root in ALLOWED_THIRD_PARTY or root in sys.stdlib_module_names, (path.name, root)
      if "bonjax" in roots:  # only its own subpackage
        module = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
        assert module.startswith("bonjax.objectives"), (path.name, module)
