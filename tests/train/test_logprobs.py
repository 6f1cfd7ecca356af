"""completion_logprobs scores each completion exactly as an unpadded forward pass would."""

import dataclasses

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import pytest

from bonjax import models, sampling
from bonjax.train import logprobs

CONFIG = models.get_config('tiny')


def _model_and_params():
  model = models.Transformer(CONFIG)
  init = jax.jit(model.init)
  params = nn.unbox(init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))['params'])
  return model, params


def test_completion_logprobs_match_unpadded_forward_per_sample():
  model, params = _model_and_params()
  rng = np.random.default_rng(0)
  prompt_lengths = np.array([3, 5])
  prompts = np.zeros((2, 6), np.int32)
  for b, length in enumerate(prompt_lengths):
    prompts[b, :length] = rng.integers(4, CONFIG.vocab_size, length)
  completions = rng.integers(4, CONFIG.vocab_size, (2, 3, 4)).astype(np.int32)
  completion_lengths = np.array([[4, 2, 1], [3, 4, 0]], np.int32)
  temperature = 0.7

  got = jax.jit(lambda p: logprobs.completion_logprobs(
      model, p, jnp.asarray(prompts), jnp.asarray(prompt_lengths), jnp.asarray(completions),
      completion_lengths=jnp.asarray(completion_lengths),
      sampler=sampling.Temperature(temperature)))(params)
  chex.assert_shape(got, (2, 3, 4))

  forward = jax.jit(model.apply)  # eager, each of the six lengths would dispatch op by op
  for b in range(2):
    for j in range(3):
      p, c = prompt_lengths[b], completion_lengths[b, j]
      sequence = np.concatenate([prompts[b, :p], completions[b, j]])[None]
      logits = forward({'params': params}, jnp.asarray(sequence))[0] / temperature
      log_probs = jax.nn.log_softmax(logits, axis=-1)
      expected = [log_probs[p - 1 + t, completions[b, j, t]] if t < c else 0.0 for t in range(4)]
      np.testing.assert_allclose(got[b, j], expected, atol=1e-5, rtol=1e-5)


def test_token_logprobs_of_a_full_sequence():
  model, params = _model_and_params()
  tokens = jax.random.randint(jax.random.key(1), (2, 7), 0, CONFIG.vocab_size)
  got = logprobs.token_logprobs(model, params, tokens[:, :-1], tokens[:, 1:])
  log_probs = jax.nn.log_softmax(model.apply({'params': params}, tokens[:, :-1]), axis=-1)
  expected = jnp.take_along_axis(log_probs, tokens[:, 1:, None], axis=-1)[..., 0]
  chex.assert_trees_all_close(got, expected, atol=1e-6)


def test_filtered_samplers_are_differentiated_as_sampled():
  """With top-k the policy is the filtered, renormalised law: log pi = sampler.log_probs."""
  model, params = _model_and_params()
  sampler = sampling.TopK(k=5, temperature=0.8)
  prompts = jnp.array([[1, 7, 9, 0]], jnp.int32)
  samples = sampling.generate(model, params, prompts, jnp.array([3]), num_samples=3,
                              max_new_tokens=5, rng=jax.random.key(0), sampler=sampler, eos_id=2,
                              pad_id=0)

  def completion_logprobs(p):
    return logprobs.completion_logprobs(model, p, prompts, jnp.array([3]), samples.tokens,
                                        completion_lengths=samples.lengths, sampler=sampler)

  got = jax.jit(completion_logprobs)(params)
  # The sampler recorded each token's log-probability under the law it drew from.
  chex.assert_trees_all_close(got, samples.logprobs, atol=2e-5)
  grads = jax.jit(jax.grad(lambda p: completion_logprobs(p).sum()))(params)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_greedy_sampler_cannot_be_differentiated():
  model, params = _model_and_params()
  with pytest.raises(ValueError, match='Greedy'):
    logprobs.completion_logprobs(model, params, jnp.ones((1, 2), jnp.int32), jnp.array([2]),
                                 jnp.ones((1, 1, 2), jnp.int32), sampler=sampling.Greedy())


@pytest.mark.parametrize('length', [1, 4])
def test_shared_prompt_equals_repeated_prompt_in_value_and_gradient(length):
  """Each prompt run once as its completions' shared prefix: the same log-probs and gradients."""
  model, params = _model_and_params()
  rng = np.random.default_rng(1)
  prompt_lengths = np.array([2, 6, 4])
  prompts = np.zeros((3, 6), np.int32)
  for b, n in enumerate(prompt_lengths):
    prompts[b, :n] = rng.integers(4, CONFIG.vocab_size, n)
  completions = jnp.asarray(rng.integers(4, CONFIG.vocab_size, (3, 2, length)), jnp.int32)
  completion_lengths = jnp.asarray(rng.integers(0, length + 1, (3, 2)), jnp.int32)
  sampler = sampling.TopP(p=0.9, temperature=jnp.array([0.7, 1.0, 1.3]))
  weights = jnp.asarray(rng.normal(size=(3, 2, length)), jnp.float32)

  def loss(p, share_prompt):
    lp = logprobs.completion_logprobs(
        model, p, jnp.asarray(prompts), jnp.asarray(prompt_lengths), completions,
        completion_lengths=completion_lengths, sampler=sampler, share_prompt=share_prompt)
    return jnp.sum(weights * lp), lp

  grad = jax.jit(jax.grad(loss, has_aux=True), static_argnums=1)
  (shared_grads, shared), (repeated_grads, repeated) = grad(params, True), grad(params, False)
  chex.assert_trees_all_close(shared, repeated, atol=1e-5)
  chex.assert_trees_all_close(shared_grads, repeated_grads, atol=1e-5)


# Two periods of one layer; two periods of a local / global pair (Gemma 2's pattern).
@pytest.mark.parametrize('changes', [
    dict(), dict(num_layers=4, attention_types=('local', 'global'), sliding_window=2)])
def test_a_scanning_model_shares_the_prompt_in_its_scan(changes):
  """A remat model scans its layers in both cached forwards: the values and gradients of the
  unrolled layers, and of the repeated prompt."""
  config = dataclasses.replace(CONFIG, remat=True, **changes)
  model = models.Transformer(config)
  assert model.scans and config.num_layers == 2 * len(config.attention_types)
  init = jax.jit(model.init)
  params = nn.unbox(init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))['params'])
  prompts = jnp.array([[5, 6, 7, 0], [9, 4, 0, 0]], jnp.int32)
  completions = jnp.array([[[8, 9, 3], [10, 11, 4]], [[5, 5, 5], [6, 7, 8]]], jnp.int32)

  def loss(p, model, share_prompt):
    lp = logprobs.completion_logprobs(model, p, prompts, jnp.array([3, 2]), completions,
                                      completion_lengths=jnp.array([[3, 2], [1, 3]]),
                                      share_prompt=share_prompt)
    return jnp.sum(lp * jnp.arange(1.0, 4.0)), lp

  grad = jax.jit(jax.grad(loss, has_aux=True), static_argnums=(1, 2))
  assert 'scan' in str(jax.make_jaxpr(lambda p: loss(p, model, True))(params))
  scanned_grads, scanned = grad(params, model, True)
  for other in (models.Transformer(config, scan_layers=False), model):
    grads, values = grad(params, other, other is not model)
    chex.assert_trees_all_close(scanned, values, atol=1e-5)
    chex.assert_trees_all_close(scanned_grads, grads, atol=1e-5)
