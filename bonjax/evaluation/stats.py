"""Per-problem k-sample metrics and their confidence intervals over problems.

    samples of one temperature: scores s, rewards R [K problems, M]  (answers [K][M] for maj@N)
      --problem_metrics--> {'pass', 'bon', 'maj', 'max'}: [K, len(ns)], each row unbiased for
                           that problem (`bonjax.objectives`, docs/bon_math.md §4)
      --summarize--> mean over problems and a bootstrap CI (problems resampled with replacement)

The uncertainty an evaluation reports is over problems: the samples of a problem are averaged
exactly by the unbiased estimators, and the problems are a draw from the task's distribution, so
the interval covers the population value E_problem[metric@N]. Intervals are bootstrap percentile
intervals with a fixed seed (the same numbers on every run).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from bonjax import objectives

# Metric name -> what it is, in the tables and plots.
METRICS = {'pass': 'pass@N', 'bon': 'BoN@N', 'maj': 'maj@N', 'max': 'max@N'}
_BLOCK = 256  # problems per estimator call: bounds maj@N's O(K k^2 M^2) working set


def answer_ids(answers: Sequence[Sequence[str | None]]) -> np.ndarray:
  """int32 [K, M] ids that are equal exactly when two samples of a problem give the same answer.

  A sample without an answer (None) gets an id of its own: it votes for nothing anyone shares.
  """
  ids = np.zeros((len(answers), len(answers[0]) if answers else 0), np.int32)
  for i, row in enumerate(answers):
    seen: dict[str, int] = {}
    for j, answer in enumerate(row):
      ids[i, j] = seen.setdefault(answer, len(seen)) if answer is not None else len(row) + j
  return ids


def _blocks(num_rows: int):
  for start in range(0, num_rows, _BLOCK):
    yield start, min(start + _BLOCK, num_rows)


def _padded(x: np.ndarray, size: int) -> np.ndarray:
  """x with its rows repeated up to `size` (one compiled estimator for every block)."""
  return np.concatenate([x, np.repeat(x[-1:], size - len(x), axis=0)]) if len(x) < size else x


def problem_metrics(scores: np.ndarray, rewards: np.ndarray, ns: Sequence[int],
                    answers: np.ndarray | None = None) -> dict[str, np.ndarray]:
  """Unbiased per-problem metrics from M samples of each of K problems.

  Args:
    scores: [K, M] verifier scores s (the BoN pick is the highest-scored sample).
    rewards: [K, M] task rewards R; a sample is correct when R > 0.5.
    ns: the Ns, each in [1, M].
    answers: optional int [K, M] answer ids (`answer_ids`) for maj@N.

  Returns:
    float64 [K, len(ns)] arrays: 'pass' (P(some of N correct)), 'bon' (the reward of the
    verifier's pick among N), 'max' (the best reward among N) and, with answers, 'maj' (the
    correctness of the most frequent answer among N, ties broken uniformly).
  """
  scores, rewards = np.asarray(scores, np.float32), np.asarray(rewards, np.float32)
  if scores.shape != rewards.shape or scores.ndim != 2:
    raise ValueError(f'scores and rewards must both be [problems, samples], got {scores.shape} '
                     f'and {rewards.shape}')
  num_problems, num_samples = scores.shape
  ns = list(ns)
  too_many = [n for n in ns if n > num_samples]
  if too_many:
    raise ValueError(f'N = {too_many} is more than the {num_samples} samples drawn per problem: '
                     f'draw at least max(N) = {max(ns)} samples')
  names = ['pass', 'bon', 'max'] + (['maj'] if answers is not None else [])
  out = {name: np.zeros((num_problems, len(ns))) for name in names}
  for lo, hi in _blocks(num_problems):
    size = min(_BLOCK, num_problems)
    s, r = _padded(scores[lo:hi], size), _padded(rewards[lo:hi], size)
    correct = jnp.asarray(r > 0.5)
    values = {'pass': objectives.pass_at_k(correct, ns),
              'bon': objectives.bon_at_k(jnp.asarray(s), jnp.asarray(r), ns),
              'max': objectives.max_at_k(jnp.asarray(r), ns)}
    if answers is not None:
      ids = _padded(np.asarray(answers, np.int32)[lo:hi], size)
      values['maj'] = objectives.majority_at_k(jnp.asarray(ids), correct, ns)
    for name, value in values.items():
      out[name][lo:hi] = np.asarray(value, np.float64)[:hi - lo]
  return out


def bootstrap_means(values: np.ndarray, num_bootstrap: int, seed: int) -> np.ndarray:
  """Means of `values` [K, ...] over `num_bootstrap` resamples of its K rows: [num_bootstrap, ...].

  A resample is a multinomial count per row, so the cost is one [B, K] x [K, ...] product.
  """
  values = np.asarray(values, np.float64)
  num = values.shape[0]
  counts = np.random.default_rng(seed).multinomial(num, np.full(num, 1.0 / num),
                                                   size=num_bootstrap)
  return np.tensordot(counts, values, axes=(1, 0)) / num


def interval(values: np.ndarray, *, confidence: float = 0.95, num_bootstrap: int = 1000,
             seed: int = 0) -> dict[str, np.ndarray]:
  """The mean over problems of `values` [K, ...] and its bootstrap percentile interval.

  Returns {'mean', 'ci_low', 'ci_high'}, each of shape values.shape[1:].
  """
  if not 0.0 < confidence < 1.0:
    raise ValueError(f'confidence must lie in (0, 1), got {confidence}')
  if num_bootstrap < 1:
    raise ValueError(f'num_bootstrap must be positive, got {num_bootstrap}')
  values = np.asarray(values, np.float64)
  if values.shape[0] == 0:
    raise ValueError('no problems to average over')
  mean = values.mean(axis=0)
  # The resampled means spread by sqrt((K - 1) / K) of the standard error (the plug-in
  # variance); rescaling their deviations makes that spread unbiased, which keeps the coverage
  # of the percentile interval near its level for tens of problems, not only thousands.
  num = values.shape[0]
  means = mean + (bootstrap_means(values, num_bootstrap, seed) - mean) * np.sqrt(
      num / max(num - 1, 1))
  tail = (1.0 - confidence) / 2
  low, high = np.quantile(means, [tail, 1.0 - tail], axis=0)
  return {'mean': mean, 'ci_low': low, 'ci_high': high}


def summarize(per_problem: dict[str, np.ndarray], **interval_kwargs) -> dict[str, dict]:
  """{metric: values [T, K, N]} -> {metric: {'mean', 'ci_low', 'ci_high'}: [T, N] each}."""
  out = {}
  for name, values in per_problem.items():
    # Problems first, so one bootstrap resample serves every (T, N) cell and they stay paired.
    out[name] = interval(np.moveaxis(values, 1, 0), **interval_kwargs)
  return out
