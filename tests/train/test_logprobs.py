"""completion_logprobs scores each completion exactly as an unpadded forward pass would."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bonjax import models
from bonjax.train import logprobs

CONFIG = models.get_config('tiny')


def _model_and_params():
  model = models.Transformer(CONFIG)
  params = nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))['params'])
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

  got = logprobs.completion_logprobs(model, params, jnp.asarray(prompts),
                                     jnp.asarray(prompt_lengths), jnp.asarray(completions),
                                     completion_lengths=jnp.asarray(completion_lengths),
                                     temperature=temperature)
  chex.assert_shape(got, (2, 3, 4))

  for b in range(2):
    for j in range(3):
      p, c = prompt_lengths[b], completion_lengths[b, j]
      sequence = np.concatenate([prompts[b, :p], completions[b, j]])[None]
      logits = model.apply({'params': params}, jnp.asarray(sequence))[0] / temperature
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
