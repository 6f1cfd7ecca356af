"""Tests for bonjax/objectives/metrics.py: closed forms and brute force over all k-subsets."""

import itertools
import math

import chex
import jax.numpy as jnp
import numpy as np
import pytest

from bonjax import objectives as bo


def _subset_mean(num_samples, k, value_of_subset):
  return np.mean([value_of_subset(s) for s in itertools.combinations(range(num_samples), k)])


def _bon_of_subset(scores, rewards):
  def value(subset):
    best = max(scores[i] for i in subset)
    return np.mean([rewards[i] for i in subset if scores[i] == best])  # ties: mean R (§4)
  return value


def _majority_of_subset(answers, correct):
  def value(subset):
    ids, counts = np.unique([answers[i] for i in subset], return_counts=True)
    winners = ids[counts == counts.max()]
    return np.mean([np.mean([correct[j] for j in range(len(answers)) if answers[j] == a])
                    for a in winners])
  return value


def test_pass_at_k_matches_closed_form_and_brute_force():
  rng = np.random.RandomState(0)
  correct = rng.rand(5, 7) < 0.4
  got = np.asarray(bo.pass_at_k(correct, list(range(1, 8))))
  assert got.shape == (5, 7)
  for row in range(5):
    c = int(correct[row].sum())
    for k in range(1, 8):
      closed = 1 - math.comb(7 - c, k) / math.comb(7, k)
      brute = _subset_mean(7, k, lambda s: float(any(correct[row][i] for i in s)))
      assert got[row, k - 1] == pytest.approx(closed, abs=1e-6)
      assert closed == pytest.approx(brute, abs=1e-12)


def test_bon_at_k_with_ties_matches_brute_force_and_oracle_is_pass_at_k():
  rng = np.random.RandomState(1)
  scores = rng.randint(0, 3, (4, 7)).astype(np.float32)
  rewards = rng.rand(4, 7).astype(np.float32)
  got = np.asarray(bo.bon_at_k(scores, rewards, tuple(range(1, 8))))
  for row in range(4):
    for k in range(1, 8):
      brute = _subset_mean(7, k, _bon_of_subset(scores[row], rewards[row]))
      assert got[row, k - 1] == pytest.approx(brute, abs=1e-6), (row, k)
  correct = (rewards > 0.5).astype(np.float32)
  chex.assert_trees_all_close(bo.bon_at_k(correct, correct, 3), bo.pass_at_k(correct, 3),
                              atol=1e-6)
  chex.assert_trees_all_close(bo.max_at_k(rewards, 3), bo.bon_at_k(rewards, rewards, 3))
  chex.assert_trees_all_close(bo.bon_at_k(scores, rewards, 1), rewards.mean(-1), atol=1e-6)


@pytest.mark.slow
def test_majority_at_k_matches_brute_force():
  rng = np.random.RandomState(2)
  answers = rng.randint(0, 3, (3, 7))
  correct = (answers == 0).astype(np.float32)
  correct[0, answers[0] == 1] = 0.5  # an answer whose samples disagree counts by its mean
  ks = (1, 2, 3, 4, 7)
  got = np.asarray(bo.majority_at_k(answers, correct, ks))
  for row in range(3):
    for column, k in enumerate(ks):
      brute = _subset_mean(7, k, _majority_of_subset(answers[row], correct[row]))
      assert got[row, column] == pytest.approx(brute, abs=2e-5), (row, k)


@pytest.mark.parametrize("metric", ["pass", "bon", "max", "majority"])
def test_masked_samples_are_not_drawn_and_short_rows_are_nan(metric):
  rng = np.random.RandomState(3)
  scores = rng.randint(0, 4, (3, 8)).astype(np.float32)
  correct = (rng.rand(3, 8) < 0.5).astype(np.float32)
  mask = np.stack([np.arange(8) < 6, np.arange(8) >= 2, np.arange(8) < 2])
  fn = {"pass": lambda s, c, k, m=None: bo.pass_at_k(c, k, mask=m),
        "bon": lambda s, c, k, m=None: bo.bon_at_k(s, c, k, mask=m),
        "max": lambda s, c, k, m=None: bo.max_at_k(c, k, mask=m),
        "majority": lambda s, c, k, m=None: bo.majority_at_k(s.astype(np.int32), c, k, mask=m)}[metric]
  got = np.asarray(fn(scores, correct, 3, mask))
  for row in range(2):
    kept = mask[row]
    alone = np.asarray(fn(scores[row][kept][None], correct[row][kept][None], 3))[0]
    assert got[row] == pytest.approx(alone, abs=1e-5)
  assert np.isnan(got[2])  # 2 valid samples < k = 3: no unbiased estimate


@pytest.mark.slow
def test_large_m_and_bf16_are_finite():
  rng = np.random.RandomState(4)
  scores = jnp.asarray(rng.randint(0, 50, (2, 256)), jnp.bfloat16)
  rewards = jnp.asarray(rng.rand(2, 256) < 0.1, jnp.bfloat16)
  for value in (bo.pass_at_k(rewards, [1, 128, 256]), bo.bon_at_k(scores, rewards, [1, 64, 256]),
                bo.max_at_k(rewards, 200)):
    assert value.dtype == jnp.float32 and np.all(np.isfinite(value))
  np.testing.assert_allclose(bo.pass_at_k(rewards, 256), 1.0)  # some correct sample in every row
  assert np.all(np.isfinite(bo.majority_at_k(jnp.asarray(rng.randint(0, 9, (2, 32))),
                                             rng.rand(2, 32) < 0.5, 32)))


@pytest.mark.parametrize("call,error", [
    (lambda c: bo.pass_at_k(c, 5), ValueError),  # k > M
    (lambda c: bo.pass_at_k(c, 0), ValueError),  # k < 1
    (lambda c: bo.pass_at_k(c, [1, 5]), ValueError),
    (lambda c: bo.pass_at_k(c, 2.5), TypeError),
    (lambda c: bo.bon_at_k(c, c[:, :2], 2), ValueError),  # mismatched shapes
    (lambda c: bo.majority_at_k(c, c, 2), TypeError),  # float answer ids
    (lambda c: bo.max_at_k(c, 2, mask=c[:1]), ValueError),
])
def test_bad_input(call, error):
  with pytest.raises(error):
    call(jnp.ones((2, 4)))
