"""The train steps: SFT learns, and the policy-gradient step follows sum_i w_i grad log pi(y_i)."""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bonjax import models
from bonjax.train import logprobs, steps

CONFIG = models.get_config('tiny')
MODEL = models.Transformer(CONFIG)


def _params():
  return nn.unbox(MODEL.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))['params'])


def test_sft_step_fits_a_repeated_batch():
  tokens = jax.random.randint(jax.random.key(1), (4, 9), 4, CONFIG.vocab_size)
  batch = {'inputs': tokens[:, :-1], 'targets': tokens[:, 1:],
           'positions': jnp.broadcast_to(jnp.arange(8), (4, 8)),
           'input_mask': jnp.ones((4, 8), bool),
           'loss_mask': jnp.ones((4, 8), jnp.float32).at[:, :2].set(0.0)}
  tx = optax.adam(1e-2)
  state = steps.TrainState.create(_params(), tx)
  step = jax.jit(functools.partial(steps.sft_step, MODEL, tx))
  state, first = step(state, batch)
  for _ in range(30):
    state, metrics = step(state, batch)
  assert int(state.step) == 31
  # Starts near log(V) per token (fresh logits have unit variance) and memorizes the batch.
  assert float(first['loss']) < np.log(CONFIG.vocab_size) + 2.0
  assert float(metrics['loss']) < 0.2 * float(first['loss'])


def test_policy_gradient_step_uses_weighted_log_prob_gradients():
  params = _params()
  rng = np.random.default_rng(0)
  batch = {'prompts': jnp.asarray(rng.integers(4, CONFIG.vocab_size, (2, 5)), jnp.int32),
           'prompt_lengths': jnp.array([5, 3], jnp.int32),
           'tokens': jnp.asarray(rng.integers(4, CONFIG.vocab_size, (2, 3, 4)), jnp.int32),
           'lengths': jnp.array([[4, 2, 3], [1, 4, 4]], jnp.int32),
           'weights': jnp.array([[0.5, -0.25, 0.0], [1.0, 0.0, -1.0]], jnp.float32)}
  # Plain SGD with lr 1: the update is minus the gradient of the surrogate loss.
  tx = optax.sgd(1.0)
  state = steps.TrainState.create(params, tx)
  new_state, metrics = steps.policy_gradient_step(MODEL, tx, state, batch)
  update = jax.tree.map(lambda new, old: new - old, new_state.params, params)

  def objective(p):  # mean over prompts of sum_i w_i log pi(y_i)
    lp = logprobs.completion_logprobs(MODEL, p, batch['prompts'], batch['prompt_lengths'],
                                      batch['tokens'], completion_lengths=batch['lengths'])
    return jnp.mean(jnp.sum(batch['weights'] * lp.sum(-1), axis=-1))

  chex.assert_trees_all_close(update, jax.grad(objective)(params), atol=1e-5, rtol=1e-4)
  assert np.isfinite(float(metrics['loss']))
