"""answer_match: exact integers."""

import chex
import numpy as np
import pytest

from bonjax import verifiers


def test_scores_exact_integer_matches():
  verifier = verifiers.get("answer_match")
  completions = [["3 + 4 = 7. The answer is 7.", "#### 8", r"\boxed{7}", "so 7.5"],
                 ["The answer is -12", "-12 is wrong, it is 12", "no number", "#### -12"]]
  metadata = [{"answer": 7}, {"answer": "-12"}]
  scores = verifier.score(["q1", "q2"], completions, metadata)
  chex.assert_shape(scores, (2, 4))
  assert scores.dtype == np.float32
  np.testing.assert_array_equal(scores, [[1, 0, 1, 0], [1, 0, 0, 1]])


def test_missing_answer_names_the_entry():
  with pytest.raises(KeyError, match=r"metadata\[1\] has no 'answer' key; answer_match needs: "
                                     r"answer"):
    verifiers.get("answer_match").score(["a", "b"], [["1"], ["2"]], [{"answer": 1}, {}])
