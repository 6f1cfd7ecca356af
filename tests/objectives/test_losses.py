"""Tests for bonjax/objectives/losses.py: gradients of the surrogates, BoN-SFT bias, DCO numerics."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bonjax import objectives as bo


def _token_batch(seed=0, batch=2, samples=3, length=5):
  rng = np.random.RandomState(seed)
  logprobs = jnp.asarray(-rng.rand(batch, samples, length), jnp.float32)
  mask = jnp.asarray(rng.rand(batch, samples, length) < 0.8)
  weights = jnp.asarray(rng.randn(batch, samples), jnp.float32)
  return logprobs, mask, weights


def test_policy_gradient_loss_gradient_is_the_weighted_score():
  """d loss / d token_logprob = -w / batch on valid tokens; the weights get no gradient."""
  logprobs, mask, weights = _token_batch()
  grad_lp, grad_w = jax.grad(bo.policy_gradient_loss, argnums=(0, 2))(logprobs, mask, weights)
  chex.assert_trees_all_close(grad_lp, jnp.where(mask, -weights[..., None] / 2, 0.0))
  chex.assert_trees_all_close(grad_w, jnp.zeros_like(weights))
  per_token = bo.policy_gradient_loss(logprobs, mask, weights, reduce="token")
  mean_length = mask.sum(-1).mean()
  chex.assert_trees_all_close(per_token * mean_length,
                              bo.policy_gradient_loss(logprobs, mask, weights), rtol=1e-5)


def test_policy_gradient_loss_ppo_clip_and_kl():
  logprobs, mask, weights = _token_batch(seed=1)
  on_policy = jax.grad(bo.policy_gradient_loss)(logprobs, mask, weights)
  same_old = jax.grad(lambda lp: bo.policy_gradient_loss(lp, mask, weights, old_logprobs=lp,
                                                         clip_eps=0.2))(logprobs)
  chex.assert_trees_all_close(same_old, on_policy, atol=1e-6)  # ratio 1: the on-policy gradient
  # Ratio 2 > 1 + eps with positive weights: clipped, so no gradient; negative weights keep theirs.
  clipped = jax.grad(lambda lp: bo.policy_gradient_loss(
      lp, mask, weights, old_logprobs=logprobs - jnp.log(2.0), clip_eps=0.2))(logprobs)
  np.testing.assert_array_equal(np.asarray(clipped)[np.asarray(weights) > 0], 0.0)
  assert np.abs(np.asarray(clipped)[np.asarray(weights) < 0]).max() > 0
  kl = lambda lp, ref: bo.policy_gradient_loss(lp, mask, jnp.zeros_like(weights), ref_logprobs=ref,
                                               kl_coef=1.0)
  assert float(kl(logprobs, logprobs)) == pytest.approx(0.0, abs=1e-7)
  assert float(kl(logprobs, logprobs - 0.5)) > 0.0
  # The KL gradient pulls log pi toward the reference.
  assert np.all(np.asarray(jax.grad(kl)(logprobs, logprobs - 0.5))[np.asarray(mask)] > 0)


def test_sft_loss():
  logprobs = jnp.array([[-1.0, -2.0, -3.0], [-0.5, -0.5, -9.0]])
  mask = jnp.array([[True, True, True], [True, True, False]])
  assert float(bo.sft_loss(logprobs, mask)) == pytest.approx((6.0 + 1.0) / 2)
  assert float(bo.sft_loss(logprobs, mask, reduce="token")) == pytest.approx(3.5 / 2.5)
  assert bo.sft_loss(logprobs.astype(jnp.bfloat16), mask).dtype == jnp.float32


def _expected_bon_sft_gradient(logits, scores, star, n, num_samples, form, enum):
  """E over all K^M sample tuples of the BoN-SFT gradient estimate (minus the loss gradient)."""
  tuples = enum.all_tuples(len(logits), num_samples)
  row_probs = enum.tuple_probs(np.asarray(jax.nn.softmax(logits)), tuples)
  # The surrogate is linear in the log-probs with stop-gradient coefficients that depend on the
  # scores only, so scaling row t's log-probs by T * P(t) turns the batch mean into E[.].
  scale = jnp.asarray(row_probs * len(tuples))

  def loss(theta):
    lp = jax.nn.log_softmax(theta)
    return bo.bon_sft_loss(jnp.full(len(tuples), lp[star]) * scale, lp[tuples] * scale[:, None],
                           jnp.full(len(tuples), scores[star]), jnp.asarray(scores[tuples]), n,
                           form)

  return -np.asarray(jax.grad(loss)(jnp.asarray(logits)))


def _exact_bon_sft_gradient(logits, scores, star, n, form):
  if form == "exact":  # grad log pi_bon(y*) (docs/bon_math.md §5.4)
    objective = lambda t: jnp.log(bo.bon_probs(jax.nn.softmax(t), jnp.asarray(scores), n)[star])
  else:  # grad [log pi(y*) + lam Q(y*) - log E_pi exp(lam Q)], Q = F_le(r(.)) under pi
    lam = bo.lambda_n(n)

    def objective(t):
      pi = jax.nn.softmax(t)
      q = (jnp.asarray(scores)[None, :] <= jnp.asarray(scores)[:, None]).astype(pi.dtype) @ pi
      return jnp.log(pi[star]) + lam * q[star] - jnp.log(jnp.sum(pi * jnp.exp(lam * q)))
  return np.asarray(jax.grad(objective)(jnp.asarray(logits)))


@pytest.mark.slow
@pytest.mark.parametrize("form", ["exact", "variational"])
def test_bon_sft_bias_shrinks_with_m(form, x64, enum, star=1):
  """Plug-in BoN-SFT is consistent, not unbiased (docs/bon_math.md §5.4): bias falls as M grows."""
  logits, scores, n = np.array([0.2, -0.3, 0.1]), np.array([0.0, 1.0, 2.0]), 4
  exact = _exact_bon_sft_gradient(logits, scores, star, n, form)
  biases = [np.linalg.norm(_expected_bon_sft_gradient(logits, scores, star, n, m, form, enum)
                           - exact) for m in (2, 3, 5)]
  assert all(later < earlier for earlier, later in zip(biases, biases[1:])), biases
  assert biases[-1] < 0.8 * biases[0], biases


def test_bon_sft_n1_is_sft_and_inputs_are_checked():
  rng = np.random.RandomState(2)
  expert_lp, sample_lp = jnp.asarray(-rng.rand(3)), jnp.asarray(-rng.rand(3, 4))
  expert_s, sample_s = jnp.asarray(rng.rand(3)), jnp.asarray(rng.rand(3, 4))
  grad = jax.grad(bo.bon_sft_loss, argnums=(0, 1))(expert_lp, sample_lp, expert_s, sample_s, 1,
                                                   "exact")
  chex.assert_trees_all_close(grad[0], -jnp.ones(3) / 3)
  chex.assert_trees_all_close(grad[1], jnp.zeros((3, 4)))  # n = 1: pi_bon = pi
  for form in ("exact", "variational"):
    value = bo.bon_sft_loss(expert_lp, sample_lp.astype(jnp.bfloat16), expert_s + 10.0, sample_s,
                            64, form, mask=jnp.broadcast_to(jnp.arange(4) < 2, (3, 4)))
    assert value.dtype == jnp.float32 and np.isfinite(value)  # expert beats every sample
  with pytest.raises(ValueError):
    bo.bon_sft_loss(expert_lp[:2], sample_lp, expert_s, sample_s, 2)
  with pytest.raises(ValueError):
    bo.bon_sft_loss(expert_lp, sample_lp, expert_s, sample_s, 2, form="tilted")
  with pytest.raises(ValueError):
    bo.bon_sft_loss(expert_lp, sample_lp, expert_s, sample_s[:, :3], 2)


def test_dco_loss_values_gradients_and_extremes():
  lp = jnp.array([-0.05, -0.7, -2.0, -8.0])
  naive = lambda x, n: -jnp.mean(jnp.log(1 - (1 - jnp.exp(x)) ** n))
  for n in (1, 2, 8):
    assert float(bo.dco_loss(lp, n)) == pytest.approx(float(naive(lp, n)), rel=1e-5)
    chex.assert_trees_all_close(jax.grad(bo.dco_loss)(lp, n), jax.grad(naive)(lp, n), rtol=1e-4)
  extremes = jnp.array([0.0, -1e-6, -40.0, -500.0])
  for n in (1, 4):
    value, grad = jax.value_and_grad(bo.dco_loss)(extremes, n)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
  assert float(bo.dco_loss(jnp.array([-500.0]), 4)) == pytest.approx(500.0 - np.log(4), rel=1e-6)
  with pytest.raises(ValueError):
    bo.dco_loss(lp, 0)


@pytest.mark.parametrize("kwargs", [
    dict(reduce="mean"), dict(clip_eps=0.2), dict(kl_coef=0.1)])
def test_policy_gradient_loss_bad_options(kwargs):
  logprobs, mask, weights = _token_batch()
  with pytest.raises(ValueError):
    bo.policy_gradient_loss(logprobs, mask, weights, **kwargs)
  with pytest.raises(ValueError):
    bo.policy_gradient_loss(logprobs, mask, weights[:, :2])
