"""Tie-aware order statistics and binomial ratios shared by weights and metrics (private).

Both use the observation of docs/bon_math.md §4-§5.2 that breaking score ties uniformly at random
is the same as averaging over a uniformly random strict order of each tie group. A sample whose tie
group holds `g` samples, with `L` valid samples strictly below it and `U = L + g` at or below it,
then has its rank uniform on `L+1..U`, and hockey-stick sums turn the expected binomial weight of
that rank into differences of one binomial table: `E[C(rank-1, k-1)] = (C(U, k) - C(L, k)) / g`.

Only the counts L need an O(M^2) comparison (one matmul); the rest is O(M) bucket sums by rank
(see `Ranks`). On CPU this beats a sort of M = 64..256 elements by a wide margin.
"""

from __future__ import annotations

import functools
import math
from typing import Optional

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


class Ranks:
  """Tie-aware ranks of each sample among the valid samples of its row (all `[..., M]`).

  Only L_i (valid samples strictly below s_i) needs an O(M^2) comparison. Every other statistic is
  a sum over rank buckets: samples tied with i share L_i, so scatter-adding a per-sample quantity
  into bucket L_j and prefix-summing the M + 1 buckets gives tie-group sums and the sums over
  strictly lower or strictly higher samples in O(M) more work (no sort: XLA's CPU sort is slow).
  """

  def __init__(self, scores: jnp.ndarray, valid: jnp.ndarray, dtype,
               tie_values: Optional[jnp.ndarray] = None):
    """`tie_values`, if given, are summed over each tie group in the same scatter (`tie_sum`)."""
    self._dtype, self._valid = dtype, valid
    self._size = scores.shape[-1] + 1
    lower = (scores[..., None, :] < scores[..., :, None]).astype(dtype)
    self.below = jnp.round(rowdot(lower, valid.astype(dtype))).astype(jnp.int32)  # L_i
    channels = [jnp.ones_like(scores, dtype)]
    if tie_values is not None:
      channels.append(tie_values.astype(dtype))
    tied = jnp.take_along_axis(self._buckets(jnp.stack(channels, -1)), self.below[..., None],
                               axis=-2)
    self.group = jnp.maximum(jnp.round(tied[..., 0]).astype(jnp.int32), 1)  # g_i (>= 1)
    self.at_or_below = self.below + self.group  # U_i = L_i + g_i
    self.tie_sum = tied[..., 1] if tie_values is not None else None  # sum over i's tie group

  def _buckets(self, values: jnp.ndarray) -> jnp.ndarray:
    """`[..., M + 1, C]`: bucket l holds the sums of `values` `[..., M, C]` over valid samples
    with L_j = l. Samples tied with i are exactly the valid ones in bucket L_i."""
    values = jnp.where(self._valid[..., None], values, 0.0)
    flat_index = self.below.reshape(-1, self.below.shape[-1])
    rows = jnp.arange(flat_index.shape[0])[:, None]
    buckets = jnp.zeros((flat_index.shape[0], self._size, values.shape[-1]), self._dtype)
    buckets = buckets.at[rows, flat_index].add(values.reshape(flat_index.shape + values.shape[-1:]))
    return buckets.reshape(self.below.shape[:-1] + buckets.shape[-2:])

  def sum_below(self, values: jnp.ndarray) -> jnp.ndarray:
    """sum of `values` over valid samples j with s_j < s_i (buckets l < L_i)."""
    inclusive = jnp.cumsum(self._buckets(values[..., None])[..., 0], axis=-1)
    exclusive = jnp.concatenate([jnp.zeros_like(inclusive[..., :1]), inclusive[..., :-1]], -1)
    return jnp.take_along_axis(exclusive, self.below, axis=-1)

  def sum_above(self, values: jnp.ndarray) -> jnp.ndarray:
    """sum of `values` over valid samples j with s_j > s_i (buckets l >= U_i)."""
    from_top = jnp.cumsum(self._buckets(values[..., None])[..., ::-1, 0], axis=-1)[..., ::-1]
    return jnp.take_along_axis(from_top, self.at_or_below, axis=-1)  # U_i <= m <= M


def valid_count(valid: jnp.ndarray) -> jnp.ndarray:
  """m: number of valid samples per row (int32, `[...]`)."""
  return jnp.sum(valid.astype(jnp.int32), axis=-1)
