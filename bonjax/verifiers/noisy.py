"""``noisy``: another verifier with controlled errors (flipped verdicts, score noise).

The paper's BoN analysis turns on verifier errors growing with temperature and N; this wrapper
lets experiments dial those errors in: each score is flipped (``s -> 1 - s``) with probability
``flip_prob`` and then gets Gaussian noise of scale ``noise_std``.

The perturbation of a score is a pure function of ``(seed, prompt, j, completion)``, ``j`` being
the sample's index within its prompt's group: no generator is advanced from call to call. Two
reasons. A resumed training run replays step ``t``'s rollouts and must see the scores the first
run saw, whatever was scored before (an advanced generator would have moved on). And a real
verifier's errors are a function of what it is shown: asked twice about the same completion it
errs the same way, so the noise must not be re-rolled per call. ``j`` is part of the input so
that duplicate samples in one group (frequent at low temperature) still err independently.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from bonjax.verifiers.base import Verifier, VerifierProtocol
from bonjax.verifiers.pools import ClosingContext

_PERSON = b"bonjax.noisy"  # Domain separation: these digests are used for nothing else.
_WORDS = 3  # uint64 words per score: one uniform for the flip, two for a Box-Muller normal.


def _length_prefixed(data: bytes) -> bytes:
  return len(data).to_bytes(8, "little") + data


def uniforms(seed: int, prompts: list[str], completions: list[list[str]]) -> np.ndarray:
  """float64 [B, M, 3] in [0, 1), each row of 3 a function of (seed, prompt, j, completion) alone.

  Each triple comes from a 24-byte BLAKE2b digest of the length-prefixed fields; a uint64 word
  becomes a uniform from its top 53 bits.
  """
  seed_bytes = _length_prefixed(str(seed).encode())
  digests = []
  for prompt, samples in zip(prompts, completions):
    prompt_bytes = _length_prefixed(prompt.encode("utf-8", "surrogatepass"))
    for j, completion in enumerate(samples):
      digest = hashlib.blake2b(seed_bytes, digest_size=8 * _WORDS, person=_PERSON)
      digest.update(prompt_bytes)
      digest.update(j.to_bytes(8, "little"))
      digest.update(_length_prefixed(completion.encode("utf-8", "surrogatepass")))
      digests.append(digest.digest())
  words = np.frombuffer(b"".join(digests), dtype="<u8")
  num_samples = len(completions[0]) if completions else 0
  return ((words >> np.uint64(11)) * 2.0**-53).reshape(len(prompts), num_samples, _WORDS)


class Noisy(ClosingContext, Verifier):
  """Wraps ``verifier`` (an instance or a registered name) and perturbs its scores.

  Args:
    verifier: the verifier to wrap, or its registry name (then built with ``verifier_kwargs``).
    flip_prob: probability, per score, of replacing ``s`` by ``1 - s`` (binary scores flip).
    noise_std: standard deviation of Gaussian noise added after flipping.
    seed: an int; with the inputs it fixes every perturbation (see the module docstring).
  """

  name = "noisy"

  def __init__(self, verifier: VerifierProtocol | str, flip_prob: float = 0.0,
               noise_std: float = 0.0, seed: int = 0, **verifier_kwargs: Any):
    if not 0.0 <= flip_prob <= 1.0:
      raise ValueError(f"noisy: flip_prob must be in [0, 1], got {flip_prob}")
    if noise_std < 0.0:
      raise ValueError(f"noisy: noise_std must be >= 0, got {noise_std}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
      raise TypeError(f"noisy: seed must be an int, got {type(seed).__name__}")
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
    self.seed = int(seed)

  def close(self) -> None:
    """Closes the wrapped verifier, when it can be closed."""
    close = getattr(self.verifier, "close", None)
    if close is not None:
      close()

  def _score_batch(self, prompts, completions, metadata) -> np.ndarray:
    scores = np.asarray(self.verifier.score(prompts, completions, metadata), np.float32)
    if not (self.flip_prob or self.noise_std):
      return scores
    u = uniforms(self.seed, prompts, completions)
    scores = np.where(u[..., 0] < self.flip_prob, 1.0 - scores, scores)
    if self.noise_std:
      # Box-Muller; 1 - u is in (0, 1], so the log is finite.
      normal = np.sqrt(-2.0 * np.log1p(-u[..., 1])) * np.cos(2.0 * np.pi * u[..., 2])
      scores = scores + self.noise_std * normal
    return scores.astype(np.float32)
