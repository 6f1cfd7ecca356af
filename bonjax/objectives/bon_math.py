"""The Best-of-N policy and its variational relaxation (docs/bon_math.md §2-§3)."""

from __future__ import annotations

import functools
from typing import Optional, Union

import jax
import jax.numpy as jnp

from bonjax.objectives import _checks
from bonjax.objectives import _combinatorics as comb

Array = jnp.ndarray


def _geometric_sum(a: Array, b: Array, n: int) -> Array:
  """(a^n - b^n) / (a - b) = sum_{j<n} a^j b^(n-1-j): no 0/0 when a == b, smooth for jax.grad."""
  ones = jnp.ones(a.shape + (1,), a.dtype)
  a_pows = jnp.cumprod(jnp.concatenate([ones, jnp.repeat(a[..., None], n - 1, -1)], -1), -1)
  b_pows = jnp.cumprod(jnp.concatenate([ones, jnp.repeat(b[..., None], n - 1, -1)], -1), -1)
  return jnp.sum(a_pows * b_pows[..., ::-1], axis=-1)


@functools.partial(jax.jit, static_argnames=('n',))
def bon_probs(probs: Array, scores: Array, n: int, *, mask: Optional[Array] = None) -> Array:
  """The exact Best-of-n distribution of a categorical policy (docs/bon_math.md §2).

  BoN draws n samples from pi and returns the verifier's argmax, ties broken uniformly:

      pi_bon(y) = pi(y) (F_le(s)^n - F_lt(s)^n) / (F_le(s) - F_lt(s)),   s = r(y),

  F_le(s) = P_pi(r <= s), F_lt(s) = P_pi(r < s). The ratio is evaluated as the polynomial
  sum_{j<n} F_le^j F_lt^(n-1-j), so it is exact at ties and differentiable in `probs` (the tests take
  jax.grad of sum_y pi_bon(y) R(y), the objective J_n). Cost O(K^2 + K n) per row.

  Args:
    probs: `[batch, K]` probabilities of the K responses (rows sum to 1).
    scores: `[batch, K]` verifier scores r(y).
    n: static BoN size, n >= 1.
    mask: optional `[batch, K]` bool; masked responses leave the support (probs renormalized).

  Returns:
    `[batch, K]` BoN probabilities.
  """
  probs = _checks.group_array(probs, "probs")
  scores = jnp.asarray(scores)
  _checks.same_shape("probs", probs, scores=scores)
  valid = _checks.group_mask(mask, probs.shape)
  n = _checks.static_int(n, "n", low=1)
  dtype = _checks.compute_dtype(probs)
  p = jnp.where(valid, probs.astype(dtype), 0.0)
  if mask is not None:
    p = p / jnp.sum(p, axis=-1, keepdims=True)
  scores = scores.astype(_checks.compute_dtype(scores))
  lower = (scores[..., None, :] < scores[..., :, None]).astype(dtype)
  equal = (scores[..., None, :] == scores[..., :, None]).astype(dtype)
  f_lt = comb.rowdot(lower, p)
  f_le = f_lt + comb.rowdot(equal, p)
  return p * _geometric_sum(f_le, f_lt, n)


def _uniform_tilt_kl(lam: Array) -> Array:
  """KL(pi_lam || Uniform[0, 1]) for the density ∝ exp(lam u) on [0, 1] (docs/bon_math.md §3)."""
  small = jnp.abs(lam) < 1e-2
  safe = jnp.where(small, 1.0, lam)
  # E[u] = 1/(1 - e^-l) - 1/l;  log Z = l + log(1 - e^-l) - log l.
  mean_u = 1.0 / (-jnp.expm1(-safe)) - 1.0 / safe
  log_z = safe + jnp.log(-jnp.expm1(-safe)) - jnp.log(safe)
  return jnp.where(small, lam**2 / 24.0, safe * mean_u - log_z)  # series: l^2 Var(u) / 2


@jax.jit
def lambda_n(n: Union[int, Array]) -> Array:
  """The variational BoN temperature lam_N (docs/bon_math.md §3; our choice, not the paper's).

  Solves KL(pi_lam || pi) = log N - (N - 1) / N for pi_lam ∝ pi exp(lam Q) with Q ~ Uniform[0, 1],
  i.e. the tilt whose KL matches the BoN bound of §2. lam_1 = 0, lam_2 = 2.289, lam_4 = 4.917,
  lam_8 = 9.055, lam_16 = 17.032, lam_32 = 33.016, about N + 1 for large N. Jittable and elementwise:
  `n` may be a traced array (bisection with a fixed 64 steps). Callers may override lam anywhere it is
  used.

  Args:
    n: BoN size(s) >= 1, int or array.

  Returns:
    float32 array of n's shape.
  """
  n = jnp.asarray(n, dtype=jnp.float32)
  target = jnp.log(n) - (n - 1.0) / n

  def step(_, bounds):
    lo, hi = bounds
    mid = 0.5 * (lo + hi)
    too_small = _uniform_tilt_kl(mid) < target
    return jnp.where(too_small, mid, lo), jnp.where(too_small, hi, mid)

  lo, hi = jax.lax.fori_loop(0, 64, step, (jnp.zeros_like(n), 2.0 * n + 8.0))
  return jnp.where(n <= 1.0, 0.0, 0.5 * (lo + hi))


@jax.jit
def win_rate(scores: Array, *, mask: Optional[Array] = None) -> Array:
  """Empirical win rate Q of each sample against the others of its prompt (docs/bon_math.md §1).

      Q_i = #{j != i valid : s_j <= s_i} / (m - 1)

  an unbiased estimate of Q(x, y_i) = F_le(r(y_i)) given y_i. Ties count as wins (F_le). A row with a
  single valid sample has nothing to compare against and gets Q = 1; masked samples get 0.

  Args:
    scores: `[batch, M]` verifier scores.
    mask: optional `[batch, M]` bool.

  Returns:
    `[batch, M]` win rates in [0, 1].
  """
  scores = _checks.group_array(scores, "scores")
  valid = _checks.group_mask(mask, scores.shape)
  dtype = _checks.compute_dtype(scores)
  ranks = comb.Ranks(scores.astype(dtype), valid, dtype)
  others = (comb.valid_count(valid) - 1)[..., None]
  q = (ranks.at_or_below - 1).astype(dtype) / jnp.maximum(others, 1).astype(dtype)
  return jnp.where(valid, jnp.where(others > 0, q, 1.0), 0.0)
