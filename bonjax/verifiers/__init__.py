"""Verifiers: score decoded completions, ``score(prompts, completions, metadata) -> [B, M]``.

    from bonjax import verifiers
    verifier = verifiers.get("math_answer")
    scores = verifier.score(prompts, completions, metadata)   # np.float32 [B, M]
    verifiers.check_scores(scores, "math_answer")   # ValueError naming any NaN/inf (i, j)

``verifiers.names()`` lists what ``get`` accepts. The constructors are plain classes with keyword
arguments, so the gin registry can register the same callables.
"""

from __future__ import annotations

from typing import Any, Callable

from bonjax.verifiers.answer_match import AnswerMatch
from bonjax.verifiers.base import (MissingMetadataError, Verifier, VerifierProtocol,
                                   check_scores, validate_inputs)
from bonjax.verifiers.code_execution import CodeExecution
from bonjax.verifiers.learned import LearnedVerifier
from bonjax.verifiers.math_answer import MathAnswer
from bonjax.verifiers.noisy import Noisy
from bonjax.verifiers.pools import WorkerPool
from bonjax.verifiers.sandbox import RunResult, Sandbox, SandboxLimits

REGISTRY: dict[str, Callable[..., VerifierProtocol]] = {
    "answer_match": AnswerMatch,
    "math_answer": MathAnswer,
    "code_execution": CodeExecution,
    "learned": LearnedVerifier,
    "noisy": Noisy,
}


class UnknownVerifierError(KeyError):
  """``get`` was given a name that is not registered."""

  def __str__(self) -> str:
    return self.args[0]


def names() -> list[str]:
  """The registered verifier names, sorted."""
  return sorted(REGISTRY)


def get(name: str, **kwargs: Any) -> VerifierProtocol:
  """Builds the verifier registered as ``name`` with keyword arguments ``kwargs``."""
  try:
    constructor = REGISTRY[name]
  except (KeyError, TypeError):
    raise UnknownVerifierError(f"unknown verifier {name!r}; valid names: "
                               f"{', '.join(names())}") from None
  return constructor(**kwargs)


__all__ = ["AnswerMatch", "CodeExecution", "LearnedVerifier", "MathAnswer", "MissingMetadataError", "Noisy",
           "REGISTRY", "RunResult", "Sandbox", "SandboxLimits", "UnknownVerifierError", "Verifier",
           "VerifierProtocol", "WorkerPool", "check_scores", "get", "names", "validate_inputs"]
