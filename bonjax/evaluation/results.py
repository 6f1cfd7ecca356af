"""What an evaluation returns: per-problem values over (T, N), their means and CIs, the fits.

`EvalResults` holds every number `eval.json` holds and reads back from it, so a demo or a
notebook can compare two policies on the same problems with `paired_difference`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from bonjax.evaluation import stats

RESULTS_FILE = 'eval.json'


@dataclasses.dataclass
class EvalResults:
  """The evaluation of one policy on K problems, at every temperature T and every N.

  Attributes:
    ns: the Ns.
    temperatures: the temperatures.
    num_samples: M, samples drawn per problem and temperature (M >= max(ns)).
    problem_indices: int [K], the problems' indices in the split.
    per_problem: metric ('pass', 'bon', 'max' and, on answer tasks, 'maj') -> float [T, K, N],
      each problem's unbiased value (paired across policies evaluated on the same problems).
    summary: metric -> {'mean', 'ci_low', 'ci_high'}: float [T, N] each.
    coscaling: `bonjax.evaluation.coscaling.fit_coscaling` of the mean pass@N.
    buckets: difficulty bucket -> {'num_problems', 'summary', 'coscaling'} (empty when the
      dataset has no bucket field).
    info: how it was evaluated (split, checkpoint step, verifier, reward, seed, confidence,
      num_bootstrap, bucket_field, seconds, out_dir, ...).
  """

  ns: tuple[int, ...]
  temperatures: tuple[float, ...]
  num_samples: int
  problem_indices: np.ndarray
  per_problem: dict[str, np.ndarray]
  summary: dict[str, dict[str, np.ndarray]]
  coscaling: dict[str, Any]
  buckets: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
  info: dict[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def metrics(self) -> tuple[str, ...]:
    return tuple(self.per_problem)

  def _cell(self, metric: str, n: int, t: float) -> tuple[int, int]:
    if metric not in self.per_problem:
      raise KeyError(f'no metric {metric!r} in these results; they have {list(self.per_problem)}')
    if n not in self.ns:
      raise KeyError(f'N = {n} was not evaluated; the Ns are {list(self.ns)}')
    matches = [i for i, temperature in enumerate(self.temperatures) if np.isclose(temperature, t)]
    if not matches:
      raise KeyError(f'T = {t} was not evaluated; the temperatures are {list(self.temperatures)}')
    return matches[0], self.ns.index(n)

  def mean(self, metric: str, n: int, t: float) -> float:
    """The mean of metric@n at temperature t over the problems."""
    ti, ni = self._cell(metric, n, t)
    return float(self.summary[metric]['mean'][ti, ni])

  def interval(self, metric: str, n: int, t: float) -> tuple[float, float]:
    """The confidence interval of `mean(metric, n, t)`."""
    ti, ni = self._cell(metric, n, t)
    return (float(self.summary[metric]['ci_low'][ti, ni]),
            float(self.summary[metric]['ci_high'][ti, ni]))

  def values(self, metric: str, n: int, t: float) -> np.ndarray:
    """Each problem's metric@n at temperature t: float [K], ordered as problem_indices."""
    ti, ni = self._cell(metric, n, t)
    return self.per_problem[metric][ti, :, ni]

  def to_json(self) -> dict[str, Any]:
    plain = lambda tree: json.loads(json.dumps(tree, default=_to_list))
    return plain({'ns': list(self.ns), 'temperatures': list(self.temperatures),
                  'num_samples': self.num_samples, 'num_problems': len(self.problem_indices),
                  'problem_indices': self.problem_indices, 'summary': self.summary,
                  'coscaling': self.coscaling, 'buckets': self.buckets, 'info': self.info,
                  'per_problem': self.per_problem})

  @classmethod
  def from_json(cls, record: dict[str, Any]) -> 'EvalResults':
    arrays = lambda d: {k: np.asarray(v, np.float64) for k, v in d.items()}
    return cls(ns=tuple(record['ns']), temperatures=tuple(record['temperatures']),
               num_samples=record['num_samples'],
               problem_indices=np.asarray(record['problem_indices'], np.int64),
               per_problem=arrays(record['per_problem']),
               summary={k: arrays(v) for k, v in record['summary'].items()},
               coscaling=record['coscaling'], buckets=record['buckets'], info=record['info'])

  def save(self, out_dir: str) -> str:
    """Writes <out_dir>/eval.json (atomically); returns its path."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, RESULTS_FILE)
    with open(path + '.tmp', 'w', encoding='utf-8') as f:
      json.dump(self.to_json(), f)
    os.replace(path + '.tmp', path)
    return path

  @classmethod
  def load(cls, path: str) -> 'EvalResults':
    """Reads eval.json (or the directory holding it)."""
    if os.path.isdir(path):
      path = os.path.join(path, RESULTS_FILE)
    with open(path, encoding='utf-8') as f:
      return cls.from_json(json.load(f))


def _to_list(value):
  if isinstance(value, np.ndarray):
    return np.where(np.isnan(value), None, value).tolist() if value.dtype.kind == 'f' \
        else value.tolist()
  if isinstance(value, np.generic):
    return value.item()
  raise TypeError(f'cannot write {type(value).__name__} to eval.json')


def paired_difference(results_a: EvalResults, results_b: EvalResults, metric: str, n: int,
                      t: float, *, confidence: float = 0.95, num_bootstrap: int = 2000,
                      seed: int = 0) -> dict[str, float]:
  """metric@n at temperature t of policy a minus policy b, with a paired bootstrap CI.

  Both must be evaluated on the same problems (the same problem_indices); the problems are
  resampled together, so the interval is that of the difference, far narrower than the two
  separate intervals when the policies succeed on similar problems.

  Returns {'difference', 'ci_low', 'ci_high', 'a', 'b', 'num_problems'}.
  """
  if not np.array_equal(results_a.problem_indices, results_b.problem_indices):
    raise ValueError(f'paired_difference needs both policies evaluated on the same problems; '
                     f'got {len(results_a.problem_indices)} and {len(results_b.problem_indices)} '
                     f'problems that differ')
  a, b = results_a.values(metric, n, t), results_b.values(metric, n, t)
  out = stats.interval((a - b)[:, None], confidence=confidence, num_bootstrap=num_bootstrap,
                       seed=seed)
  return {'difference': float(out['mean'][0]), 'ci_low': float(out['ci_low'][0]),
          'ci_high': float(out['ci_high'][0]), 'a': float(a.mean()), 'b': float(b.mean()),
          'num_problems': int(len(a))}


def check_grid(ns: Sequence[int], temperatures: Sequence[float],
               num_samples: int | None) -> tuple[tuple[int, ...], tuple[float, ...], int]:
  """Validates the N and T grids; returns them sorted and M (default max(ns))."""
  ns = tuple(ns)
  if not ns or any(isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1
                   for n in ns):
    raise ValueError(f'the Ns must be a non-empty list of positive ints, got {list(ns)}')
  temperatures = check_temperatures(temperatures)
  num_samples = max(ns) if num_samples is None else num_samples
  if max(ns) > num_samples:
    raise ValueError(f'N = {max(ns)} is larger than the {num_samples} samples drawn per problem '
                     f'(num_samples): draw at least max(N) samples')
  return tuple(sorted({int(n) for n in ns})), tuple(sorted(temperatures)), int(num_samples)


def check_temperatures(temperatures: Sequence[float]) -> tuple[float, ...]:
  """The temperatures as floats; one clear error for an empty list, a negative or a repeat."""
  temperatures = tuple(float(t) for t in temperatures)
  if not temperatures:
    raise ValueError('the temperature list is empty: give at least one, e.g. 0.7')
  negative = [t for t in temperatures if not t >= 0]
  if negative:
    raise ValueError(f'temperatures must be >= 0 (0 is greedy), got {negative}')
  if len(set(temperatures)) != len(temperatures):
    raise ValueError(f'temperatures repeat: {list(temperatures)}')
  return temperatures
