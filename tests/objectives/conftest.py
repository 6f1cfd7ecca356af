"""Shared fixtures for the objectives tests: float64 mode and exact enumeration of sample tuples.

Exactness tests (docs/bon_math.md §7) take a categorical policy over K responses, enumerate all K^M
tuples of M i.i.d. samples, and compare the expectation of an estimator with jax.grad of the exact
objective.
"""

import functools
import itertools
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest


@pytest.fixture
def x64():
  """Runs the test with 64-bit JAX arrays, restoring the previous setting afterwards."""
  with jax.enable_x64(True):
    yield


PADDED_ROWS = 256  # tuple batches are padded to a common size, so traced shapes repeat across cases


def all_tuples(num_responses: int, num_samples: int) -> np.ndarray:
  """`[max(K^M, 256), M]`: every ordered tuple of M sampled response indices, then padding rows."""
  tuples = np.array(list(itertools.product(range(num_responses), repeat=num_samples)))
  padding = max(0, PADDED_ROWS - len(tuples))
  return np.concatenate([tuples, np.repeat(tuples[:1], padding, axis=0)])


def tuple_probs(probs: np.ndarray, tuples: np.ndarray) -> np.ndarray:
  """Probability of each tuple under i.i.d. sampling from `probs` (0 on padding rows)."""
  probs = np.asarray(probs)
  row_probs = np.prod(probs[tuples], axis=-1)
  row_probs[len(probs) ** tuples.shape[1]:] = 0.0
  return row_probs


def expected_score_gradient(probs, tuples, weights) -> np.ndarray:
  """E[sum_i w_i grad_theta log softmax(theta)[y_i]] over i.i.d. tuples, for logits theta.

  For a softmax policy grad_theta log pi(y) = onehot(y) - pi, so the estimator is linear in w.
  """
  probs = np.asarray(probs, np.float64)
  onehot = np.eye(len(probs))[tuples]
  return np.einsum("t,tm,tmk->k", tuple_probs(probs, tuples), np.asarray(weights, np.float64),
                   onehot - probs)


@functools.lru_cache(maxsize=None)
def _bon_objective_grad(n: int):
  from bonjax.objectives import bon_probs

  def objective(theta, scores, rewards):
    return jnp.sum(bon_probs(jax.nn.softmax(theta), scores, n) * rewards)

  return jax.jit(jax.grad(objective))  # jitted: eager grad of the BoN polynomial is slow


def exact_bon_gradient(logits, scores, rewards, n) -> np.ndarray:
  """jax.grad of J_n(theta) = sum_y pi_bon(y) R(y) (docs/bon_math.md §2), theta = logits."""
  dtype = jnp.asarray(np.zeros(1, np.float64)).dtype  # float64 under x64, else float32
  args = [jnp.asarray(np.asarray(a, np.float64), dtype) for a in (logits, scores, rewards)]
  return np.asarray(_bon_objective_grad(n)(*args))


@pytest.fixture
def enum():
  """Enumeration helpers (a namespace, since test modules cannot import each other here)."""
  return types.SimpleNamespace(all_tuples=all_tuples, tuple_probs=tuple_probs,
                               expected_score_gradient=expected_score_gradient,
                               exact_bon_gradient=exact_bon_gradient)
