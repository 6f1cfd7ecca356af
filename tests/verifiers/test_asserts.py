"""Assert rewriting for partial credit."""

import pytest

from bonjax.verifiers import asserts

TEST = """
def check(candidate):
    assert candidate(1) == 1
    for i in range(3):
        assert candidate(i) == i, f"failed on {i}"
    assert candidate(None)
"""


def _run(source, candidate):
  results = {}

  def record(index, ok):
    results[index] = results.get(index, True) and ok

  namespace = {asserts.RECORDER: record}
  exec(source, namespace)
  namespace["check"](candidate)
  return results


def test_every_assert_runs_and_is_recorded():
  source, count = asserts.rewrite_asserts(TEST)
  assert count == 3
  assert _run(source, lambda x: x) == {0: True, 1: True, 2: False}
  # One failing iteration of a looped assert fails that assert; later asserts still run.
  assert _run(source, lambda x: 0 if x == 2 else x) == {0: True, 1: False, 2: False}
  assert _run(source, lambda x: 1 / 0) == {0: False, 1: False, 2: False}


def test_the_recorder_name_matches_the_child_harness():
  from bonjax.verifiers import _sandbox_child
  assert _sandbox_child._RECORDER == asserts.RECORDER


def test_syntax_errors_surface():
  with pytest.raises(SyntaxError):
    asserts.rewrite_asserts("def check(:\n")
