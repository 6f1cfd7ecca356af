"""``noisy``: another verifier with controlled errors (flipped verdicts, score noise).

The paper's BoN analysis turns on verifier errors growing with temperature and N; this wrapper
lets experiments dial those errors in: each score is flipped (``s -> 1 - s``) with probability
``flip_prob`` and then gets Gaussian noise of scale ``noise_std``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bonjax.verifiers.base import Verifier, VerifierProtocol


class Noisy(Verifier):
  """Wraps ``verifier`` (an instance or a registered name) and perturbs its scores.

  Draws come from ``np.random.default_rng(seed)``, advanced on every ``score`` call: a fixed seed
  replays the same sequence of calls exactly.

  Args:
    verifier: the verifier to wrap, or its registry name (then built with ``verifier_kwargs``).
    flip_prob: probability, per score, of replacing ``s`` by ``1 - s`` (binary scores flip).
    noise_std: standard deviation of Gaussian noise added after flipping.
    seed: seed of the generator.
  """

  name = "noisy"

  def __init__(self, verifier: VerifierProtocol | str, flip_prob: float = 0.0,
               noise_std: float = 0.0, seed: int = 0, **verifier_kwargs: Any):
    if not 0.0 <= flip_prob <= 1.0:
      raise ValueError(f"noisy: flip_prob must be in [0, 1], got {flip_prob}")
    if noise_std < 0.0:
      raise ValueError(f"noisy: noise_std must be >= 0, got {noise_std}")
    if isinstance(verifier, str):
      from bonjax.verifiers import get  # The registry imports this module.
      verifier = get(verifier, **verifier_kwargs)
    elif verifier_kwargs:
      raise TypeError(f"noisy: keyword arguments {sorted(verifier_kwargs)} are only for a "
                      "verifier given by name")
    if not isinstance(verifier, VerifierProtocol):
      raise TypeError(f"noisy: verifier must have a score method, got {type(verifier).__name__}")
    self.verifier = verifier
    self.required_keys = tuple(getattr(verifier, "required_keys", ()))
    self.flip_prob = flip_prob
    self.noise_std = noise_std
    self._rng = np.random.default_rng(seed)

  def _score_batch(self, prompts, completions, metadata) -> np.ndarray:
    scores = np.asarray(self.verifier.score(prompts, completions, metadata), np.float32)
    flips = self._rng.random(scores.shape) < self.flip_prob
    scores = np.where(flips, 1.0 - scores, scores)
    if self.noise_std:
      scores = scores + self.noise_std * self._rng.standard_normal(scores.shape)
    return scores.astype(np.float32)
