"""Surrogate losses whose gradients are BoN objectives' gradient estimates (docs/bon_math.md §5).

All losses are scalars to minimize, averaged over prompts. Per-sample weights and every other
estimated coefficient enter through `jax.lax.stop_gradient`; only log-probabilities carry gradient.
Their values are surrogates, not the objectives; log the metrics of `bonjax.objectives.metrics`.
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp

from bonjax.objectives import _checks
from bonjax.objectives import _combinatorics as comb
from bonjax.objectives.bon_math import _geometric_sum, lambda_n

Array = jnp.ndarray
_REDUCTIONS = ("sequence", "token")


def _token_normalizer(token_mask: Array, reduce: str, dtype) -> Array:
  """1 for 'sequence'; the mean number of valid tokens per sequence for 'token' (a constant)."""
  if reduce == "sequence":
    return jnp.asarray(1.0, dtype)
  lengths = jnp.sum(token_mask, axis=-1).astype(dtype)
  has_tokens = lengths > 0
  mean = jnp.sum(lengths) / jnp.maximum(jnp.sum(has_tokens), 1).astype(dtype)
  return jax.lax.stop_gradient(jnp.maximum(mean, 1.0))


@functools.partial(jax.jit, static_argnames=('reduce', 'clip_eps', 'kl_coef'))
def policy_gradient_loss(token_logprobs: Array, token_mask: Array, weights: Array, *,
                         reduce: str = "sequence", old_logprobs: Optional[Array] = None,
                         clip_eps: Optional[float] = None, ref_logprobs: Optional[Array] = None,
                         kl_coef: float = 0.0) -> Array:
  """Policy-gradient surrogate for per-sample weights (docs/bon_math.md §5).

      loss = -mean_prompts sum_i stop_gradient(w_i) sum_t mask_it log pi(y_it)

  so its gradient is minus the weights' gradient estimate. reduce='token' divides by the mean number
  of valid tokens per sequence in the batch: the same direction, with a per-token magnitude that keeps
  learning rates comparable across response lengths (unlike per-sequence length normalization, which
  would bias the estimate).

  Off-policy reuse (samples drawn by an older policy with `old_logprobs`): the per-token term becomes
  the importance ratio rho_t = exp(log pi - old) times w, PPO-clipped when `clip_eps` is set,
  min(rho_t w, clip(rho_t, 1 - eps, 1 + eps) w). At rho = 1 its gradient equals the on-policy one.
  `ref_logprobs` with `kl_coef > 0` adds kl_coef * KL(pi || ref), estimated per token with the
  non-negative k3 estimator exp(ref - lp) - (ref - lp) - 1, averaged over samples.

  Args:
    token_logprobs: `[batch, M, L]` log pi of each sampled token.
    token_mask: `[batch, M, L]` bool, True on response tokens (padded samples: all False).
    weights: `[batch, M]` per-sample weights from `bonjax.objectives.weights`.
    reduce: 'sequence' (exact scale) or 'token'.
    old_logprobs: optional `[batch, M, L]` log-probabilities of the sampling policy.
    clip_eps: optional PPO clip range (needs `old_logprobs`).
    ref_logprobs: optional `[batch, M, L]` reference-policy log-probabilities.
    kl_coef: KL penalty coefficient (needs `ref_logprobs` when nonzero).

  Returns:
    Scalar loss.
  """
  token_logprobs = jnp.asarray(token_logprobs)
  if token_logprobs.ndim < 2:
    raise ValueError("token_logprobs must have shape [batch, M, L]; "
                     f"got {tuple(token_logprobs.shape)}.")
  token_mask = jnp.asarray(token_mask)
  weights = jnp.asarray(weights)
  old_logprobs = None if old_logprobs is None else jnp.asarray(old_logprobs)
  ref_logprobs = None if ref_logprobs is None else jnp.asarray(ref_logprobs)
  _checks.same_shape("token_logprobs", token_logprobs, token_mask=token_mask,
                     old_logprobs=old_logprobs, ref_logprobs=ref_logprobs)
  if tuple(weights.shape) != tuple(token_logprobs.shape[:-1]):
    raise ValueError(f"weights must have shape {tuple(token_logprobs.shape[:-1])} "
                     f"(token_logprobs without its token axis); got {tuple(weights.shape)}.")
  _checks.choice(reduce, "reduce", _REDUCTIONS)
  if clip_eps is not None and old_logprobs is None:
    raise ValueError("clip_eps needs old_logprobs (the sampling policy's token log-probabilities).")
  if kl_coef and ref_logprobs is None:
    raise ValueError("kl_coef > 0 needs ref_logprobs (the reference policy's token log-probs).")

  dtype = _checks.compute_dtype(token_logprobs)
  lp = token_logprobs.astype(dtype)
  mask = token_mask.astype(bool)
  w = jax.lax.stop_gradient(weights.astype(dtype))[..., None]
  if old_logprobs is None:
    per_token = w * lp
  else:
    ratio = jnp.exp(lp - jax.lax.stop_gradient(old_logprobs.astype(dtype)))
    per_token = ratio * w
    if clip_eps is not None:
      per_token = jnp.minimum(per_token, jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * w)
  per_prompt = jnp.sum(jnp.where(mask, per_token, 0.0), axis=(-2, -1))
  loss = -jnp.mean(per_prompt)
  if kl_coef:
    delta = jax.lax.stop_gradient(ref_logprobs.astype(dtype)) - lp
    k3 = jnp.where(mask, jnp.exp(delta) - delta - 1.0, 0.0)
    has_tokens = jnp.any(mask, axis=-1)
    per_sample = jnp.sum(k3, axis=-1)
    per_prompt_kl = jnp.sum(per_sample, -1) / jnp.maximum(jnp.sum(has_tokens, -1), 1).astype(dtype)
    loss = loss + kl_coef * jnp.mean(per_prompt_kl)
  return loss / _token_normalizer(mask, reduce, dtype)


@functools.partial(jax.jit, static_argnames=('reduce',))
def sft_loss(token_logprobs: Array, token_mask: Array, *, reduce: str = "sequence") -> Array:
  """Supervised fine-tuning: -log pi(y* | x) = -sum_t log pi(y*_t | ...) (docs/bon_math.md §5.1).

  Args:
    token_logprobs: `[batch, L]` log pi of each target token.
    token_mask: `[batch, L]` bool, True on target tokens.
    reduce: 'sequence' (mean over sequences of the sequence NLL) or 'token' (divided by the mean
      number of target tokens per sequence).
  """
  token_logprobs = _checks.group_array(token_logprobs, "token_logprobs")
  token_mask = jnp.asarray(token_mask)
  _checks.same_shape("token_logprobs", token_logprobs, token_mask=token_mask)
  _checks.choice(reduce, "reduce", _REDUCTIONS)
  dtype = _checks.compute_dtype(token_logprobs)
  mask = token_mask.astype(bool)
  nll = -jnp.sum(jnp.where(mask, token_logprobs.astype(dtype), 0.0), axis=-1)
  return jnp.mean(nll) / _token_normalizer(mask, reduce, dtype)


@functools.partial(jax.jit, static_argnames=('n', 'form'))
def bon_sft_loss(expert_logprob: Array, sample_logprobs: Array, expert_score: Array,
                 sample_scores: Array, n: int, form: str = "variational",
                 lam: Optional[float] = None, *, mask: Optional[Array] = None) -> Array:
  """BoN-SFT: imitate expert data y* under the Best-of-n policy (docs/bon_math.md §5.4).

  The M on-policy samples y_j (log-probs `sample_logprobs`, scores s_j) estimate the policy-dependent
  parts; coefficients are plug-in estimates, so both forms are consistent, not unbiased.

  form='exact': the gradient of log pi_bon(y*) = log pi(y*) + h(F_le, F_lt),
  h(a, b) = log sum_{j<n} a^j b^(n-1-j), at s* = r(y*), using grad F(s*) = E[1{s_j <= s*} grad lp_j]:

      surrogate = lp* + h_a (1/m) sum_j 1{s_j <= s*} lp_j + h_b (1/m) sum_j 1{s_j < s*} lp_j.

  h_a, h_b are evaluated at the empirical CDF of the samples plus the expert, F_le = (1 + #{s_j <= s*})
  / (m + 1), F_lt = #{s_j < s*} / (m + 1), which keeps log pi_bon finite when y* beats every sample.

  form='variational' (the paper's view): the gradient of L = lp* + lam Q(y*) - log E_pi exp(lam Q),
  Q = F_le(r(.)) under pi, with Q_hat_i = (1/m) sum_j 1{s_j <= s_i} and self-normalized weights
  omega = softmax(lam Q_hat) for the expectation under pi_lam:

      surrogate = lp* + sum_j [lam/m 1{s_j <= s*} - omega_j - lam/m sum_i omega_i 1{s_j <= s_i}] lp_j.

  Args:
    expert_logprob: `[batch]` log pi(y* | x) (sequence log-probability).
    sample_logprobs: `[batch, M]` log pi(y_j | x) of on-policy samples.
    expert_score: `[batch]` verifier score of y*.
    sample_scores: `[batch, M]` verifier scores of the samples.
    n: static BoN size >= 1.
    form: 'variational' or 'exact'.
    lam: the variational temperature; default `lambda_n(n)` (docs/bon_math.md §3).
    mask: optional `[batch, M]` bool for padded samples.

  Returns:
    Scalar loss: minus the surrogate, averaged over prompts.
  """
  sample_logprobs = _checks.group_array(sample_logprobs, "sample_logprobs")
  sample_scores = jnp.asarray(sample_scores)
  expert_logprob, expert_score = jnp.asarray(expert_logprob), jnp.asarray(expert_score)
  _checks.same_shape("sample_logprobs", sample_logprobs, sample_scores=sample_scores)
  batch_shape = tuple(sample_logprobs.shape[:-1])
  for name, value in (("expert_logprob", expert_logprob), ("expert_score", expert_score)):
    if tuple(value.shape) != batch_shape:
      raise ValueError(f"{name} must have shape {batch_shape} (one per prompt); "
                       f"got {tuple(value.shape)}.")
  n = _checks.static_int(n, "n", low=1)
  _checks.choice(form, "form", ("variational", "exact"))
  valid = _checks.group_mask(mask, sample_logprobs.shape)
  dtype = _checks.compute_dtype(sample_logprobs, expert_logprob)
  v = valid.astype(dtype)
  m = jnp.maximum(jnp.sum(v, axis=-1, keepdims=True), 1.0)
  lp = jnp.where(valid, sample_logprobs.astype(dtype), 0.0)
  score_dtype = _checks.compute_dtype(sample_scores, expert_score)
  s = sample_scores.astype(score_dtype)
  s_star = expert_score.astype(score_dtype)[..., None]
  le_star = (s <= s_star).astype(dtype) * v  # [batch, M]

  if form == "exact":
    lt_star = (s < s_star).astype(dtype) * v
    f_le = (1.0 + jnp.sum(le_star, -1)) / (m[..., 0] + 1.0)
    f_lt = jnp.sum(lt_star, -1) / (m[..., 0] + 1.0)
    h = lambda a, b: jnp.sum(jnp.log(_geometric_sum(a, b, n)))
    h_a, h_b = jax.grad(h, argnums=(0, 1))(f_le, f_lt)
    coef = (h_a[..., None] * le_star + h_b[..., None] * lt_star) / m
  else:
    lam_value = lambda_n(n) if lam is None else jnp.asarray(lam)
    lam_value = lam_value.astype(dtype)
    at_or_below = (s[..., None, :] <= s[..., :, None]).astype(dtype)  # [i, j] = 1{s_j <= s_i}
    q_hat = comb.rowdot(at_or_below, v) / m
    omega = jax.nn.softmax(jnp.where(valid, lam_value * q_hat, -jnp.inf), axis=-1)
    omega = jnp.where(valid, omega, 0.0)
    tilted_grad_q = jnp.einsum("...i,...ij->...j", omega, at_or_below,
                               precision=jax.lax.Precision.HIGHEST)
    coef = lam_value * le_star / m - omega - lam_value * tilted_grad_q * v / m
  coef = jax.lax.stop_gradient(coef)
  surrogate = expert_logprob.astype(dtype) + jnp.sum(coef * lp, axis=-1)
  return -jnp.mean(surrogate)


@functools.partial(jax.jit, static_argnames=('n',))
def dco_loss(seq_logprob: Array, n: int) -> Array:
  """DCO (Chen et al. 2025): pass@n-aware SFT that limits confidence (docs/bon_math.md §5.5).

      loss = -log(1 - (1 - p)^n),   p = pi(y* | x) = exp(seq_logprob)

  n = 1 is SFT (-log p). Evaluated as -log1p(-exp(n log1mexp(lp))) with log1mexp split at log 2; for
  lp < -30 the asymptote -log n - lp is used, so p -> 0 and p -> 1 are finite, gradients included.

  Args:
    seq_logprob: `[batch]` (or any shape) sequence log-probabilities of the targets, <= 0.
    n: static BoN size >= 1.

  Returns:
    Scalar loss (mean over entries).
  """
  n = _checks.static_int(n, "n", low=1)
  seq_logprob = jnp.asarray(seq_logprob)
  dtype = _checks.compute_dtype(seq_logprob)
  lp = seq_logprob.astype(dtype)
  if n == 1:
    return -jnp.mean(lp)
  tiny_p = lp < -30.0
  safe = jnp.clip(jnp.where(tiny_p, -1.0, lp), None, -1e-30)
  far = safe < -0.6931472  # log1mexp: each branch gets only inputs it handles (no NaN gradients)
  log_one_minus_p = jnp.where(far, jnp.log1p(-jnp.exp(jnp.where(far, safe, -1.0))),
                              jnp.log(-jnp.expm1(jnp.where(far, -0.5, safe))))
  exact = -jnp.log1p(-jnp.exp(n * log_one_minus_p))
  return jnp.mean(jnp.where(tiny_p, -jnp.log(float(n)) - lp, exact))
