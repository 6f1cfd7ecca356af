"""Unbiased k-sample metrics from M >= k samples per prompt (docs/bon_math.md §4).

Each metric is the average over all C(m, k) k-subsets of the m valid samples of a prompt, evaluated in
closed form. `k` is a static int (returns `[batch]`) or a sequence of ints (returns `[batch, len(k)]`).
Rows with fewer than k valid samples have no unbiased estimate and return NaN.
"""

from __future__ import annotations

import functools
import inspect
from typing import Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from bonjax.objectives import _checks
from bonjax.objectives import _combinatorics as comb

Array = jnp.ndarray
Ks = Union[int, Sequence[int]]


def _per_k(ks: Ks, num_samples: int, metric) -> Array:
  values, is_sequence = _checks.static_ints(ks, "k", low=1, high=num_samples)
  out = [metric(k) for k in values]
  return jnp.stack(out, axis=-1) if is_sequence else out[0]


def _jit_with_static_k(fn):
  """jax.jit with `k` static; a list of ks becomes a (hashable) tuple first."""
  jitted = jax.jit(fn, static_argnames=("k",))
  signature = inspect.signature(fn)

  @functools.wraps(fn)
  def wrapper(*args, **kwargs):
    bound = signature.bind(*args, **kwargs)
    if isinstance(bound.arguments["k"], (list, np.ndarray)):
      bound.arguments["k"] = tuple(np.asarray(bound.arguments["k"]).ravel().tolist())
    return jitted(*bound.args, **bound.kwargs)

  return wrapper


@_jit_with_static_k
def pass_at_k(correct: Array, k: Ks, *, mask: Optional[Array] = None) -> Array:
  """pass@k (Chen et al. 2021): P(any of k samples is correct), unbiased (docs/bon_math.md §4).

      pass@k = 1 - C(m - c, k) / C(m, k),    c = number of correct valid samples

  evaluated as exp(log C(m-c, k) - log C(m, k)) from a log-binomial table (stable for m = 256).

  Args:
    correct: `[batch, M]` bool or 0/1.
    k: static int or sequence of ints in [1, M].
    mask: optional `[batch, M]` bool.

  Returns:
    `[batch]` (or `[batch, len(k)]`).
  """
  correct = _checks.group_array(correct, "correct")
  valid = _checks.group_mask(mask, correct.shape)
  dtype = jnp.float32 if correct.dtype == bool else _checks.compute_dtype(correct)
  num_samples = correct.shape[-1]
  m = comb.valid_count(valid)
  c = jnp.sum((valid & (correct.astype(dtype) > 0.5)).astype(jnp.int32), axis=-1)

  def metric(k):
    ratio = comb.BinomRatio(m, k, num_samples, dtype)
    return jnp.where(ratio.row_ok, 1.0 - ratio.per_row(m - c, k), jnp.nan)

  return _per_k(k, num_samples, metric)


@_jit_with_static_k
def bon_at_k(scores: Array, rewards: Array, k: Ks, *, mask: Optional[Array] = None) -> Array:
  """BoN@k: expected reward of the verifier's pick among k samples, unbiased (docs/bon_math.md §4).

  Sorting by score, the sample of rank j is the pick of C(j-1, k-1) of the C(m, k) subsets. With ties
  broken uniformly a sample's rank is uniform over its tie group (L below it, g tied, U = L + g):

      BoN@k = sum_i R_i (C(U_i, k) - C(L_i, k)) / g_i / C(m, k).

  With an oracle verifier (s = R binary) this is pass@k; with s = R it is max@k. O(M^2) per prompt.

  Args:
    scores: `[batch, M]` verifier scores.
    rewards: `[batch, M]` rewards of the samples.
    k: static int or sequence of ints in [1, M].
    mask: optional `[batch, M]` bool.

  Returns:
    `[batch]` (or `[batch, len(k)]`).
  """
  scores = _checks.group_array(scores, "scores")
  rewards = jnp.asarray(rewards)
  _checks.same_shape("scores", scores, rewards=rewards)
  valid = _checks.group_mask(mask, scores.shape)
  dtype = _checks.compute_dtype(scores, rewards)
  num_samples = scores.shape[-1]
  r = jnp.where(valid, rewards.astype(dtype), 0.0)
  ranks = comb.Ranks(scores.astype(dtype), valid, dtype)
  group = ranks.group.astype(dtype)
  m = comb.valid_count(valid)

  def metric(k):
    ratio = comb.BinomRatio(m, k, num_samples, dtype)
    pick = (ratio(ranks.at_or_below, k) - ratio(ranks.below, k)) / group
    return jnp.where(ratio.row_ok, jnp.sum(r * pick, axis=-1), jnp.nan)

  return _per_k(k, num_samples, metric)


@_jit_with_static_k
def max_at_k(rewards: Array, k: Ks, *, mask: Optional[Array] = None) -> Array:
  """max@k: expected best reward among k samples, unbiased; BoN@k with s = R (docs/bon_math.md §4).

  Args:
    rewards: `[batch, M]` rewards.
    k: static int or sequence of ints in [1, M].
    mask: optional `[batch, M]` bool.
  """
  return bon_at_k(rewards, rewards, k, mask=mask)


@_jit_with_static_k
def majority_at_k(answer_ids: Array, correct: Array, k: Ks, *,
                  mask: Optional[Array] = None) -> Array:
  """Majority-vote@k: P(the most frequent answer of k samples is correct) (docs/bon_math.md §4).

  Samples vote with their `answer_ids`; ties between answers are broken uniformly. An answer's
  correctness is the mean of `correct` over its samples (they normally agree). For answer class a with
  c_a samples, the probability that it wins a uniform k-subset is

      P_a = sum_v C(c_a, v) ∫_0^1 [x^(k-v)] prod_{b != a} (sum_{j<v} C(c_b, j) x^j
                                                           + y C(c_b, v) x^v) dy / C(m, k):

  the other answers take fewer than v votes, or exactly v (a tie, tagged by y: ∫ y^t dy = 1/(t+1) is
  the uniform tie-break among t+1 tied answers). The y-integral is Gauss-Legendre (exact), products
  of polynomials are pointwise at M+1 roots of unity, and binomials are rescaled to binomial pmfs so
  nothing overflows. Cost O(k^2 M^2) per prompt: meant for evaluation, not inner training loops.

  Args:
    answer_ids: `[batch, M]` integer answer identifiers (equal ids vote together).
    correct: `[batch, M]` bool or 0/1 correctness of each sample's answer.
    k: static int or sequence of ints in [1, M].
    mask: optional `[batch, M]` bool.

  Returns:
    `[batch]` (or `[batch, len(k)]`).
  """
  answer_ids = _checks.group_array(answer_ids, "answer_ids")
  correct = jnp.asarray(correct)
  _checks.same_shape("answer_ids", answer_ids, correct=correct)
  if not jnp.issubdtype(answer_ids.dtype, jnp.integer):
    raise TypeError(f"answer_ids must be integers (one id per distinct answer); "
                    f"got dtype {answer_ids.dtype}.")
  valid = _checks.group_mask(mask, answer_ids.shape)
  dtype = jnp.float32 if correct.dtype == bool else _checks.compute_dtype(correct)
  num_samples = answer_ids.shape[-1]

  same = (answer_ids[..., None, :] == answer_ids[..., :, None]) & valid[..., None, :]
  same = same & valid[..., :, None]
  earlier = jnp.tril(jnp.ones((num_samples, num_samples), bool), -1)
  is_first = valid & ~jnp.any(same & earlier, axis=-1)  # one slot per answer class
  class_size = jnp.where(is_first, jnp.sum(same, axis=-1), 0)
  class_correct = comb.rowdot(same.astype(dtype), correct.astype(dtype)) / jnp.maximum(
      class_size, 1).astype(dtype)
  m = comb.valid_count(valid)

  def metric(k):
    win = _majority_win_probs(class_size, m, k, num_samples, dtype)
    value = jnp.clip(jnp.sum(jnp.where(is_first, win * class_correct, 0.0), axis=-1), 0.0, 1.0)
    return jnp.where(m >= k, value, jnp.nan)

  return _per_k(k, num_samples, metric)


def _majority_win_probs(class_size: Array, m: Array, k: int, num_samples: int, dtype) -> Array:
  """P(class a wins the vote of a uniform k-subset), `[..., M]` (one slot per class)."""
  complex_dtype = jnp.complex128 if dtype == jnp.float64 else jnp.complex64
  num_points = num_samples + 1  # the product over classes b != a has degree <= M
  exponents = np.arange(num_points)
  powers = jnp.asarray(np.exp(2j * np.pi * np.outer(exponents, exponents) / num_points),
                       complex_dtype)  # powers[j, p] = w_p^j, w_p the roots of unity
  nodes, node_weights = np.polynomial.legendre.leggauss(max(1, (k + 1) // 2))
  nodes = jnp.asarray((nodes + 1.0) / 2.0, dtype)
  node_weights = jnp.asarray(node_weights / 2.0, dtype)

  # pmf[..., b, j] = C(c_b, j) theta^j (1 - theta)^(c_b - j): binomials rescaled so every
  # polynomial below has coefficients in [0, 1]; theta near k/m keeps the final pmf(k) large.
  theta = ((k - 0.5) / jnp.maximum(m, 1).astype(dtype))[..., None, None]
  size = class_size[..., None].astype(dtype)
  j = jnp.arange(num_samples + 1, dtype=dtype)
  log_pmf = (jax.lax.lgamma(size + 1.0) - jax.lax.lgamma(j + 1.0)
             - jax.lax.lgamma(jnp.maximum(size - j, 0.0) + 1.0)
             + j * jnp.log(theta) + (size - j) * jnp.log1p(-theta))
  pmf = jnp.where(j <= size, jnp.exp(log_pmf), 0.0)  # [..., M (classes), M + 1 (votes)]

  def step(below_v, v):
    # below_v[..., b, p] = sum_{j<v} pmf_b(j) w_p^j; the tie term y pmf_b(v) w_p^v is added per node.
    pmf_v = jnp.take(pmf, v, axis=-1)[..., None]
    at_v = pmf_v * powers[v]
    poly = below_v[..., None, :, :] + nodes[:, None, None] * at_v[..., None, :, :]  # [..., Q, M, P]
    ones = jnp.ones_like(poly[..., :1, :])
    prefix = jnp.cumprod(jnp.concatenate([ones, poly[..., :-1, :]], axis=-2), axis=-2)
    suffix = jnp.cumprod(jnp.concatenate([ones, poly[..., :0:-1, :]], axis=-2), axis=-2)
    others = prefix * suffix[..., ::-1, :]  # prod over classes b != a, at each root
    coefficient = jnp.mean(others * powers[(num_points - (k - v)) % num_points], axis=-1).real
    win_v = pmf_v[..., 0] * jnp.einsum("q,...qa->...a", node_weights, coefficient)
    return below_v + at_v, win_v

  below_1 = jnp.broadcast_to(pmf[..., :1], class_size.shape + (1,)) * powers[0]
  _, wins = jax.lax.scan(step, below_1, jnp.arange(1, k + 1))
  log_total = (comb.log_binom(m, k, num_samples, dtype) + k * jnp.log(theta[..., 0, 0])
               + (m - k) * jnp.log1p(-theta[..., 0, 0]))  # pmf of Bin(m, theta) at k
  return jnp.sum(wins, axis=0) / jnp.exp(log_total)[..., None]
