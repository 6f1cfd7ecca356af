"""Tests for bonjax/verifiers/learned.py: the reward model and the learned verifier protocol."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bonjax import models, verifiers
from bonjax.data import Tokenizer, arith
from bonjax.verifiers import learned

MAX_LEN = 40


@pytest.fixture(scope='module')
def tokenizer():
  texts = [p['question'] + '\n' + p['solution']
           for p in (arith.generate_problem(np.random.default_rng(i), 'easy') for i in range(50))]
  return Tokenizer.train(texts, vocab_size=400)


@pytest.fixture(scope='module')
def config(tokenizer):
  return dataclasses.replace(models.get_config('tiny'), vocab_size=tokenizer.vocab_size)


@pytest.fixture(scope='module')
def params(config):
  params = learned.init_params(config, jax.random.key(0))
  # A random head instead of the zero init, so that scores differ between inputs.
  params['head']['kernel'] = jax.random.normal(jax.random.key(1), params['head']['kernel'].shape)
  return params


@pytest.fixture(scope='module')
def verifier(tokenizer, params, config):
  return learned.LearnedVerifier(tokenizer, params, config, max_len=MAX_LEN, batch_size=4)


def test_head_reads_final_norm_hidden_state_of_last_real_token(config, params):
  model = learned.RewardModel(config)
  tokens = jax.random.randint(jax.random.key(2), (3, 12), 4, config.vocab_size)
  lengths = jnp.array([5, 12, 1])
  logits = learned.reward_logits(model, params, tokens, lengths)
  chex.assert_shape(logits, (3,))
  assert logits.dtype == jnp.float32

  # The reference: the Transformer's own final-norm output, read with flax's intermediates
  # capture. Causal attention makes position length - 1 of the unpadded rows the right state.
  @jax.jit
  def final_norm_output(trunk_params, tokens):
    _, state = models.Transformer(config).apply(
        {'params': trunk_params}, tokens, capture_intermediates=True, mutable=['intermediates'])
    return state['intermediates']['final_norm']['__call__'][0]

  hidden = final_norm_output(params['trunk'], tokens)[jnp.arange(3), lengths - 1]
  expected = hidden @ params['head']['kernel'][:, 0] + params['head']['bias'][0]
  chex.assert_trees_all_close(logits, expected, rtol=1e-5, atol=1e-5)


def test_padding_is_ignored(config, params):
  model = learned.RewardModel(config)
  tokens = jax.random.randint(jax.random.key(3), (2, 10), 4, config.vocab_size)
  lengths = jnp.array([6, 10])
  other_padding = tokens.at[0, 6:].set(7)
  chex.assert_trees_all_close(learned.reward_logits(model, params, tokens, lengths),
                              learned.reward_logits(model, params, other_padding, lengths))


def test_fresh_head_scores_zero(config):
  params = learned.init_params(config, jax.random.key(0))
  logits = learned.reward_logits(learned.RewardModel(config), params,
                                 jnp.full((2, 5), 9, jnp.int32), jnp.array([5, 3]))
  chex.assert_trees_all_equal(logits, jnp.zeros(2))


def test_encode_pairs_layout_and_truncation(tokenizer):
  prompt, completion = 'Tom has 12 apples.\n', 'The answer is 12.'
  tokens, lengths = learned.encode_pairs(tokenizer, [prompt], [completion], max_len=MAX_LEN)
  ids = tokenizer.tokenize([prompt, completion])
  expected = [tokenizer.bos_id] + ids[0] + ids[1] + [tokenizer.eos_id]
  assert lengths.tolist() == [len(expected)]
  assert tokens[0, :len(expected)].tolist() == expected
  assert set(tokens[0, len(expected):].tolist()) <= {tokenizer.pad_id}

  short = len(ids[1]) + 4
  tokens, lengths = learned.encode_pairs(tokenizer, [prompt], [completion], max_len=short)
  assert lengths.tolist() == [short]
  # The prompt loses its start; the whole completion and EOS stay.
  assert tokens[0].tolist() == ([tokenizer.bos_id] + ids[0][-2:] + ids[1] + [tokenizer.eos_id])


def test_score_shape_dtype_and_consistency(verifier):
  prompts = ['Tom has 3 apples.\n', 'Ann has 5 coins.\n']
  completions = [['The answer is 3.', 'The answer is 4.', 'no idea'],
                 ['The answer is 5.', '', 'The answer is 50.']]
  scores = verifier.score(prompts, completions, [{}, {}])
  assert scores.shape == (2, 3) and scores.dtype == np.float32
  assert np.all(np.isfinite(scores))
  flat = verifier.score_pairs([p for p in prompts for _ in range(3)], sum(completions, []))
  chex.assert_trees_all_close(scores.ravel(), flat, rtol=1e-6)
  # A pair's score does not depend on the other pairs or on the batch size.
  alone = verifier.score([prompts[1]], [completions[1][2:]], [{}])
  chex.assert_trees_all_close(alone[0, 0], scores[1, 2], rtol=1e-5, atol=1e-6)
  assert len(np.unique(scores)) == 6
  # The verifier protocol, as every other verifier implements it.
  assert isinstance(verifier, verifiers.VerifierProtocol)
  assert verifier.score([], [], []).shape == (0, 0)


def test_bad_score_inputs(verifier):
  with pytest.raises(TypeError, match=r'completions\[0\]\[1\] must be a str'):
    verifier.score(['p'], [['a', 3]], [{}])
  with pytest.raises(ValueError, match='same number of completions'):
    verifier.score(['p', 'q'], [['a'], ['b', 'c']], [{}, {}])
  with pytest.raises(ValueError, match='same length'):
    verifier.score(['p'], [['a'], ['b']], [{}])


def test_bad_constructor_arguments(tokenizer, params, config):
  with pytest.raises(TypeError, match='TransformerConfig'):
    learned.LearnedVerifier(tokenizer, params, {'vocab_size': 400})
  with pytest.raises(ValueError, match='batch_size must be an int >= 1'):
    learned.LearnedVerifier(tokenizer, params, config, batch_size=0)
  with pytest.raises(ValueError, match=r'tokenizer has \d+ ids but the model only 256'):
    learned.LearnedVerifier(tokenizer, params, models.get_config('tiny'))
  wider = dataclasses.replace(config, embed_dim=32)
  with pytest.raises(ValueError, match=r"head/kernel has shape \(64, 1\), expected "
                                       r'\(32, 1\)'):
    learned.LearnedVerifier(tokenizer, params, wider)
  with pytest.raises(ValueError, match=r"missing head/"):
    learned.LearnedVerifier(tokenizer, {'trunk': params['trunk']}, config)
