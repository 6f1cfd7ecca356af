"""Tests of bonjax/sampling/generation.py on the tiny model."""

import functools
import re

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bonjax import models, sharding
from bonjax.sampling import Greedy, Temperature, TopP, generate
from bonjax.sampling import generation

PAD = 0
# Right-padded prompts of different lengths (the padding holds junk on purpose: it must not matter).
PROMPTS = np.array([[11, 12, 13, 14, 15, 3],
                    [21, 22, 7, 7, 7, 7],
                    [31, 32, 33, 34, 9, 9]], np.int32)
LENGTHS = np.array([5, 2, 4], np.int32)
NUM_SAMPLES, MAX_NEW = 8, 8  # B * N = 24 rows: divisible by the 8 test devices.
# Tests share a few static configurations (shapes, sampler type) so that they share compilations.
TEMPERATURES = np.array([0.7, 1.0, 1.4], np.float32)  # One temperature per prompt.


def random_params(model, seed=0):
  """Random weights for `model` under which it neither copies its input nor is near-uniform.

  At init the tied embedding makes the tiny model repeat its last token; these scales give
  varied greedy continuations and next-token laws of about 3 nats of entropy.
  """
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 1), jnp.int32))
  leaves, treedef = jax.tree.flatten_with_path(nn.unbox(shapes['params']))
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  values = []
  for (path, shape), key in zip(leaves, keys):
    name = jax.tree_util.keystr(path)
    if 'scale' in name:  # RMSNorm scales (applied as 1 + scale).
      values.append(jnp.zeros(shape.shape, shape.dtype))
    else:
      std = 0.2 if 'embedding' in name else 2.0 / np.sqrt(shape.shape[0])
      values.append(std * jax.random.normal(key, shape.shape, shape.dtype))
  return jax.tree.unflatten(treedef, values)


@pytest.fixture(scope='module')
def model_and_params():
  model = models.Transformer(models.get_config('tiny'))
  return model, random_params(model)


@functools.partial(jax.jit, static_argnums=0)
def _forward(model, params, tokens, lengths):
  """Full forward (no cache) over right-padded rows -> logits [B, L, V]."""
  mask = jnp.arange(tokens.shape[1]) < lengths[:, None]
  return model.apply({'params': params}, tokens, input_mask=mask)


def _teacher_forced_logits(model, params, samples):
  """The logits that predicted each generated token, recomputed by one full forward pass."""
  batch, num_samples, max_new = samples.tokens.shape
  tokens, lengths = np.asarray(samples.tokens), np.asarray(samples.lengths)
  rows = np.full((batch, num_samples, PROMPTS.shape[1] + max_new), PAD, np.int32)
  for b in range(batch):
    rows[b, :, :LENGTHS[b]] = PROMPTS[b, :LENGTHS[b]]
    rows[b, :, LENGTHS[b]:LENGTHS[b] + max_new] = tokens[b]
  full_lengths = (LENGTHS[:, None] + lengths).reshape(-1)
  logits = np.asarray(_forward(model, params, rows.reshape(batch * num_samples, -1),
                               full_lengths)).reshape(batch, num_samples, rows.shape[-1], -1)
  # Token t of prompt b was predicted at position LENGTHS[b] - 1 + t.
  index = LENGTHS[:, None, None] - 1 + np.arange(max_new)[None, None, :]
  return np.take_along_axis(logits, index[..., None], axis=2)  # [B, N, T, V]


def _generate(model, params, prompts=PROMPTS, lengths=LENGTHS, **kwargs):
  kwargs = {'num_samples': NUM_SAMPLES, 'max_new_tokens': MAX_NEW, 'rng': jax.random.key(7),
            'eos_id': 1, 'pad_id': PAD, **kwargs}
  return generate(model, params, jnp.asarray(prompts), jnp.asarray(lengths), **kwargs)


@pytest.mark.slow  # Its own compilation, of 2048 rows.
def test_first_tokens_follow_the_model_distribution(model_and_params):
  """Chi-square goodness of fit of the first sampled tokens to the exact next-token law."""
  model, params = model_and_params
  num_draws = 2048
  samples = generate(model, params, jnp.asarray(PROMPTS[:1]), jnp.asarray(LENGTHS[:1]),
                     num_samples=num_draws, max_new_tokens=1, rng=jax.random.key(3), eos_id=1,
                     pad_id=PAD)
  logits = _forward(model, params, jnp.asarray(PROMPTS[:1]), jnp.asarray(LENGTHS[:1]))
  exact = np.asarray(jax.nn.softmax(logits[0, LENGTHS[0] - 1]), np.float64)
  counts = np.bincount(np.asarray(samples.tokens[0, :, 0]), minlength=exact.size)

  def p_value(probs):
    expected = num_draws * probs / probs.sum()
    common = expected >= 5  # Pool the rare bins into one, as the chi-square test requires.
    observed = np.append(counts[common], counts[~common].sum())
    expected = np.append(expected[common], expected[~common].sum())
    statistic = np.sum((observed - expected) ** 2 / expected)
    return float(jax.scipy.stats.chi2.sf(statistic, df=observed.size - 1))

  assert np.sum(num_draws * exact >= 5) >= 10  # Enough bins for the test to mean something.
  assert p_value(exact) > 1e-3  # The level of the test: it fails 1 time in 1000 by chance.
  # The test has power: the law at temperature 1.5 is rejected from the same draws.
  assert p_value(exact ** (1 / 1.5)) < 1e-3


# 36 new tokens: three decode loops (own cache slots 16, 32, 36), grown between them.
@pytest.mark.parametrize('max_new', [MAX_NEW, 36])
def test_logprobs_equal_teacher_forced_ones(model_and_params, max_new):
  model, params = model_and_params
  sampler = Temperature(TEMPERATURES)
  samples = _generate(model, params, sampler=sampler, return_untempered_logprobs=True,
                      eos_id=5, max_new_tokens=max_new)
  assert np.asarray(samples.lengths).max() == max_new  # Some samples reached the last loop.
  logits = _teacher_forced_logits(model, params, samples)
  valid = np.arange(max_new) < np.asarray(samples.lengths)[..., None]
  tokens = np.asarray(samples.tokens)[..., None]
  expected = np.take_along_axis(np.asarray(sampler.log_probs(logits)), tokens, -1)[..., 0]
  untempered = np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)), tokens, -1)[..., 0]
  # float32: the decode and the teacher-forced forward sum in different orders.
  np.testing.assert_allclose(samples.logprobs, np.where(valid, expected, 0.0), atol=1e-5,
                             rtol=1e-5)
  np.testing.assert_allclose(samples.untempered_logprobs, np.where(valid, untempered, 0.0),
                             atol=1e-5, rtol=1e-5)


def test_eos_ends_a_sample_and_pads_the_rest(model_and_params):
  model, params = model_and_params
  # EOS is the commonest first token of prompt 0, so some samples stop at once, others go on.
  logits = _forward(model, params, jnp.asarray(PROMPTS), jnp.asarray(LENGTHS))
  eos = int(jnp.argmax(logits[0, LENGTHS[0] - 1]))
  samples = _generate(model, params, eos_id=eos, sampler=Temperature(TEMPERATURES),
                      return_untempered_logprobs=True)
  tokens, lengths, done = map(np.asarray, (samples.tokens, samples.lengths, samples.done))
  assert done.any() and not done.all()
  for row_tokens, length, is_done in zip(tokens.reshape(-1, MAX_NEW), lengths.reshape(-1),
                                         done.reshape(-1)):
    hits = np.flatnonzero(row_tokens == eos)
    assert is_done == (hits.size > 0)
    assert length == (hits[0] + 1 if is_done else MAX_NEW)
    assert (row_tokens[length:] == PAD).all()
  assert (np.asarray(samples.logprobs)[np.arange(MAX_NEW) >= lengths[..., None]] == 0).all()


def test_greedy_equals_repeated_argmax_over_full_forwards(model_and_params):
  model, params = model_and_params
  eos = 1
  samples = _generate(model, params, sampler=Greedy(), eos_id=eos)
  rows = np.zeros((len(PROMPTS), PROMPTS.shape[1] + MAX_NEW), np.int32)
  rows[:, :PROMPTS.shape[1]] = PROMPTS
  lengths = LENGTHS.copy()
  for _ in range(MAX_NEW):
    logits = _forward(model, params, jnp.asarray(rows), jnp.asarray(lengths))
    rows[np.arange(len(rows)), lengths] = np.asarray(logits)[np.arange(len(rows)),
                                                             lengths - 1].argmax(-1)
    lengths += 1
  expected = np.stack([rows[b, LENGTHS[b]:LENGTHS[b] + MAX_NEW] for b in range(len(rows))])
  for row in expected:  # Stop at EOS as generate does.
    if eos in row:
      row[np.flatnonzero(row == eos)[0] + 1:] = PAD
  assert len(set(expected.reshape(-1))) > 3  # A non-trivial sequence.
  np.testing.assert_array_equal(samples.tokens, np.repeat(expected[:, None], NUM_SAMPLES, 1))


def test_each_prompt_gets_the_same_samples_alone_as_in_a_batch(model_and_params):
  model, params = model_and_params
  rng = jax.random.key(42)
  batched = _generate(model, params, rng=rng, sampler=TopP(0.9))
  assert len(set(np.asarray(batched.tokens[0, :, 0]))) > 1  # The N samples differ.
  # A single key means one key per prompt, jax.random.split(rng, B).
  keys = jax.random.split(rng, len(PROMPTS))
  chex.assert_trees_all_equal(_generate(model, params, rng=keys, sampler=TopP(0.9)), batched)
  for b in range(len(PROMPTS)):
    # Alone, and with less padding (5 instead of 6 columns).
    alone = generate(model, params, jnp.asarray(PROMPTS[b:b + 1, :5]), jnp.asarray(LENGTHS[b:b + 1]),
                     num_samples=NUM_SAMPLES, max_new_tokens=MAX_NEW, rng=keys[b:b + 1],
                     sampler=TopP(0.9), eos_id=1, pad_id=PAD)
    np.testing.assert_array_equal(alone.tokens[0], batched.tokens[b])
    np.testing.assert_allclose(alone.logprobs[0], batched.logprobs[b], atol=1e-5)


class _CountingTransformer(nn.Module):
  """The tiny transformer, recording the [batch, length] of every call it runs."""

  config: models.TransformerConfig

  @nn.compact
  def __call__(self, tokens, **kwargs):
    jax.debug.callback(_CALLS.append, tokens.shape)
    return models.Transformer(self.config, name='inner')(tokens, **kwargs)


_CALLS = []


def test_prefill_runs_once_per_prompt_and_decoding_stops_early(model_and_params):
  model, params = model_and_params
  counting = _CountingTransformer(model.config)
  # Three copies of one prompt, so that every sample reaches greedy's third token together.
  prompts, lengths = np.stack([PROMPTS[0]] * 3), np.array([LENGTHS[0]] * 3)
  greedy = _generate(model, params, prompts, lengths, sampler=Greedy())
  eos = int(greedy.tokens[0, 0, 2])
  assert eos not in np.asarray(greedy.tokens[0, 0, :2])
  _CALLS.clear()
  samples = _generate(counting, {'inner': params}, prompts, lengths, sampler=Greedy(),
                      eos_id=eos)
  jax.effects_barrier()
  # One prefill of the 3 prompts (not of 3 x 4 rows), then one step of all 12 rows per token
  # after the first; the loop ends when every sample has emitted EOS, not at MAX_NEW.
  rows = len(prompts) * NUM_SAMPLES
  assert _CALLS == [(len(prompts), PROMPTS.shape[1]), (rows, 1), (rows, 1)]
  np.testing.assert_array_equal(samples.lengths, 3)
  assert np.asarray(samples.done).all()


def test_new_sampler_values_and_rngs_reuse_the_compiled_program(model_and_params):
  model, params = model_and_params
  _generate(model, params, sampler=TopP(0.9))
  compiled = generation._generate._cache_size()
  # Python, numpy and jax scalars of any precision; new keys, EOS and padding ids.
  _generate(model, params, sampler=TopP(np.float64(0.5), temperature=jnp.float32(0.8)),
            rng=jax.random.key(1))
  _generate(model, params, sampler=TopP(jnp.bfloat16(0.7), temperature=2), eos_id=2, pad_id=3)
  assert generation._generate._cache_size() == compiled


@pytest.mark.slow  # An 8-device SPMD compilation.
def test_sharded_generation_equals_unsharded(model_and_params):
  model, params = model_and_params
  mesh = sharding.make_mesh('data:4,fsdp:2')  # Rows over all 8 devices; params ZeRO-3 sharded.
  unsharded = _generate(model, params, sampler=TopP(0.9))
  sharded = _generate(model, params, sampler=TopP(0.9), mesh=mesh)
  np.testing.assert_array_equal(sharded.tokens, unsharded.tokens)
  np.testing.assert_allclose(sharded.logprobs, unsharded.logprobs, atol=1e-5)
  chex.assert_trees_all_equal((sharded.lengths, sharded.done), (unsharded.lengths, unsharded.done))
  # The decode loop holds 24 / 8 = 3 rows per device: their own KV slots are [3, kv_heads, T, head]
  # (the prompts' keys and values are a shared prefix, not part of the rows' cache).
  config = model.config
  compiled = generation._generate.lower(
      model, params, jnp.asarray(PROMPTS), jnp.asarray(LENGTHS), jax.random.split(
          jax.random.key(0), 3), TopP(jnp.float32(0.9), jnp.float32(1.0)), jnp.int32(1),
      jnp.int32(PAD), num_samples=NUM_SAMPLES, max_new_tokens=MAX_NEW,
      return_untempered_logprobs=False, mesh=mesh, rules=tuple(sharding.DEFAULT_RULES)).compile()
  cache_shape = rf'f32\[(\d+),{config.num_kv_heads},{MAX_NEW},{config.head_dim}\]'
  loops = [line.split(' while(')[0] for line in compiled.as_text().splitlines()
           if ' while(' in line and re.search(cache_shape, line)]
  assert len(loops) == 1 and set(re.findall(cache_shape, loops[0])) == {'3'}


@pytest.mark.parametrize('change, error, message', [
    (dict(prompts=jnp.zeros((3,), jnp.int32)), ValueError, 'prompts must be'),
    (dict(prompts=jnp.zeros((3, 6))), ValueError, 'prompts must be'),
    (dict(prompt_lengths=jnp.array([5, 0, 4])), ValueError, 'prompt_lengths must lie'),
    (dict(prompt_lengths=jnp.array([7, 2, 4])), ValueError, 'prompt_lengths must lie'),
    (dict(prompt_lengths=jnp.array([5, 2])), ValueError, 'prompt_lengths must have shape'),
    (dict(num_samples=0), ValueError, 'num_samples'),
    (dict(max_new_tokens=2.0), ValueError, 'max_new_tokens'),
    (dict(eos_id=10_000), ValueError, 'eos_id'),
    (dict(pad_id=-1), ValueError, 'pad_id'),
    (dict(rng=jax.random.split(jax.random.key(0), 2)), ValueError, 'one key or 3 keys'),
    (dict(rng=0), TypeError, 'PRNG key'),
    (dict(sampler='greedy'), TypeError, 'sampler must be'),
    (dict(sampler=Temperature(np.ones(2))), ValueError, r'Temperature.temperature must be .*\[3\]'),
    (dict(model=nn.Dense(3)), TypeError, 'model must be'),
])
def test_bad_arguments_raise_a_clear_error(model_and_params, change, error, message):
  model, params = model_and_params
  kwargs = dict(model=model, params=params, prompts=jnp.asarray(PROMPTS),
                prompt_lengths=jnp.asarray(LENGTHS), num_samples=2, max_new_tokens=2,
                rng=jax.random.key(0), eos_id=1, pad_id=PAD)
  kwargs.update(change)
  with pytest.raises(error, match=message):
    generate(**kwargs)
