"""Tests of bonjax/sampling/samplers.py on raw logits (no model)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bonjax.sampling import samplers
from bonjax.sampling.samplers import Greedy, MinP, Temperature, TopK, TopP, ValidTokens

VOCAB = 32
DRAWS = 512


def _logits(batch=3, seed=0):
  return 2.0 * jax.random.normal(jax.random.key(seed), (batch, VOCAB))


@jax.jit
def _sample(sampler, keys, logits):
  return sampler.sample(keys, logits)


def _draw_many(sampler, logits):
  """DRAWS independent tokens for each row of logits [B, V] -> tokens [B, DRAWS]."""
  batch = logits.shape[0]
  keys = jax.random.split(jax.random.key(1), batch * DRAWS).reshape(batch, DRAWS)
  wide = jnp.broadcast_to(logits[:, None], (batch, DRAWS, VOCAB))
  tokens, logprobs = _sample(sampler, keys, wide)
  return np.asarray(tokens), np.asarray(logprobs)


def _reference_allowed(sampler, logits):
  """The allowed token set of each row, computed independently with numpy: bool [B, V]."""
  temperature = np.broadcast_to(np.asarray(sampler.temperature, np.float64), logits.shape[:1])
  scaled = np.asarray(logits, np.float64) / temperature[:, None]
  probs = np.exp(scaled - scaled.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  if isinstance(sampler, TopK):
    kth = np.sort(scaled, axis=-1)[:, -sampler.k][:, None]
    return scaled >= kth
  if isinstance(sampler, TopP):
    p = np.broadcast_to(np.asarray(sampler.p, np.float64), logits.shape[:1])
    allowed = np.zeros(probs.shape, bool)
    for row, order in enumerate(np.argsort(-probs, axis=-1)):
      mass = 0.0
      for token in order:
        if mass >= p[row] + 1e-6:
          break
        allowed[row, token] = True
        mass += probs[row, token]
    return allowed
  if isinstance(sampler, MinP):
    min_p = np.broadcast_to(np.asarray(sampler.min_p, np.float64), logits.shape[:1])
    return probs >= min_p[:, None] * probs.max(-1, keepdims=True) * (1 - 1e-6)
  raise TypeError(type(sampler))


@pytest.mark.parametrize('sampler', [
    TopK(k=3), TopK(k=1, temperature=2.0), TopP(p=0.5), TopP(p=0.8, temperature=0.7),
    MinP(min_p=0.2), MinP(min_p=0.05, temperature=1.5),
    TopP(p=jnp.array([0.3, 0.6, 0.9])), MinP(min_p=0.1, temperature=jnp.array([0.5, 1.0, 2.0])),
], ids=repr)
def test_filters_never_emit_a_token_outside_the_allowed_set(sampler):
  logits = _logits()
  allowed = _reference_allowed(sampler, logits)
  tokens, logprobs = _draw_many(sampler, logits)
  for row in range(logits.shape[0]):
    assert allowed[row, tokens[row]].all(), (row, sorted(set(tokens[row])), allowed[row])
  assert np.isfinite(logprobs).all()
  # The filtered distribution puts no mass outside the set and is normalised.
  log_probs = np.asarray(sampler.log_probs(logits))
  assert np.all(np.isneginf(log_probs[~allowed]))
  np.testing.assert_allclose(np.exp(log_probs).sum(-1), 1.0, rtol=1e-5)


def test_top_k_keeps_exactly_k_tokens_and_draws_them_all():
  logits = _logits()
  log_probs = TopK(k=5).log_probs(logits)
  assert (np.isfinite(np.asarray(log_probs)).sum(-1) == 5).all()
  tokens, _ = _draw_many(TopK(k=5, temperature=5.0), logits)
  assert all(len(set(row)) == 5 for row in tokens)


def test_temperature_log_probs_and_greedy_rows():
  logits = _logits()
  chex.assert_trees_all_close(Temperature(0.5).log_probs(logits),
                              jax.nn.log_softmax(logits / 0.5), atol=1e-6)
  # A per-prompt temperature equals one call per prompt; 0 means greedy.
  temperatures = jnp.array([0.5, 0.0, 2.0])
  swept = Temperature(temperatures).log_probs(logits)
  for row, t in enumerate([0.5, 0.0, 2.0]):
    chex.assert_trees_all_close(swept[row], Temperature(t).log_probs(logits[row:row + 1])[0])
  assert np.asarray(swept[1]).argmax() == np.asarray(logits[1]).argmax()
  tokens, logprobs = _draw_many(Temperature(temperatures), logits)
  assert (tokens[1] == np.asarray(logits[1]).argmax()).all()
  np.testing.assert_array_equal(logprobs[1], 0.0)


def test_greedy_is_argmax_with_zero_logprob():
  logits = _logits()
  tokens, logprobs = Greedy().sample(jax.random.split(jax.random.key(0), 3), logits)
  np.testing.assert_array_equal(tokens, np.asarray(logits).argmax(-1))
  np.testing.assert_array_equal(logprobs, 0.0)
  np.testing.assert_array_equal(Greedy().log_probs(logits), Temperature(0.0).log_probs(logits))


def test_no_filter_limits_equal_plain_temperature():
  logits = _logits()
  plain = Temperature(0.8).log_probs(logits)
  for sampler in (TopK(k=VOCAB, temperature=0.8), TopP(p=1.0, temperature=0.8),
                  MinP(min_p=0.0, temperature=0.8)):
    chex.assert_trees_all_close(sampler.log_probs(logits), plain, atol=1e-5)


def test_sampling_is_deterministic_and_rows_are_independent():
  logits = jnp.zeros((1, VOCAB))
  first, _ = _draw_many(Temperature(1.0), logits)
  second, _ = _draw_many(Temperature(1.0), logits)
  np.testing.assert_array_equal(first, second)
  # DRAWS uniform draws over VOCAB tokens: independent rows hit (nearly) every token.
  assert len(set(first[0])) > VOCAB - 3


def test_changing_parameter_values_does_not_retrace():
  traces = []

  @jax.jit
  def run(sampler, logits):
    traces.append(type(sampler))
    return sampler.log_probs(logits)

  logits = _logits()
  for sampler in (TopP(0.5), TopP(0.9, temperature=0.3), TopP(0.7, temperature=2.0)):
    run(sampler, logits)
  assert len(traces) == 1
  run(TopK(k=2), logits)
  run(TopK(k=3), logits)  # k is static: a new program.
  assert len(traces) == 3


@pytest.mark.parametrize('make, message', [
    (lambda: Temperature(-1.0), 'temperature'),
    (lambda: Temperature(np.array([1.0, -0.5])), 'temperature'),
    (lambda: TopK(k=0), 'TopK.k'),
    (lambda: TopK(k=2.5), 'TopK.k'),
    (lambda: TopP(p=0.0), 'TopP.p'),
    (lambda: TopP(p=1.5), 'TopP.p'),
    (lambda: MinP(min_p=-0.1), 'MinP.min_p'),
    (lambda: TopP(p=np.ones((2, 2))), 'scalar or a \\[batch\\]'),
])
def test_bad_parameters_raise_a_clear_error(make, message):
  with pytest.raises(ValueError, match=message):
    make()


def test_shape_mismatches_raise_a_clear_error():
  with pytest.raises(ValueError, match='exceeds the vocabulary'):
    TopK(k=VOCAB + 1).log_probs(_logits())
  with pytest.raises(ValueError, match='one value per prompt'):
    Temperature(jnp.ones(2)).log_probs(_logits(batch=3))


def test_categorical_uses_one_key_per_row():
  keys = jax.random.split(jax.random.key(3), 4)
  log_probs = jax.nn.log_softmax(_logits(batch=4))
  tokens = samplers.categorical(keys, log_probs)
  alone = [samplers.categorical(keys[i:i + 1], log_probs[i:i + 1])[0] for i in range(4)]
  np.testing.assert_array_equal(tokens, alone)
  assert len(set(np.asarray(samplers.categorical(keys, jnp.zeros((4, VOCAB)))))) > 1


def test_categorical_draws_the_exact_law_and_never_a_zero_probability_token():
  """Chi-square goodness of fit of 40,000 inverse-CDF draws, with masses from 0.3 to 1e-4 and 0."""
  draws = 40_000
  probs = np.full(VOCAB, 0.0)
  probs[[0, 3, 4, 9, 17, 31]] = [0.3, 0.25, 0.15, 0.1499, 0.15, 1e-4]  # 26 tokens of mass 0
  log_probs = jnp.broadcast_to(jnp.log(jnp.asarray(probs, jnp.float32)), (draws, VOCAB))
  tokens = np.asarray(jax.jit(samplers.categorical)(jax.random.split(jax.random.key(0), draws),
                                                    log_probs))
  counts = np.bincount(tokens, minlength=VOCAB)
  assert counts[probs == 0].sum() == 0
  common = probs * draws >= 5
  expected = np.append(probs[common], probs[~common].sum()) * draws
  observed = np.append(counts[common], counts[~common].sum())
  statistic = np.sum((observed - expected) ** 2 / expected)
  # The level of the test: it fails 1 time in 1000 by chance (deterministic given the keys).
  assert float(jax.scipy.stats.chi2.sf(statistic, df=observed.size - 1)) > 1e-3


def test_categorical_never_returns_a_token_past_the_end_of_its_mass(monkeypatch):
  """If u * total rounds up to the total, the draw falls past the last real token: not returned."""
  monkeypatch.setattr(samplers.jax.random, 'uniform', lambda key: jnp.ones((), jnp.float32))
  log_probs = jnp.log(jnp.asarray([[0.2, 0.5, 0.3, 0.0, 0.0]], jnp.float32))
  np.testing.assert_array_equal(samplers.categorical(jax.random.split(jax.random.key(0), 1),
                                                     log_probs), [1])


def test_valid_tokens_never_draws_beyond_the_vocabulary():
  logits = jnp.zeros((2, 10)).at[:, 8:].set(5.0)  # the padded ids are the likeliest
  sampler = ValidTokens(TopK(k=3, temperature=0.7), vocab_size=8)
  keys = jax.random.split(jax.random.key(0), 2000).reshape(1000, 2)
  tokens, _ = jax.vmap(sampler.sample, in_axes=(0, None))(keys, logits)
  assert int(tokens.max()) < 8
  log_probs = sampler.log_probs(logits)
  np.testing.assert_allclose(jnp.exp(log_probs).sum(-1), 1.0, rtol=1e-6)
  assert bool(jnp.all(jnp.isneginf(log_probs[:, 8:])))
