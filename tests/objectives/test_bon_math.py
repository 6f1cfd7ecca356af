"""Tests for bonjax/objectives/bon_math.py: the BoN policy, lambda_N and win rates."""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bonjax import objectives as bo


def _brute_force_bon(probs, scores, n):
  """pi_bon by enumerating all K^n draws and breaking ties uniformly (docs/bon_math.md §2)."""
  out = np.zeros(len(probs))
  for draw in itertools.product(range(len(probs)), repeat=n):
    weight = np.prod([probs[i] for i in draw])
    best = max(scores[i] for i in draw)
    winners = [i for i in draw if scores[i] == best]
    for i in winners:
      out[i] += weight / len(winners)
  return out


@pytest.mark.parametrize("scores", [[0.1, 0.7, 0.3, 0.9], [1.0, 1.0, 0.0, 2.0], [1, 1, 1, 1]])
def test_bon_probs_matches_brute_force_with_ties(scores, x64):
  probs = np.array([0.1, 0.2, 0.3, 0.4])
  for n in range(1, 5):
    got = np.asarray(bo.bon_probs(probs, np.asarray(scores, np.float64), n))
    np.testing.assert_allclose(got, _brute_force_bon(probs, scores, n), atol=1e-12)
    assert abs(got.sum() - 1.0) < 1e-12


def test_bon_probs_closed_forms():
  """No ties: F_le^n - F_lt^n (the discrete form of n pi F^(n-1)); binary oracle: correct
  pi (1 - p^n) / (1 - p), incorrect pi p^(n-1)."""
  probs = jnp.array([[0.1, 0.2, 0.3, 0.4]])
  scores = jnp.array([[0.4, 0.1, 0.3, 0.2]])
  cdf = jnp.array([[1.0, 0.2, 0.9, 0.6]])  # F_le of each response
  chex.assert_trees_all_close(bo.bon_probs(probs, scores, 3), cdf**3 - (cdf - probs)**3,
                              atol=1e-6)
  correct = jnp.array([[1.0, 0.0, 1.0, 0.0]])
  p = 0.6
  expected = jnp.where(correct > 0, probs * (1 - p**3) / (1 - p), probs * p**2)
  chex.assert_trees_all_close(bo.bon_probs(probs, correct, 3), expected, atol=1e-6)


def test_bon_probs_mask_bf16_and_large_n():
  probs = jnp.array([[0.5, 0.25, 0.25]])
  scores = jnp.array([[0.0, 1.0, 2.0]])
  masked = bo.bon_probs(probs, scores, 2, mask=jnp.array([[True, True, False]]))
  chex.assert_trees_all_close(masked, bo.bon_probs(jnp.array([[2 / 3, 1 / 3, 0.0]]), scores, 2))
  low = bo.bon_probs(probs.astype(jnp.bfloat16), scores.astype(jnp.bfloat16), 4)
  assert low.dtype == jnp.float32
  big = bo.bon_probs(probs, scores, 512)
  assert np.all(np.isfinite(big)) and abs(float(big.sum()) - 1.0) < 1e-4


def test_lambda_n_values_and_jit():
  values = bo.lambda_n(jnp.array([1, 2, 4, 8, 16, 32]))
  chex.assert_trees_all_close(values, jnp.array([0.0, 2.289, 4.917, 9.055, 17.032, 33.016]),
                              atol=2e-3)
  assert float(jax.jit(bo.lambda_n)(jnp.int32(8))) == pytest.approx(9.055, abs=2e-3)
  assert float(bo.lambda_n(256)) == pytest.approx(257.0, abs=1.0)  # about N + 1


def test_win_rate_against_the_others_with_ties_and_mask():
  scores = jnp.array([[0.0, 1.0, 1.0, 2.0], [3.0, 1.0, 2.0, 5.0]])
  mask = jnp.array([[True, True, True, True], [True, False, True, False]])
  got = bo.win_rate(scores, mask=mask)
  chex.assert_trees_all_close(got, jnp.array([[0.0, 2 / 3, 2 / 3, 1.0], [1.0, 0.0, 0.0, 0.0]]))
  single = bo.win_rate(jnp.array([[4.0, 1.0]]), mask=jnp.array([[True, False]]))
  chex.assert_trees_all_close(single, jnp.array([[1.0, 0.0]]))


@pytest.mark.parametrize("call,error", [
    (lambda: bo.bon_probs(jnp.ones((1, 3)) / 3, jnp.ones((1, 3)), 0), ValueError),
    (lambda: bo.bon_probs(jnp.ones((1, 3)) / 3, jnp.ones((1, 4)), 2), ValueError),
    (lambda: bo.bon_probs(jnp.ones((1, 3)) / 3, jnp.ones((1, 3)), 1.5), TypeError),
    (lambda: bo.win_rate(jnp.ones((2, 3)), mask=jnp.ones((2, 2), bool)), ValueError),
    (lambda: bo.win_rate(jnp.float32(1.0)), ValueError),
])
def test_bad_input(call, error):
  with pytest.raises(error):
    call()
