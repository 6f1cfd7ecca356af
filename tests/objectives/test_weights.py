"""Tests for bonjax/objectives/weights.py: exactness by enumeration, numerics, masks, training."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bonjax import objectives as bo

# (K, M, scores, rewards): categorical policies over K responses, M samples per prompt.
CASES = {
    "continuous_oracle": (3, 4, [0.2, 0.9, 0.5], [0.2, 0.9, 0.5]),
    "continuous_verifier_ties": (4, 4, [1.0, 1.0, 0.0, 2.0], [0.3, 0.8, 0.1, 0.4]),
    "binary_oracle": (5, 3, [1, 0, 0, 1, 0], [1, 0, 0, 1, 0]),
    "binary_verifier_ties": (6, 3, [2, 2, 1, 3, 0, 3], [1, 0, 1, 0, 0, 1]),
    "all_scores_tied": (3, 5, [1.0, 1.0, 1.0], [0.0, 1.0, 0.5]),
}


def _logits(num_responses, seed=0):
  return np.random.RandomState(seed).randn(num_responses)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("baseline", ["loo", "none"])
def test_bon_rl_weights_are_unbiased_for_every_n(case, baseline, x64, enum):
  """E[sum_i w_i grad log pi(y_i)] = grad J_n exactly (docs/bon_math.md §5.2), for n = 1..M."""
  num_responses, num_samples, scores, rewards = CASES[case]
  scores, rewards = np.asarray(scores, np.float64), np.asarray(rewards, np.float64)
  logits = _logits(num_responses)
  probs = np.asarray(jax.nn.softmax(logits))
  tuples = enum.all_tuples(num_responses, num_samples)
  for n in range(1, num_samples + 1):
    w = bo.bon_rl_weights(scores[tuples], rewards[tuples], n, baseline)
    estimate = enum.expected_score_gradient(probs, tuples, w)
    exact = enum.exact_bon_gradient(logits, scores, rewards, n)
    np.testing.assert_allclose(estimate, exact, atol=1e-6, err_msg=f"n={n}")
    assert np.abs(exact).max() > 1e-3 or case == "all_scores_tied"  # a gradient worth matching


@pytest.mark.parametrize("case", ["binary_oracle", "continuous_oracle", "binary_verifier_ties"])
def test_pkpo_and_rloo_are_unbiased(case, x64, enum):
  """PKPO: grad of max@k (pass@k for binary R); RLOO: grad of E[R] (docs/bon_math.md §5.1, §5.5)."""
  num_responses, num_samples, _, rewards = CASES[case]
  rewards = np.asarray(rewards, np.float64)
  logits = _logits(num_responses, seed=1)
  probs = np.asarray(jax.nn.softmax(logits))
  tuples = enum.all_tuples(num_responses, num_samples)
  for k in range(1, num_samples + 1):
    estimate = enum.expected_score_gradient(probs, tuples, bo.pkpo_weights(rewards[tuples], k))
    np.testing.assert_allclose(estimate, enum.exact_bon_gradient(logits, rewards, rewards, k),
                               atol=1e-6, err_msg=f"k={k}")
  estimate = enum.expected_score_gradient(probs, tuples, bo.rloo_weights(rewards[tuples]))
  np.testing.assert_allclose(estimate, enum.exact_bon_gradient(logits, rewards, rewards, 1),
                             atol=1e-6)
  # GRPO's group mean includes R_i: (M - 1) / M times the RLOO gradient without std scaling.
  grpo = bo.grpo_weights(rewards[tuples], scale_by_std=False)
  np.testing.assert_allclose(enum.expected_score_gradient(probs, tuples, grpo),
                             (num_samples - 1) / num_samples * estimate, atol=1e-9)


def _p_fail(probs, correct):
  return float(np.sum(np.asarray(probs) * (1 - np.asarray(correct))))


@pytest.mark.parametrize("variant,factor", [
    ("exact", lambda p: 1.0), ("positive_only", lambda p: 1.0),
    ("paper_minus", lambda p: (1 + p) / (1 - p))])
def test_bon_rlb_weights_with_true_p_fail(variant, factor, x64, enum):
  """§5.3: 'exact' and 'positive_only' average to grad(1 - p^n); 'paper_minus' to (1+p)/(1-p) x."""
  correct = np.array([1.0, 0.0, 0.0, 1.0])
  logits = _logits(4, seed=2)
  probs = np.asarray(jax.nn.softmax(logits))
  p = _p_fail(probs, correct)
  grad_pass = np.asarray(jax.grad(
      lambda t: 1.0 - jnp.sum(jax.nn.softmax(t) * (1 - correct)) ** 1)(jnp.asarray(logits)))
  for num_samples in (3, 4):
    tuples = enum.all_tuples(4, num_samples)
    for n in range(1, num_samples + 1):
      exact = grad_pass * n * p ** (n - 1)  # grad(1 - p^n) = n p^(n-1) grad(1 - p)
      np.testing.assert_allclose(exact, enum.exact_bon_gradient(logits, correct, correct, n),
                                 atol=1e-12)
      w = bo.bon_rlb_weights(correct[tuples], n, variant, p_fail=np.full(len(tuples), p))
      estimate = enum.expected_score_gradient(probs, tuples, w)
      np.testing.assert_allclose(estimate, factor(p) * exact, atol=1e-6, err_msg=f"n={n}")


def _plug_in_bias(variant, num_samples, n=2, logits=(-0.5, 0.3)):
  """|E[estimate] - grad(1 - p^n)| for a policy over one correct and one incorrect response.

  The estimator is exchangeable, so the K^M tuples collapse to M + 1 classes by their number of
  correct samples c, each with probability C(M, c) pi_+^c pi_-^(M-c): exact, and cheap at M = 256.
  """
  from scipy.special import comb  # scipy ships with jax

  probs = np.asarray(jax.nn.softmax(jnp.asarray(logits, jnp.float64)))
  counts = np.arange(num_samples + 1)
  correct = (np.arange(num_samples)[None, :] < counts[:, None]).astype(np.float64)
  w = np.asarray(bo.bon_rlb_weights(correct, n, variant))
  onehot = np.stack([correct, 1 - correct], -1)
  per_class = np.einsum("cm,cmk->ck", w, onehot - probs)
  class_probs = comb(num_samples, counts) * probs[0] ** counts * probs[1] ** (num_samples - counts)
  p = probs[1]
  exact = n * p ** (n - 1) * p * probs[0] * np.array([1.0, -1.0])  # -n p^(n-1) grad p
  return np.abs(class_probs @ per_class - exact).max()


@pytest.mark.parametrize("variant,sizes", [
    ("positive_only", (4, 8, 16, 32)),
    # 'exact' puts g- = n p/(1-p) on negatives: with p = (m-c)/m it blows up at c = 1, so its bias
    # rises first (up to M ~ 8 here) and only then falls like 1/M.
    ("exact", (16, 32, 64, 256))])
def test_bon_rlb_plug_in_bias_shrinks_with_m(variant, sizes, x64):
  """The plug-in p_fail is consistent, not unbiased: the bias falls as M grows."""
  biases = [_plug_in_bias(variant, m) for m in sizes]
  assert biases[0] > 1e-3, biases
  assert all(later < earlier for earlier, later in zip(biases, biases[1:])), biases
  assert biases[-1] < 0.15 * biases[0], biases


def test_bon_rl_reduces_to_reinforce_and_rloo_at_n1():
  rng = np.random.RandomState(3)
  scores, rewards = rng.randn(4, 6), rng.rand(4, 6)
  chex.assert_trees_all_close(bo.bon_rl_weights(scores, rewards, 1), bo.rloo_weights(rewards))
  chex.assert_trees_all_close(bo.bon_rl_weights(scores, rewards, 1, "none"), rewards / 6.0)
  chex.assert_trees_all_close(bo.pkpo_weights(rewards, 1), bo.rloo_weights(rewards))


def test_all_equal_scores_give_rloo_for_every_n():
  """All samples tied: the pick is uniform, f(S) is a mean, so the LOO weights are RLOO's."""
  rewards = np.random.RandomState(4).rand(3, 5)
  for n in range(1, 6):
    w = bo.bon_rl_weights(np.zeros((3, 5)), rewards, n)
    chex.assert_trees_all_close(w, bo.rloo_weights(rewards), atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("n", [8, 256])
def test_large_m_is_finite_and_matches_float64_and_identities(n):
  """M = 256 with ties: f32 equals f64; sum_i w^none = n BoN@n, sum_i w^loo = n (BoN@n - BoN@n-1)."""
  rng = np.random.RandomState(5)
  scores = rng.randint(0, 40, (2, 256)).astype(np.float32)
  rewards = rng.rand(2, 256).astype(np.float32)
  for baseline in ("loo", "none"):
    w32 = bo.bon_rl_weights(scores, rewards, n, baseline)
    assert w32.dtype == jnp.float32 and np.all(np.isfinite(w32))
    with jax.enable_x64(True):
      w64 = np.asarray(bo.bon_rl_weights(scores.astype(np.float64), rewards.astype(np.float64), n,
                                         baseline))
      bon_n = np.asarray(bo.bon_at_k(scores.astype(np.float64), rewards.astype(np.float64), n))
      bon_prev = (np.asarray(bo.bon_at_k(scores.astype(np.float64), rewards.astype(np.float64),
                                         n - 1)) if n > 1 else np.zeros(2))
    np.testing.assert_allclose(w32, w64, atol=2e-5 * max(1.0, np.abs(w64).max()))
    expected_sum = n * bon_n if baseline == "none" else (n * (bon_n - bon_prev) if n > 1 else 0)
    np.testing.assert_allclose(w64.sum(-1), expected_sum, atol=1e-9)


def test_rlb_is_finite_for_p_in_0_and_1_and_degenerate_rows():
  correct = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 0, 0]], np.float32)
  both = np.concatenate([correct, correct])
  p_fail = np.array([0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.5])
  for variant in ("exact", "paper_minus", "positive_only"):
    for n in (1, 4):
      assert np.all(np.isfinite(bo.bon_rlb_weights(both, n, variant, p_fail=p_fail))), (variant, n)
      plug_in = bo.bon_rlb_weights(correct, n, variant)
      assert np.all(np.isfinite(plug_in))
      np.testing.assert_array_equal(plug_in[2], 0.0)  # no correct sample: nothing to learn from
  clipped = bo.bon_rlb_weights(both, 2, "exact", p_fail=p_fail, clip=10.0)
  assert np.abs(clipped).max() <= 10.0
  # M == n: the weight sits on the pick only (uniform among the correct samples).
  w = bo.bon_rlb_weights(correct, 4, "positive_only", p_fail=np.full(4, 0.5))
  np.testing.assert_allclose(w[0], [0.5 * 4 * 0.125 * 0.5 / (1 - 0.5**4)] * 2 + [0.0, 0.0],
                             rtol=1e-6)


def test_bf16_inputs_compute_in_float32(dtype=jnp.bfloat16):
  rng = np.random.RandomState(6)
  scores = jnp.asarray(rng.randint(0, 5, (4, 16)), dtype)
  rewards = jnp.asarray(rng.rand(4, 16), dtype)
  for fn in (lambda s, r: bo.bon_rl_weights(s, r, 4), lambda s, r: bo.rloo_weights(r),
             lambda s, r: bo.grpo_weights(r), lambda s, r: bo.pkpo_weights(r, 3),
             lambda s, r: bo.bon_rlb_weights(r > 0.5, 3)):
    low = fn(scores, rewards)
    assert low.dtype == jnp.float32
    chex.assert_trees_all_close(low, fn(scores.astype(jnp.float32), rewards.astype(jnp.float32)))


WEIGHT_FNS = {
    "rloo": lambda s, r, mask=None: bo.rloo_weights(r, mask=mask),
    "grpo": lambda s, r, mask=None: bo.grpo_weights(r, mask=mask),
    "bon_rl_loo": lambda s, r, mask=None: bo.bon_rl_weights(s, r, 3, mask=mask),
    "bon_rl_none": lambda s, r, mask=None: bo.bon_rl_weights(s, r, 3, "none", mask=mask),
    "pkpo": lambda s, r, mask=None: bo.pkpo_weights(r, 3, mask=mask),
    "bon_rlb": lambda s, r, mask=None: bo.bon_rlb_weights(r > 0.5, 3, mask=mask),
}


@pytest.mark.parametrize("name", sorted(WEIGHT_FNS))
def test_masked_samples_behave_as_if_not_drawn(name):
  fn = WEIGHT_FNS[name]
  rng = np.random.RandomState(7)
  scores = rng.randint(0, 4, (6, 8)).astype(np.float32)
  rewards = rng.randint(0, 2, (6, 8)).astype(np.float32)
  mask = np.stack([rng.permutation(8) < 5 for _ in range(6)])  # 5 valid of 8 (one shape to trace)
  mask[0] = True
  mask[1] = np.arange(8) < 2  # 2 valid samples < n = 3: an all-zero row for the BoN estimators
  w = np.asarray(fn(scores, rewards, mask))
  np.testing.assert_array_equal(w[~mask], 0.0)
  for row in range(6):
    kept = mask[row]
    if kept.sum() < 3 and name not in ("rloo", "grpo"):
      np.testing.assert_array_equal(w[row], 0.0)
      continue
    alone = np.asarray(fn(scores[row][kept][None], rewards[row][kept][None]))[0]
    np.testing.assert_allclose(w[row][kept], alone, atol=1e-6, err_msg=f"row {row}")


def test_weights_jit_and_vmap():
  rng = np.random.RandomState(8)
  scores, rewards = rng.randn(3, 5, 7), rng.rand(3, 5, 7)
  jitted = jax.jit(bo.bon_rl_weights, static_argnames=("n", "baseline"))
  eager = bo.bon_rl_weights(scores, rewards, 4)
  chex.assert_trees_all_close(jitted(scores, rewards, n=4), eager, atol=1e-6)
  per_row = jax.vmap(jax.vmap(functools.partial(bo.bon_rl_weights, n=4)))(scores, rewards)
  chex.assert_trees_all_close(per_row, eager, atol=1e-6)


@pytest.mark.parametrize("call,error", [
    (lambda s, r: bo.bon_rl_weights(s, r, 5), ValueError),  # n > M
    (lambda s, r: bo.bon_rl_weights(s, r, 0), ValueError),  # n < 1
    (lambda s, r: bo.bon_rl_weights(s, r, 2.0), TypeError),  # n must be a static int
    (lambda s, r: bo.bon_rl_weights(s, r[:, :3], 2), ValueError),  # mismatched shapes
    (lambda s, r: bo.bon_rl_weights(s, r, 2, baseline="mean"), ValueError),
    (lambda s, r: bo.bon_rl_weights(s, r, 2, mask=r[:, :3] > 0), ValueError),
    (lambda s, r: bo.pkpo_weights(r, 5), ValueError),  # k > M
    (lambda s, r: bo.bon_rlb_weights(r, 5), ValueError),
    (lambda s, r: bo.bon_rlb_weights(r, 2, variant="minus"), ValueError),
    (lambda s, r: bo.bon_rlb_weights(r, 2, p_fail=jnp.zeros(3)), ValueError),
])
def test_bad_input_raises_when_traced(call, error):
  scores, rewards = jnp.zeros((2, 4)), jnp.ones((2, 4))
  with pytest.raises(error):
    jax.jit(call)(scores, rewards)


# The optimization bandit: a tabular softmax over two arms. "safe" always pays 0.6; "risky" pays 1
# with probability 0.3 and 0 otherwise, and the verifier is the oracle (s = R). One sample: safe is
# best (0.6 > 0.3). Best-of-4: a risky draw that pays 1 is picked whenever any of the 4 hits, so
# J_4(q) = 1 - (1 - 0.3q)^4 + 0.6 [(1 - 0.3q)^4 - (0.7q)^4] for q = pi(risky), maximized inside
# (0, 1) near q = 0.73. BoN-aware training must find that mix; RLOO must collapse onto "safe".
WIN_PROB, SAFE_REWARD, BON_N = 0.3, 0.6, 4


def _bandit_objective(q, n):
  """J_n via the exact BoN policy over the three outcomes (safe, risky-win, risky-loss)."""
  probs = jnp.stack([1 - q, WIN_PROB * q, (1 - WIN_PROB) * q], -1)
  rewards = jnp.broadcast_to(jnp.array([SAFE_REWARD, 1.0, 0.0]), probs.shape)
  return jnp.sum(bo.bon_probs(probs, rewards, n) * rewards, -1)


def _train_bandit(weight_fn, steps=300, prompts=64, samples=8):
  optimizer = optax.adam(optax.cosine_decay_schedule(0.1, steps, alpha=0.05))

  def step(carry, key):
    logits, opt_state = carry
    arm_key, win_key = jax.random.split(key)
    arms = jax.random.categorical(arm_key, logits, shape=(prompts, samples))  # 0 safe, 1 risky
    wins = jax.random.bernoulli(win_key, WIN_PROB, (prompts, samples))
    rewards = jnp.where(arms == 0, SAFE_REWARD, wins.astype(jnp.float32))
    weights = weight_fn(rewards)

    def loss(theta):
      logprobs = jax.nn.log_softmax(theta)[arms]  # [prompts, samples]: one "token" each
      return bo.policy_gradient_loss(logprobs[..., None], jnp.ones_like(logprobs[..., None], bool),
                                     weights)

    updates, opt_state = optimizer.update(jax.grad(loss)(logits), opt_state)
    return (optax.apply_updates(logits, updates), opt_state), None

  logits = jnp.zeros(2)
  keys = jax.random.split(jax.random.PRNGKey(0), steps)
  (logits, _), _ = jax.jit(lambda c, k: jax.lax.scan(step, c, k))((logits, optimizer.init(logits)),
                                                                    keys)
  return float(jax.nn.softmax(logits)[1])


@pytest.mark.slow
def test_training_converges_to_the_bon_optimum_not_the_single_sample_one():
  grid = jnp.linspace(0.0, 1.0, 2001)
  q_star = float(grid[jnp.argmax(_bandit_objective(grid, BON_N))])
  assert 0.6 < q_star < 0.85
  assert float(_bandit_objective(q_star, BON_N)) > float(_bandit_objective(0.0, BON_N)) + 0.15

  q_bon = _train_bandit(lambda r: bo.bon_rl_weights(r, r, BON_N))
  q_rloo = _train_bandit(bo.rloo_weights)
  print(f"trained pi(risky): BoN-RL {q_bon:.3f} (optimum {q_star:.3f}), RLOO {q_rloo:.3f}")
  assert abs(q_bon - q_star) < 0.05, (q_bon, q_star)
  assert q_rloo < 0.03, q_rloo
