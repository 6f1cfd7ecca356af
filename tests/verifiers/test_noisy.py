"""noisy: flip rate and score noise as configured, each a pure function of its inputs."""

import pickle

import numpy as np
import pytest

from bonjax import verifiers
from bonjax.verifiers import noisy as noisy_lib

B, M = 100, 200


def _inputs():
  """B prompts with M distinct completions each, about a tenth of them right."""
  rng = np.random.default_rng(0)
  answers = rng.integers(0, 10, size=B)
  guesses = rng.integers(0, 10, size=(B, M))
  completions = [[f"Try {i}.{j}. The answer is {g}" for j, g in enumerate(row)]
                 for i, row in enumerate(guesses)]
  metadata = [{"answer": int(a)} for a in answers]
  return [f"q{i}" for i in range(B)], completions, metadata


def _noisy(**kwargs):
  return verifiers.get("noisy", verifier="answer_match", **kwargs)


def test_empirical_flip_rate_matches_flip_prob():
  prompts, completions, metadata = _inputs()
  clean = verifiers.get("answer_match").score(prompts, completions, metadata)
  scores = _noisy(flip_prob=0.2, seed=1).score(prompts, completions, metadata)
  assert set(np.unique(scores)) <= {0.0, 1.0}
  flips = scores != clean
  # 20,000 Bernoulli(0.2) draws: standard error 0.0028; 0.012 is 4.2 of them.
  assert abs(flips.mean() - 0.2) < 0.012, flips.mean()
  # Flips are independent of the verdict: the rate holds among right and wrong answers alike
  # (about 2,000 right ones: standard error 0.009).
  for verdict in (0.0, 1.0):
    assert abs(flips[clean == verdict].mean() - 0.2) < 0.04


def test_gaussian_noise_statistics():
  prompts, completions, metadata = _inputs()
  clean = verifiers.get("answer_match").score(prompts, completions, metadata)
  noise = _noisy(noise_std=0.5, seed=3).score(prompts, completions, metadata) - clean
  assert noise.dtype == np.float32
  # 20,000 normal draws: the mean's standard error is 0.0035, the std's 0.0025.
  assert abs(noise.mean()) < 0.015
  np.testing.assert_allclose(noise.std(), 0.5, rtol=0.03)
  np.testing.assert_allclose(np.mean(np.abs(noise) < 0.5), 0.6827, atol=0.015)  # One sigma.


def test_a_perturbation_depends_on_its_inputs_only():
  prompts, completions, metadata = _inputs()
  verifier = _noisy(flip_prob=0.3, noise_std=0.2, seed=7)
  first = verifier.score(prompts, completions, metadata)
  # The same call again, on the same instance and on a fresh one (a resumed run): the same.
  np.testing.assert_array_equal(verifier.score(prompts, completions, metadata), first)
  np.testing.assert_array_equal(_noisy(flip_prob=0.3, noise_std=0.2, seed=7).score(
      prompts, completions, metadata), first)
  # Whatever was scored before, and wherever a prompt sits in the batch.
  order = np.random.default_rng(1).permutation(B)[:10]
  fresh = _noisy(flip_prob=0.3, noise_std=0.2, seed=7)
  fresh.score(prompts[:3], completions[:3], metadata[:3])
  subset = fresh.score([prompts[i] for i in order], [completions[i] for i in order],
                       [metadata[i] for i in order])
  np.testing.assert_array_equal(subset, first[order])
  assert not np.array_equal(first, _noisy(flip_prob=0.3, noise_std=0.2, seed=8).score(
      prompts, completions, metadata))


def test_duplicate_samples_in_a_group_err_independently():
  completions = [["The answer is 3"] * M]
  scores = _noisy(noise_std=1.0, seed=0).score(["q"], completions, [{"answer": 3}])[0]
  assert len(set(scores.tolist())) == M  # Sample j is part of the input.
  flips = _noisy(flip_prob=0.5, seed=0).score(["q"], completions, [{"answer": 3}])[0]
  assert 0.3 < np.mean(flips == 0.0) < 0.7


def test_uniforms_are_a_pure_function_of_seed_prompt_j_and_completion():
  u = noisy_lib.uniforms(5, ["p", "q"], [["a", "b"], ["a", "b"]])
  assert u.shape == (2, 2, 3) and u.dtype == np.float64
  assert ((0.0 <= u) & (u < 1.0)).all()
  np.testing.assert_array_equal(u, noisy_lib.uniforms(5, ["p", "q"], [["a", "b"], ["a", "b"]]))
  np.testing.assert_array_equal(u[1], noisy_lib.uniforms(5, ["q"], [["a", "b"]])[0])
  # Each field counts: prompt, completion, position and seed.
  assert len({tuple(row) for row in u.reshape(4, 3).tolist()}) == 4
  assert not np.array_equal(u, noisy_lib.uniforms(6, ["p", "q"], [["a", "b"], ["a", "b"]]))
  # Fields are length-prefixed: moving text across the boundary changes the draw.
  assert not np.array_equal(noisy_lib.uniforms(0, ["ab"], [["c"]]),
                            noisy_lib.uniforms(0, ["a"], [["bc"]]))


def test_zero_noise_is_the_wrapped_verifier():
  prompts, completions, metadata = _inputs()
  np.testing.assert_array_equal(_noisy().score(prompts, completions, metadata),
                                verifiers.get("answer_match").score(prompts, completions, metadata))


def test_pickles_and_closes_what_it_wraps():
  verifier = _noisy(flip_prob=0.5, seed=2)
  prompts, completions, metadata = _inputs()
  copy = pickle.loads(pickle.dumps(verifier))
  np.testing.assert_array_equal(copy.score(prompts, completions, metadata),
                                verifier.score(prompts, completions, metadata))
  closed = []
  wrapped = verifiers.get("answer_match")
  wrapped.close = lambda: closed.append(True)
  with verifiers.get("noisy", verifier=wrapped):
    pass
  assert closed == [True]


def test_bad_arguments():
  with pytest.raises(ValueError, match=r"flip_prob must be in \[0, 1\]"):
    _noisy(flip_prob=1.5)
  with pytest.raises(ValueError, match="noise_std must be >= 0"):
    _noisy(noise_std=-1.0)
  with pytest.raises(TypeError, match="seed must be an int, got float"):
    _noisy(seed=1.5)
  with pytest.raises(KeyError, match="unknown verifier 'nope'"):
    verifiers.get("noisy", verifier="nope")
  with pytest.raises(TypeError, match="must have a score method"):
    verifiers.get("noisy", verifier=42)
  with pytest.raises(KeyError, match=r"metadata\[0\] has no 'answer' key; noisy needs"):
    _noisy().score(["q"], [["1"]], [{}])
