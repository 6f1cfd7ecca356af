"""``math_answer``: final answers of MATH / GSM8K solutions, compared with math-verify.

math-verify guards its sympy work with ``signal.alarm`` timeouts, which exist only in a process's
main thread (elsewhere it raises ValueError). So: in the main thread its timeouts are used; in
another thread they are switched off (sympy could then run long); with ``num_workers > 0`` the
comparisons run in a pool of spawned processes, each calling math-verify in its own main thread,
which keeps the timeouts and the parallelism. The pool is started by the first ``score`` call and
reused by the later ones (see ``pools.py``: each worker's start imports sympy, seconds).
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

import numpy as np

from bonjax.verifiers import answers
from bonjax.verifiers.base import Verifier
from bonjax.verifiers.pools import ClosingContext, WorkerPool

_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def _normalize(answer: str) -> str:
  answer = answer.strip().strip("$").strip()
  return _THOUSANDS.sub("", answer)


def _reference_text(reference: Any) -> str:
  """The reference answer as LaTeX text; a full solution text is reduced to its final answer."""
  text = str(reference)
  if answers.last_boxed(text) is not None or answers.answer_is_phrase(text) is not None:
    text = answers.extract_answer(text) or text
  return _normalize(text)


def is_equivalent(reference: str, completion: str, timeout_s: int | None = 5) -> bool:
  """True when the final answer of ``completion`` equals ``reference`` according to math-verify.

  Never raises: parse errors, sympy errors and timeouts all count as "not equivalent".
  ``timeout_s`` is ignored (treated as None) outside the main thread, where signals don't work.
  """
  import math_verify  # Imported lazily: it pulls in sympy, a second or so of start-up.

  if threading.current_thread() is not threading.main_thread():
    timeout_s = None
  predicted = answers.extract_answer(completion)
  if predicted is None:
    return False
  try:
    gold = math_verify.parse("\\boxed{" + _reference_text(reference) + "}",
                             parsing_timeout=timeout_s)
    target = math_verify.parse("\\boxed{" + _normalize(predicted) + "}",
                               parsing_timeout=timeout_s)
    if not gold or not target:
      return False
    return bool(math_verify.verify(gold, target, timeout_seconds=timeout_s))
  except BaseException as error:  # math-verify's TimeoutException derives from BaseException.
    if isinstance(error, (KeyboardInterrupt, SystemExit)):
      raise
    logging.debug("math_answer: comparison failed: %r", error)
    return False


class MathAnswer(ClosingContext, Verifier):
  """Scores 1.0 when the completion's final answer is equivalent to ``metadata['answer']``.

  The final answer is the last ``\\boxed{}`` (nested braces allowed), else what follows "The answer
  is", else the last number. Equivalence is math-verify's: ``\\frac{1}{2}``, ``\\dfrac12``, 1/2 and 0.5
  agree, and so do ``2\\sqrt{2}`` and ``\\sqrt{8}``.

  Args:
    timeout_s: seconds math-verify may spend on one parse or comparison (main thread or workers).
    num_workers: 0 compares in this process; N > 0 uses a pool of N spawned processes, kept
      until ``close()`` (or ``with MathAnswer(...) as verifier:``).
  """

  name = "math_answer"
  required_keys = ("answer",)

  def __init__(self, timeout_s: int = 5, num_workers: int = 0):
    if timeout_s is not None and (not isinstance(timeout_s, int) or timeout_s <= 0):
      raise ValueError(f"math_answer: timeout_s must be a positive int (whole seconds, as "
                       f"signal.alarm needs) or None, got {timeout_s!r}")
    if num_workers < 0:
      raise ValueError(f"math_answer: num_workers must be >= 0, got {num_workers}")
    self.timeout_s = timeout_s
    self.num_workers = num_workers
    self._pool = WorkerPool(num_workers, "process") if num_workers else None

  def close(self) -> None:
    """Stops the worker processes (a later ``score`` starts new ones)."""
    if self._pool is not None:
      self._pool.close()

  def score_one(self, prompt: str, completion: str, metadata: dict[str, Any]) -> float:
    return float(is_equivalent(metadata["answer"], completion, self.timeout_s))

  def _score_batch(self, prompts, completions, metadata) -> np.ndarray:
    if self.num_workers == 0:
      return super()._score_batch(prompts, completions, metadata)
    pairs = [(str(m["answer"]), c) for cs, m in zip(completions, metadata) for c in cs]
    if not pairs:
      return np.zeros((len(prompts), 0), np.float32)
    flat = self._pool.map(is_equivalent, *zip(*pairs), [self.timeout_s] * len(pairs),
                          chunksize=max(1, len(pairs) // (4 * self.num_workers)))
    return np.array(flat, np.float32).reshape(len(prompts), -1)
