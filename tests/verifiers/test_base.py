"""The shared input checks and the registry."""

import numpy as np
import pytest

from bonjax import verifiers
from bonjax.verifiers import base


class _Length(base.Verifier):
  name = "length"
  required_keys = ("answer",)

  def score_one(self, prompt, completion, metadata):
    return float(len(completion))


META = [{"answer": 1}, {"answer": 2}]


def test_scores_have_shape_b_by_m_and_float32():
  scores = _Length().score(["a", "b"], [["x", "yy", ""], ["zzz", "", "w"]], META)
  assert scores.dtype == np.float32
  np.testing.assert_array_equal(scores, [[1, 2, 0], [3, 0, 1]])
  assert _Length().score([], [], []).shape == (0, 0)
  assert isinstance(_Length(), verifiers.VerifierProtocol)


@pytest.mark.parametrize("prompts, completions, metadata, error, message", [
    (["a"], [["x"]], META, ValueError, "same length, got 1, 1 and 2"),
    (["a", "b"], [["x"], ["y", "z"]], META, ValueError, r"completions\[1\] has 2"),
    (["a", 3], [["x"], ["y"]], META, TypeError, r"prompts\[1\] must be a str, got int"),
    (["a", "b"], [["x"], [b"y"]], META, TypeError, r"completions\[1\]\[0\] must be a str"),
    (["a", "b"], [["x"], "y"], META, TypeError, r"completions\[1\] must be a list of str"),
    (["a", "b"], [["x"], ["y"]], [{"answer": 1}, None], TypeError, r"metadata\[1\] must be a dict"),
    (["a", "b"], [["x"], ["y"]], [{"answer": 1}, {"x": 0}], KeyError,
     r"metadata\[1\] has no 'answer' key; length needs: answer"),
    ("ab", [["x"], ["y"]], META, TypeError, "prompts must be a list, got str"),
])
def test_bad_input_gives_one_clear_error(prompts, completions, metadata, error, message):
  with pytest.raises(error, match=message):
    _Length().score(prompts, completions, metadata)


def test_registry():
  assert verifiers.names() == ["answer_match", "code_execution", "learned", "math_answer", "noisy"]
  assert isinstance(verifiers.get("answer_match"), verifiers.AnswerMatch)
  assert verifiers.get("math_answer", timeout_s=2).timeout_s == 2
  with pytest.raises(KeyError, match="unknown verifier 'lerned'; valid names: answer_match, "
                                     "code_execution, learned, math_answer, noisy"):
    verifiers.get("lerned")


def test_check_scores_names_the_verifier_and_the_bad_entries():
  scores = np.zeros((3, 4), np.float32)
  assert verifiers.check_scores(scores, "length") is scores
  scores[1, 2], scores[2, 0] = np.nan, -np.inf
  with pytest.raises(ValueError, match=r"^length returned 2 non-finite score\(s\) of 12, at "
                                       r"\(prompt, sample\) \(1, 2\): nan, \(2, 0\): -inf$"):
    verifiers.check_scores(scores, "length")
  with pytest.raises(ValueError, match=r"\(0, 1\): nan and 10 more$"):
    verifiers.check_scores(np.full((3, 4), np.nan), "learned", max_listed=2)
  with pytest.raises(ValueError, match=r"scores must be \[prompts, samples\], got shape \(4,\)"):
    verifiers.check_scores(np.zeros(4), "length")
