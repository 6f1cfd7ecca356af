"""``answer_match``: exact integer answers, for the synthetic arithmetic task."""

from __future__ import annotations

from typing import Any

from bonjax.verifiers import answers
from bonjax.verifiers.base import Verifier


class AnswerMatch(Verifier):
  """Scores 1.0 when the completion's final integer equals ``metadata['answer']``, else 0.0.

  The final integer is read from ``\\boxed{N}``, "The answer is N", "#### N" or, failing those, the
  last number in the text (see ``answers.extract_integer``).
  """

  name = "answer_match"
  required_keys = ("answer",)

  def score_one(self, prompt: str, completion: str, metadata: dict[str, Any]) -> float:
    predicted = answers.extract_integer(completion)
    if predicted is None:
      return 0.0
    reference = metadata["answer"]
    if isinstance(reference, str):
      reference = answers.extract_integer(reference)
    elif isinstance(reference, float) and reference.is_integer():
      reference = int(reference)
    return float(isinstance(reference, int) and predicted == reference)
