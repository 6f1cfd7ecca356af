"""Per-sample policy-gradient weights for Best-of-N training (docs/bon_math.md §5).

Every function maps per-prompt groups `[batch, M]` to weights `w` `[batch, M]` on the scale convention
of docs/bon_math.md §5: for each prompt, `sum_i w_i grad log pi(y_i)` estimates the gradient of that
prompt's objective (unbiased unless stated). Feed them to `policy_gradient_loss`, which stops their
gradient.

Masks: a masked sample gets weight 0 and the others are computed as if it had never been drawn, with M
replaced by the row's valid count m. Rows with too few valid samples for the estimator get weight 0.
Inputs may be any real dtype; the math runs in float32 (float64 if given float64 under x64).
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp

from bonjax.objectives import _checks
from bonjax.objectives import _combinatorics as comb

Array = jnp.ndarray


def _prepare(primary, primary_name: str, mask, **others):
  primary = _checks.group_array(primary, primary_name)
  others = {k: (None if v is None else jnp.asarray(v)) for k, v in others.items()}
  _checks.same_shape(primary_name, primary, **others)
  valid = _checks.group_mask(mask, primary.shape)
  return primary, valid, others


@jax.jit
def rloo_weights(rewards: Array, *, mask: Optional[Array] = None) -> Array:
  """REINFORCE with a leave-one-out baseline (RLOO; docs/bon_math.md §5.1).

      w_i = (R_i - mean_{j != i} R_j) / m

  Unbiased for the gradient of E_pi[R]. With a single valid sample the baseline is 0 (REINFORCE).

  Args:
    rewards: `[batch, M]` rewards R.
    mask: optional `[batch, M]` bool, False for padded samples.

  Returns:
    `[batch, M]` weights.
  """
  rewards, valid, _ = _prepare(rewards, "rewards", mask)
  dtype = _checks.compute_dtype(rewards)
  r = jnp.where(valid, rewards.astype(dtype), 0.0)
  m = jnp.sum(valid, axis=-1, keepdims=True).astype(dtype)
  baseline = (jnp.sum(r, axis=-1, keepdims=True) - r) / jnp.maximum(m - 1.0, 1.0)
  return jnp.where(valid, (r - baseline) / jnp.maximum(m, 1.0), 0.0)


@functools.partial(jax.jit, static_argnames=('scale_by_std', 'eps'))
def grpo_weights(rewards: Array, scale_by_std: bool = True, *, eps: float = 1e-6,
                 mask: Optional[Array] = None) -> Array:
  """GRPO-style group-normalized advantages, on the docs/bon_math.md §5 scale.

      w_i = (R_i - mean_j R_j) / (std_j R_j + eps) / m      (std division only if scale_by_std)

  Not unbiased: the group mean includes R_i, which shrinks the RLOO gradient by (m - 1) / m, and the
  std division rescales each prompt. Offered as a baseline (docs/bon_math.md §5.1).

  Args:
    rewards: `[batch, M]` rewards.
    scale_by_std: divide by the group's standard deviation (population std over valid samples).
    eps: added to the std, so that all-equal groups get weight 0 instead of 0/0.
    mask: optional `[batch, M]` bool.
  """
  rewards, valid, _ = _prepare(rewards, "rewards", mask)
  dtype = _checks.compute_dtype(rewards)
  r = jnp.where(valid, rewards.astype(dtype), 0.0)
  m = jnp.maximum(jnp.sum(valid, axis=-1, keepdims=True).astype(dtype), 1.0)
  mean = jnp.sum(r, axis=-1, keepdims=True) / m
  centered = jnp.where(valid, r - mean, 0.0)
  if scale_by_std:
    std = jnp.sqrt(jnp.sum(centered**2, axis=-1, keepdims=True) / m)
    centered = centered / (std + eps)
  return centered / m


@functools.partial(jax.jit, static_argnames=('n', 'baseline'))
def bon_rl_weights(scores: Array, rewards: Array, n: int, baseline: str = "loo", *,
                   mask: Optional[Array] = None) -> Array:
  """Unbiased BoN-RL weights for the Best-of-n objective J_n (docs/bon_math.md §5.2).

  For a subset S of n samples let f(S) be the reward R of the verifier's argmax of S (ties: the mean R
  over the tied maxima, i.e. uniform tie-breaking). Then

      w_i = (1 / C(m, n)) * sum_{|S| = n, S ∋ i} [f(S) - b_i(S)]

  with b_i(S) = f(S \\ {i}) for baseline='loo' and b_i = 0 for 'none'. Both are exactly unbiased for
  grad J_n, J_n = E_{y ~ pi_bon}[R(y)]. With n = 1, 'loo' is RLOO (b_i = mean of the other rewards)
  and 'none' is REINFORCE (w_i = R_i / m). BoN-RL-V passes `rewards=scores`; BoN-RL-S passes
  environment rewards with verifier scores; with s = R and binary R this is PKPO's pass@n estimator.

  Closed form, never enumerating subsets (per prompt: one O(M^2) comparison matmul, the rest O(M)).
  With L_i / g_i / U_i = L_i + g_i the counts of valid samples scoring below / equal to / at most
  s_i, T_i the sum of R over i's tie group, and every C(., .) divided by C(m, n),

      w_i^loo = R_i (C(U_i, n) - C(L_i, n)) / g_i
                - (T_i - R_i) (C(U_i, n) - C(L_i, n) - g_i C(L_i, n-1)) / (g_i (g_i - 1))
                - sum_{j: s_j < s_i} R_j (C(U_j, n-1) - C(L_j, n-1)) / g_j

  and 'none' adds sum_{T ⊆ others, |T| = n-1} f(T) / C(m, n), computed the same way.
  (Derivation: average the no-tie formula over uniform random strict orders of each tie group.)

  Args:
    scores: `[batch, M]` verifier scores s (selection).
    rewards: `[batch, M]` rewards R (credit); pass `scores` for BoN-RL-V.
    n: static BoN size, 1 <= n <= M.
    baseline: 'loo' (default) or 'none'.
    mask: optional `[batch, M]` bool. Rows with fewer than n valid samples get all-zero weights.

  Returns:
    `[batch, M]` weights (float32, or float64 for float64 inputs).
  """
  scores, valid, others = _prepare(scores, "scores", mask, rewards=rewards)
  rewards = others["rewards"]
  num_samples = scores.shape[-1]
  n = _checks.static_int(n, "n", low=1, high=num_samples)
  _checks.choice(baseline, "baseline", ("loo", "none"))
  dtype = _checks.compute_dtype(scores, rewards)
  if n == 1:
    if baseline == "loo":
      return rloo_weights(rewards.astype(dtype), mask=valid)
    m = jnp.sum(valid, axis=-1, keepdims=True).astype(dtype)
    return jnp.where(valid, rewards.astype(dtype), 0.0) / jnp.maximum(m, 1.0)

  scores = scores.astype(dtype)
  r = jnp.where(valid, rewards.astype(dtype), 0.0)
  ranks = comb.Ranks(scores, valid, dtype, tie_values=r)
  lo, g, hi = ranks.below, ranks.group, ranks.at_or_below
  ratio = comb.BinomRatio(comb.valid_count(valid), n, num_samples, dtype)
  g_f = g.astype(dtype)
  pairs = jnp.where(g > 1, g_f * (g_f - 1.0), 1.0)
  tie_rest = ranks.tie_sum - r  # T_i - R_i: rewards of i's tied partners

  top = ratio(hi, n) - ratio(lo, n)
  weights = r * top / g_f - tie_rest * (top - g_f * ratio(lo, n - 1)) / pairs
  if baseline == "loo":
    below_weight = (ratio(hi, n - 1) - ratio(lo, n - 1)) / g_f  # E[C(rank_j-1, n-2)] / C(m, n)
    weights = weights - ranks.sum_below(r * below_weight)
  else:
    # Add back sum_{T ⊆ others, |T| = n-1} f(T) / C(m, n): lower groups keep their ranks (that
    # term cancels the LOO one exactly), i's own group loses one member, higher groups move down one.
    above_weight = (ratio(hi - 1, n - 1) - ratio(lo - 1, n - 1)) / g_f
    weights = (weights
               + tie_rest * (ratio(hi - 1, n - 1) - ratio(lo, n - 1)) / jnp.maximum(g_f - 1.0, 1.0)
               + ranks.sum_above(r * above_weight))
  return jnp.where(valid & ratio.row_ok[..., None], weights, 0.0)


@functools.partial(jax.jit, static_argnames=('k',))
def pkpo_weights(rewards: Array, k: int, *, mask: Optional[Array] = None) -> Array:
  """PKPO (Walder & Karkhanis 2025): max@k / pass@k, "loo-1" baseline (docs/bon_math.md §5.5).

  The unbiased gradient of max@k = E[max of k samples' rewards]: per k-subset S the credit is
  max_{j in S} R_j and the baseline of i is the max over S \\ {i} (a (k-1)-subset: "loo-1"),

      w_i = (1 / C(m, k)) * sum_{|S| = k, S ∋ i} [max_S R - max_{S \\ {i}} R],

  which is `bon_rl_weights(rewards, rewards, k)` (docs/bon_math.md §5.2 with s = R). Binary rewards
  give pass@k, continuous ones max@k. With k = 1 it is RLOO. Anneal k during training if desired.

  Args:
    rewards: `[batch, M]` rewards (binary or continuous).
    k: static subset size, 1 <= k <= M.
    mask: optional `[batch, M]` bool.
  """
  return bon_rl_weights(rewards, rewards, k, "loo", mask=mask)


@functools.partial(jax.jit, static_argnames=('n', 'variant', 'clip', 'eps'))
def bon_rlb_weights(correct: Array, n: int, variant: str = "exact", p_fail: Optional[Array] = None,
                    clip: Optional[float] = None, *, eps: float = 1e-6,
                    mask: Optional[Array] = None) -> Array:
  """BoN-RLB / BoN-RLB(P): the paper's closed-form binary-reward weights (docs/bon_math.md §5.3).

  The weight sits on the BoN pick: with a binary oracle the pick of n samples is a correct one if there
  is one (uniform among them), else a uniform incorrect one, so it is distributed as pi_bon. With
  M > n the pick is averaged over all n-subsets, which in closed form (c = valid correct, m = valid):

      P(i is the pick) = (1 - C(m-c, n) / C(m, n)) / c        if i is correct
                       = C(m-c, n) / C(m, n) / (m - c)        if i is incorrect

  and w_i = P(i is the pick) * g(i), with p = p_fail and J = 1 - p^n:

  - 'exact':         g+ = n p^(n-1) / (1 - p^n) on correct, +g- = n p / (1 - p) on incorrect;
  - 'paper_minus':   g+ on correct, -g- on incorrect: expectation (1 + p) / (1 - p) * grad J;
  - 'positive_only': gbar+ = n p^(n-1) (1 - p) / (1 - p^n) on correct, 0 on incorrect (BoN-RLB(P)).

  With the true p_fail, 'exact' and 'positive_only' are unbiased for grad J. The default plug-in
  p = (m - c) / m is consistent, not unbiased; with it, rows with no correct sample get weight 0
  (nothing to imitate, and g- would be infinite). p is clamped to [eps, 1 - eps] and 1 - p^n is
  computed as -expm1(n log p).

  Args:
    correct: `[batch, M]` binary rewards (bool or 0/1).
    n: static BoN size, 1 <= n <= M.
    variant: 'exact', 'paper_minus' or 'positive_only'.
    p_fail: optional `[batch]` true failure probabilities; default: the plug-in estimate.
    clip: optional upper bound on the g factors (tames g+ as p -> 1, at the price of bias).
    eps: clamp for p.
    mask: optional `[batch, M]` bool. Rows with fewer than n valid samples get weight 0.
  """
  correct, valid, _ = _prepare(correct, "correct", mask)
  num_samples = correct.shape[-1]
  n = _checks.static_int(n, "n", low=1, high=num_samples)
  _checks.choice(variant, "variant", ("exact", "paper_minus", "positive_only"))
  dtype = _checks.compute_dtype(correct) if p_fail is None else _checks.compute_dtype(
      correct, jnp.asarray(p_fail))
  is_correct = valid & (correct.astype(dtype) > 0.5)
  m = comb.valid_count(valid)
  c = jnp.sum(is_correct.astype(jnp.int32), axis=-1)
  if p_fail is None:
    p = (m - c).astype(dtype) / jnp.maximum(m, 1).astype(dtype)
    row_has_signal = c > 0
  else:
    p = jnp.asarray(p_fail, dtype=dtype)
    if p.shape != correct.shape[:-1]:
      raise ValueError(f"p_fail must have shape {correct.shape[:-1]} (one value per prompt); "
                       f"got {p.shape}.")
    row_has_signal = jnp.ones(p.shape, dtype=bool)
  p = jnp.clip(p, eps, 1.0 - eps)
  one_minus_pn = -jnp.expm1(n * jnp.log(p))
  g_plus = n * p ** (n - 1) / one_minus_pn
  g_minus = n * p / (1.0 - p)
  if variant == "positive_only":
    g_plus, g_minus = g_plus * (1.0 - p), jnp.zeros_like(p)
  elif variant == "paper_minus":
    g_minus = -g_minus
  if clip is not None:
    g_plus = jnp.minimum(g_plus, clip)
    g_minus = jnp.clip(g_minus, -clip, clip)

  ratio = comb.BinomRatio(m, n, num_samples, dtype)
  p_pick_incorrect = ratio.per_row(m - c, n)  # an n-subset holds no correct sample
  pick_correct = (1.0 - p_pick_incorrect) / jnp.maximum(c, 1).astype(dtype)
  pick_incorrect = p_pick_incorrect / jnp.maximum(m - c, 1).astype(dtype)
  weights = jnp.where(is_correct, (pick_correct * g_plus)[..., None],
                      (pick_incorrect * g_minus)[..., None])
  keep = valid & (ratio.row_ok & row_has_signal)[..., None]
  return jnp.where(keep, weights, 0.0)
