"""Rewriting a test's ``assert`` statements into counted checks, for partial credit.

``assert cond, msg`` becomes::

    try:
      assert cond, msg
    except Exception:
      __bonjax_record_assert__(i, False)
    else:
      __bonjax_record_assert__(i, True)

so every assert runs even after one fails, and the sandbox harness (which binds the recorder in
the tests' private namespace) knows which of the ``n`` asserts held each time they ran.
"""

from __future__ import annotations

import ast

RECORDER = "__bonjax_record_assert__"  # Must match _sandbox_child._RECORDER.


class _AssertCounter(ast.NodeTransformer):

  def __init__(self):
    self.count = 0

  def visit_Assert(self, node: ast.Assert) -> ast.Try:
    index = self.count
    self.count += 1

    def record(ok: bool) -> list[ast.stmt]:
      call = ast.Call(ast.Name(RECORDER, ast.Load()), [ast.Constant(index), ast.Constant(ok)], [])
      return [ast.Expr(call)]

    handler = ast.ExceptHandler(type=ast.Name("Exception", ast.Load()), name=None,
                                body=record(False))
    return ast.copy_location(ast.Try(body=[node], handlers=[handler], orelse=record(True),
                                     finalbody=[]), node)


def rewrite_asserts(test_source: str) -> tuple[str, int]:
  """Returns ``(rewritten_source, number_of_asserts)``.

  Raises:
    SyntaxError: ``test_source`` is not valid Python.
  """
  tree = ast.parse(test_source)
  counter = _AssertCounter()
  tree = ast.fix_missing_locations(counter.visit(tree))
  return ast.unparse(tree), counter.count
