"""Tie-aware order statistics and binomial ratios shared by weights and metrics (private).

Both use the observation of BON_MATH §4-§5.2 that breaking score ties uniformly at random is the same
as averaging over a uniformly random strict order of each tie group. A sample whose tie group holds
`g` samples, with `L` valid samples strictly below it and `U = L + g` at or below it, then has its
rank uniform on `L+1..U`, and hockey-stick sums turn the expected binomial weight of that rank into
differences of one binomial table: `E[C(rank-1, k-1)] = (C(U, k) - C(L, k)) / g`.

Order statistics come from `[..., M, M]` comparison matrices contracted with matmuls: O(M^2) per
prompt, but on CPU and accelerators alike it beats a sort of M = 64..256 elements by a wide margin.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


@functools.lru_cache(maxsize=None)
def _log_binom_table_np(max_x: int, k: int) -> np.ndarray:
  """log C(x, k) for x = -1..max_x (entry x + 1), -inf where C(x, k) = 0, in float64."""
  table = np.full(max_x + 2, -np.inf)
  if k >= 0:
    for x in range(k, max_x + 1):
      table[x + 1] = math.lgamma(x + 1) - math.lgamma(k + 1) - math.lgamma(x - k + 1)
  return table


def log_binom(x: jnp.ndarray, k: int, max_x: int, dtype) -> jnp.ndarray:
  """log C(x, k) for integer arrays `x` in [-1, max_x] and a static k (a table gather)."""
  table = jnp.asarray(_log_binom_table_np(max_x, k), dtype=dtype)
  return jnp.take(table, x + 1, mode="clip")


class BinomRatio:
  """Evaluates `C(x, k) / C(m, n)` per row, in log space so M = 256 neither overflows nor underflows.

  Rows with `m < n` (too few valid samples) get a finite dummy denominator; callers zero them.
  """

  def __init__(self, m: jnp.ndarray, n: int, max_x: int, dtype):
    self._max_x, self._dtype = max_x, dtype
    log_denominator = log_binom(m, n, max_x, dtype)
    self.row_ok = m >= n
    self._log_denominator = jnp.where(self.row_ok, log_denominator, 0.0)

  def __call__(self, x: jnp.ndarray, k: int) -> jnp.ndarray:
    """Per sample: `x` is `[..., M]`."""
    return jnp.exp(log_binom(x, k, self._max_x, self._dtype) - self._log_denominator[..., None])

  def per_row(self, x: jnp.ndarray, k: int) -> jnp.ndarray:
    """Per row: `x` is `[...]`."""
    return jnp.exp(log_binom(x, k, self._max_x, self._dtype) - self._log_denominator)


def rowdot(matrix: jnp.ndarray, vector: jnp.ndarray) -> jnp.ndarray:
  """`out[..., i] = sum_j matrix[..., i, j] * vector[..., j]` at full f32 precision.

  HIGHEST precision matters on TPU/GPU, whose default f32 matmuls round to bf16 or tf32.
  """
  return jnp.einsum("...ij,...j->...i", matrix, vector, precision=jax.lax.Precision.HIGHEST)


class TieStats(NamedTuple):
  """Order statistics of each sample among the valid samples of its prompt (all `[..., M]`)."""
  below: jnp.ndarray      # L_i: valid samples with a strictly lower score (int32)
  group: jnp.ndarray      # g_i: valid samples with an equal score, i included if valid (int32)
  at_or_below: jnp.ndarray  # U_i = L_i + g_i (int32)
  lower: jnp.ndarray      # [..., M, M]: lower[i, j] = 1 if s_j < s_i (as `dtype`)
  equal: jnp.ndarray      # [..., M, M]: equal[i, j] = 1 if s_j == s_i (as `dtype`)


def tie_stats(scores: jnp.ndarray, valid: jnp.ndarray, dtype) -> TieStats:
  """Counts L, g, U of every sample against the valid samples of its row (BON_MATH §4)."""
  lower = (scores[..., None, :] < scores[..., :, None]).astype(dtype)
  equal = (scores[..., None, :] == scores[..., :, None]).astype(dtype)
  v = valid.astype(dtype)
  below = jnp.round(rowdot(lower, v)).astype(jnp.int32)
  group = jnp.round(rowdot(equal, v)).astype(jnp.int32)
  return TieStats(below, group, below + group, lower, equal)


def valid_count(valid: jnp.ndarray) -> jnp.ndarray:
  """m: number of valid samples per row (int32, `[...]`)."""
  return jnp.sum(valid.astype(jnp.int32), axis=-1)
