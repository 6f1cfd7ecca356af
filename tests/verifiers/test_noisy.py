"""noisy: flip rate and score noise as configured, reproducible from the seed."""

import numpy as np
import pytest

from bonjax import verifiers

B, M = 100, 200


def _inputs():
  rng = np.random.default_rng(0)
  answers = rng.integers(0, 10, size=B)
  guesses = rng.integers(0, 10, size=(B, M))
  completions = [[f"The answer is {g}" for g in row] for row in guesses]
  metadata = [{"answer": int(a)} for a in answers]
  return ["q"] * B, completions, metadata


def test_empirical_flip_rate_matches_flip_prob():
  prompts, completions, metadata = _inputs()
  clean = verifiers.get("answer_match").score(prompts, completions, metadata)
  noisy = verifiers.get("noisy", verifier="answer_match", flip_prob=0.2, seed=1)
  scores = noisy.score(prompts, completions, metadata)
  assert set(np.unique(scores)) <= {0.0, 1.0}
  flip_rate = np.mean(scores != clean)
  # 20,000 Bernoulli(0.2) draws: standard error 0.0028.
  assert abs(flip_rate - 0.2) < 0.012, flip_rate


def test_gaussian_noise_and_determinism():
  prompts, completions, metadata = _inputs()
  base = verifiers.get("answer_match")
  clean = base.score(prompts, completions, metadata)
  make = lambda seed: verifiers.get("noisy", verifier=base, noise_std=0.5, seed=seed)
  first = make(3).score(prompts, completions, metadata)
  np.testing.assert_allclose(np.std(first - clean), 0.5, rtol=0.03)
  np.testing.assert_array_equal(first, make(3).score(prompts, completions, metadata))
  assert not np.array_equal(first, make(4).score(prompts, completions, metadata))
  assert first.dtype == np.float32


def test_zero_noise_is_the_wrapped_verifier():
  prompts, completions, metadata = _inputs()
  np.testing.assert_array_equal(
      verifiers.get("noisy", verifier="answer_match").score(prompts, completions, metadata),
      verifiers.get("answer_match").score(prompts, completions, metadata))


def test_bad_arguments():
  with pytest.raises(ValueError, match=r"flip_prob must be in \[0, 1\]"):
    verifiers.get("noisy", verifier="answer_match", flip_prob=1.5)
  with pytest.raises(ValueError, match="noise_std must be >= 0"):
    verifiers.get("noisy", verifier="answer_match", noise_std=-1.0)
  with pytest.raises(KeyError, match="unknown verifier 'nope'"):
    verifiers.get("noisy", verifier="nope")
  with pytest.raises(TypeError, match="must have a score method"):
    verifiers.get("noisy", verifier=42)
  with pytest.raises(KeyError, match=r"metadata\[0\] has no 'answer' key; noisy needs"):
    verifiers.get("noisy", verifier="answer_match").score(["q"], [["1"]], [{}])
