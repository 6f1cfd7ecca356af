"""The verifier protocol and the input checks every verifier shares.

A verifier scores ``M`` decoded completions for each of ``B`` prompts::

    scores = verifier.score(prompts, completions, metadata)   # np.float32 [B, M]

``prompts[i]`` is the prompt text, ``completions[i]`` the list of its ``M`` completions and
``metadata[i]`` a dict with whatever the verifier needs (the reference answer, unit tests, ...).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np


class MissingMetadataError(KeyError):
  """A metadata dict lacks a key the verifier needs."""

  def __str__(self) -> str:
    return self.args[0]


@runtime_checkable
class VerifierProtocol(Protocol):
  """Anything with a ``score`` method of this signature can act as a verifier."""

  def score(self, prompts: Sequence[str], completions: Sequence[Sequence[str]],
            metadata: Sequence[dict[str, Any]]) -> np.ndarray:
    ...


class Verifier(abc.ABC):
  """Base class: validates the inputs once, then scores each (prompt, completion) pair.

  Subclasses set ``name`` and ``required_keys`` and implement either ``score_one`` (one pair at a
  time) or override ``_score_batch`` (when the pairs are better scored together, e.g. in parallel).
  """

  name: str = "verifier"
  required_keys: tuple[str, ...] = ()

  def score(self, prompts: Sequence[str], completions: Sequence[Sequence[str]],
            metadata: Sequence[dict[str, Any]]) -> np.ndarray:
    """Scores every completion; returns float32 ``[len(prompts), M]``."""
    num_samples = validate_inputs(prompts, completions, metadata, verifier=self.name,
                                  required_keys=self.required_keys)
    if not prompts:
      return np.zeros((0, 0), np.float32)
    scores = self._score_batch(list(prompts), [list(c) for c in completions], list(metadata))
    scores = np.asarray(scores, np.float32)
    expected = (len(prompts), num_samples)
    if scores.shape != expected:
      raise AssertionError(f"{self.name} returned scores of shape {scores.shape}, not {expected}")
    return scores

  def _score_batch(self, prompts: list[str], completions: list[list[str]],
                   metadata: list[dict[str, Any]]) -> np.ndarray:
    return np.array([[self.score_one(p, c, m) for c in cs]
                     for p, cs, m in zip(prompts, completions, metadata)], np.float32)

  def score_one(self, prompt: str, completion: str, metadata: dict[str, Any]) -> float:
    """Scores a single completion. Subclasses override this or ``_score_batch``."""
    raise TypeError(f"{type(self).__name__} must override score_one or _score_batch")

  def __call__(self, prompts, completions, metadata) -> np.ndarray:
    return self.score(prompts, completions, metadata)


def validate_inputs(prompts: Sequence[str], completions: Sequence[Sequence[str]],
                    metadata: Sequence[dict[str, Any]], *, verifier: str,
                    required_keys: Sequence[str] = ()) -> int:
  """Checks the shapes and types of a ``score`` call and returns M (completions per prompt).

  Raises:
    TypeError: a prompt or completion that is not a ``str``, a metadata entry that is not a dict.
    ValueError: lengths that disagree, or prompts with different numbers of completions.
    MissingMetadataError (a KeyError): a metadata entry without a key the verifier needs.
  """
  for arg, value in (("prompts", prompts), ("completions", completions),
                     ("metadata", metadata)):
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
      raise TypeError(f"{verifier}: {arg} must be a list, got {type(value).__name__}")
  if not len(prompts) == len(completions) == len(metadata):
    raise ValueError(f"{verifier}: prompts, completions and metadata must have the same length, "
                     f"got {len(prompts)}, {len(completions)} and {len(metadata)}")
  num_samples = None
  for i, (prompt, samples, meta) in enumerate(zip(prompts, completions, metadata)):
    if not isinstance(prompt, str):
      raise TypeError(f"{verifier}: prompts[{i}] must be a str, got {type(prompt).__name__}")
    if isinstance(samples, (str, bytes)) or not isinstance(samples, Sequence):
      raise TypeError(f"{verifier}: completions[{i}] must be a list of str, "
                      f"got {type(samples).__name__}")
    for j, completion in enumerate(samples):
      if not isinstance(completion, str):
        raise TypeError(f"{verifier}: completions[{i}][{j}] must be a str, "
                        f"got {type(completion).__name__}")
    if num_samples is None:
      num_samples = len(samples)
    elif len(samples) != num_samples:
      raise ValueError(f"{verifier}: every prompt needs the same number of completions; "
                       f"completions[0] has {num_samples}, completions[{i}] has {len(samples)}")
    if not isinstance(meta, dict):
      raise TypeError(f"{verifier}: metadata[{i}] must be a dict, got {type(meta).__name__}")
    missing = [key for key in required_keys if key not in meta]
    if missing:
      raise MissingMetadataError(f"metadata[{i}] has no {missing[0]!r} key; {verifier} needs: "
                     f"{', '.join(required_keys)}")
  return num_samples or 0


def check_scores(scores: np.ndarray, name: str, max_listed: int = 8) -> np.ndarray:
  """Returns ``scores`` ([B, M]) when every entry is finite; else raises one clear error.

  Raises:
    ValueError: naming the verifier ``name`` and the (prompt, sample) indices of the NaN and
      infinite scores (the first ``max_listed`` of them, and how many there are).
  """
  scores = np.asarray(scores)
  if scores.ndim != 2:
    raise ValueError(f"{name}: scores must be [prompts, samples], got shape {scores.shape}")
  bad = np.argwhere(~np.isfinite(scores))
  if len(bad):
    listed = ", ".join(f"({i}, {j}): {scores[i, j]}" for i, j in bad[:max_listed].tolist())
    more = f" and {len(bad) - max_listed} more" if len(bad) > max_listed else ""
    raise ValueError(f"{name} returned {len(bad)} non-finite score(s) of {scores.size}, at "
                     f"(prompt, sample) {listed}{more}")
  return scores
