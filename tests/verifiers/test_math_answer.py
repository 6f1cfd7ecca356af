"""math_answer agrees with math-verify on equivalent forms and rejects wrong answers."""

import threading

import math_verify
import numpy as np
import pytest

from bonjax import verifiers
from bonjax.verifiers import math_answer

EQUIVALENT = [  # (reference, completion)
    (r"\frac{1}{2}", r"The answer is $\boxed{0.5}$."),
    (r"\frac{1}{2}", r"so \boxed{\dfrac{1}{2}}"),
    ("0.5", r"we get \boxed{\frac12}"),
    ("1/2", "The answer is 1/2."),
    (r"\dfrac{3}{4}", r"\boxed{0.75}"),
    (r"2\sqrt{2}", r"\boxed{\sqrt{8}}"),
    (r"\frac{\sqrt{3}}{2}", r"\boxed{\frac{\sqrt{3}}{2}}"),
    (r"\pi/2", r"\boxed{\frac{\pi}{2}}"),
    ("1024", "#### 1,024"),
    ("3", "Adding gives 3.0"),
    ("18", "She pays 2 * 9 = 18 dollars. The answer is 18"),
    (r"x^2+1", r"\boxed{1 + x^{2}}"),
    (r"The total is \boxed{\frac{1}{3}}", r"\boxed{\frac{2}{6}}"),  # A full reference solution.
]
WRONG = [
    (r"\frac{1}{2}", r"\boxed{\frac{1}{3}}"),
    ("0.5", r"\boxed{0.6}"),
    (r"2\sqrt{2}", r"\boxed{\sqrt{2}}"),
    ("18", "The answer is 19"),
    ("10", r"\boxed{10.001}"),
    ("7", "I don't know"),
    ("7", ""),
]


def _math_verify(reference, completion):
  gold = math_verify.parse("\\boxed{" + reference + "}")
  return math_verify.verify(gold, math_verify.parse(completion))


def test_equivalent_forms_score_one_and_wrong_answers_zero():
  pairs = EQUIVALENT + WRONG
  verifier = verifiers.get("math_answer")
  scores = verifier.score(["q"] * len(pairs), [[c] for _, c in pairs],
                          [{"answer": r} for r, _ in pairs])[:, 0]
  np.testing.assert_array_equal(scores, [1.0] * len(EQUIVALENT) + [0.0] * len(WRONG))


@pytest.mark.parametrize("reference, completion", EQUIVALENT[:8] + WRONG[:3])
def test_agrees_with_math_verify_on_latex(reference, completion):
  assert math_answer.is_equivalent(reference, completion) == _math_verify(reference, completion)


def test_math_verify_errors_and_timeouts_score_zero(monkeypatch):
  def explode(*args, **kwargs):
    raise math_verify.errors.TimeoutException("slow")

  monkeypatch.setattr(math_verify, "verify", explode)
  assert not math_answer.is_equivalent("1", r"\boxed{1}")
  monkeypatch.setattr(math_verify, "verify", lambda *a, **k: 1 / 0)
  assert not math_answer.is_equivalent("1", r"\boxed{1}")


def test_works_outside_the_main_thread():
  """math-verify's signal timeouts raise off the main thread; we switch them off there."""
  results = []
  thread = threading.Thread(target=lambda: results.append(
      math_answer.is_equivalent(r"\frac{1}{2}", r"\boxed{0.5}")))
  thread.start()
  thread.join()
  assert results == [True]


def test_process_pool_matches_in_process():
  completions = [[c for _, c in EQUIVALENT[:4]], [c for _, c in WRONG[:4]]]
  metadata = [{"answer": r"\frac{1}{2}"}, {"answer": "0.5"}]
  in_process = verifiers.get("math_answer").score(["a", "b"], completions, metadata)
  pooled = verifiers.get("math_answer", num_workers=2).score(["a", "b"], completions, metadata)
  np.testing.assert_array_equal(in_process, pooled)


def test_bad_arguments():
  with pytest.raises(ValueError, match="timeout_s must be a positive int"):
    verifiers.get("math_answer", timeout_s=0.5)
  with pytest.raises(KeyError, match=r"metadata\[0\] has no 'answer' key"):
    verifiers.get("math_answer").score(["q"], [["1"]], [{"solution": "1"}])
