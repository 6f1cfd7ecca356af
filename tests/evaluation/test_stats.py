"""Per-problem metrics and bootstrap intervals: exact on known samples, 95% coverage by simulation."""

import numpy as np
import pytest
from scipy import special

from bonjax import objectives
from bonjax.evaluation import stats


def test_problem_metrics_match_the_objectives_estimators():
  rng = np.random.default_rng(0)
  scores = rng.normal(size=(300, 8)).astype(np.float32)  # more than one block of problems
  rewards = (rng.random((300, 8)) < 0.3).astype(np.float32)
  answers = rng.integers(0, 3, size=(300, 8))
  out = stats.problem_metrics(scores, rewards, [1, 4, 8], answers)
  np.testing.assert_allclose(out['pass'], objectives.pass_at_k(rewards > 0.5, [1, 4, 8]),
                             rtol=1e-6)
  np.testing.assert_allclose(out['bon'], objectives.bon_at_k(scores, rewards, [1, 4, 8]),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out['max'], objectives.max_at_k(rewards, [1, 4, 8]), rtol=1e-6)
  np.testing.assert_allclose(out['maj'], objectives.majority_at_k(answers, rewards > 0.5,
                                                                  [1, 4, 8]), atol=1e-5)
  assert out['pass'].shape == (300, 3)


def test_answer_ids_group_equal_answers_and_keep_missing_ones_apart():
  ids = stats.answer_ids([['7', None, '7', None, '3']])
  assert ids[0, 0] == ids[0, 2] and ids[0, 0] != ids[0, 4]
  assert len({ids[0, 1], ids[0, 3], ids[0, 0], ids[0, 4]}) == 4


def test_n_beyond_the_samples_is_refused():
  with pytest.raises(ValueError, match=r'N = \[8\] is more than the 4 samples'):
    stats.problem_metrics(np.zeros((2, 4)), np.zeros((2, 4)), [1, 8])


def test_intervals_are_seeded_and_contain_the_mean():
  values = np.random.default_rng(1).random((50, 3))
  a = stats.interval(values, num_bootstrap=500, seed=3)
  b = stats.interval(values, num_bootstrap=500, seed=3)
  np.testing.assert_array_equal(a['ci_low'], b['ci_low'])
  assert np.all(a['ci_low'] <= a['mean']) and np.all(a['mean'] <= a['ci_high'])
  with pytest.raises(ValueError, match='confidence must lie in'):
    stats.interval(values, confidence=95)


def test_95_percent_intervals_cover_the_true_pass_at_n_of_a_known_policy():
  """Problems with success rates p ~ Beta(2, 5), 16 samples each: E pass@N = 1 - E (1-p)^N.

  1000 evaluations of 100 problems (the coverage's standard error is then 0.007).
  """
  alpha, beta, ns, num_problems, repeats = 2.0, 5.0, [1, 4, 16], 100, 1000
  truth = np.array([1 - np.exp(special.betaln(alpha, beta + n) - special.betaln(alpha, beta))
                    for n in ns])
  rng = np.random.default_rng(0)
  p = rng.beta(alpha, beta, size=(repeats * num_problems, 1))
  rewards = (rng.random((repeats * num_problems, 16)) < p).astype(np.float32)
  values = stats.problem_metrics(rewards, rewards, ns)['pass'].reshape(repeats, num_problems, -1)
  covered = np.zeros(len(ns))
  for repeat in range(repeats):
    ci = stats.interval(values[repeat], num_bootstrap=500, seed=repeat)
    covered += (ci['ci_low'] <= truth) & (truth <= ci['ci_high'])
  coverage = covered / repeats
  assert np.all((0.9 <= coverage) & (coverage <= 0.99)), coverage
