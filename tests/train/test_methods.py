"""Each method's loss is the objective it names, computed on the batch the loop gives it."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bonjax import objectives, sampling
from bonjax.train import logprobs, methods
from bonjax.verifiers import learned
from tests import helpers

MODEL = helpers.tiny_model()
PARAMS = helpers.tiny_params(MODEL)
POLICY = methods.Policy(MODEL, sampling.Temperature(0.9))


def _rollout_batch(seed=0, batch=2, m=4, length=3):
  rng = np.random.default_rng(seed)
  vocab = MODEL.config.vocab_size
  return {'prompts': jnp.asarray(rng.integers(4, vocab, (batch, 5)), jnp.int32),
          'prompt_lengths': jnp.array([5, 3][:batch], jnp.int32),
          'tokens': jnp.asarray(rng.integers(4, vocab, (batch, m, length)), jnp.int32),
          'lengths': jnp.asarray(rng.integers(1, length + 1, (batch, m)), jnp.int32),
          'logprobs': jnp.asarray(-rng.random((batch, m, length)), jnp.float32),
          'scores': jnp.asarray(rng.random((batch, m)), jnp.float32),
          'rewards': jnp.asarray(rng.random((batch, m)) > 0.5, jnp.float32)}


def _sequence_logprobs(params, batch, prefix=''):
  return logprobs.completion_logprobs(
      MODEL, params, batch['prompts'], batch['prompt_lengths'], batch[prefix + 'tokens'],
      completion_lengths=batch[prefix + 'lengths'], sampler=POLICY.sampler)


EXPECTED_WEIGHTS = {
    'rloo': lambda s, r: objectives.rloo_weights(r),
    'grpo': lambda s, r: objectives.grpo_weights(r),
    'rl_v': lambda s, r: objectives.rloo_weights(s),
    'bon_rl_v': lambda s, r: objectives.bon_rl_weights(s, s, 2),
    'bon_rl_s': lambda s, r: objectives.bon_rl_weights(s, r, 2),
    'bon_rlb': lambda s, r: objectives.bon_rlb_weights(r > 0.5, 2),
    'bon_rlb_p': lambda s, r: objectives.bon_rlb_weights(r > 0.5, 2, 'positive_only'),
    'pkpo': lambda s, r: objectives.pkpo_weights(r, 2),
}


@pytest.mark.parametrize('name', sorted(methods.WEIGHTS))
def test_policy_gradient_follows_the_named_weights(name):
  assert set(EXPECTED_WEIGHTS) == set(methods.WEIGHTS)
  batch = _rollout_batch()
  method = methods.PolicyGradient(weights=name, bon_n=2)
  w = EXPECTED_WEIGHTS[name](batch['scores'], batch['rewards'])
  chex.assert_trees_all_close(method.sample_weights(batch['scores'], batch['rewards']), w)

  def objective(p):  # mean over prompts of sum_i w_i log pi(y_i)
    return jnp.mean(jnp.sum(w * _sequence_logprobs(p, batch).sum(-1), axis=-1))

  grads = jax.grad(lambda p: method.loss(POLICY, p, batch)[0])(PARAMS)
  expected = jax.tree.map(jnp.negative, jax.grad(objective)(PARAMS))
  chex.assert_trees_all_close(grads, expected, atol=1e-6, rtol=1e-4)


def test_policy_gradient_kl_is_zero_at_the_reference_and_clip_is_neutral_on_policy():
  batch = _rollout_batch()
  batch['logprobs'] = _sequence_logprobs(PARAMS, batch)  # the rollout's own log-probs
  plain = methods.PolicyGradient('rloo')
  clipped = methods.PolicyGradient('rloo', clip_eps=0.2, kl_coef=0.1)
  loss, metrics = clipped.loss(POLICY, PARAMS, batch, ref_params=PARAMS)
  np.testing.assert_allclose(metrics['kl_to_init'], 0.0, atol=1e-6)
  # At ratio 1, PPO clipping and a KL at its minimum leave the gradient of plain RLOO.
  chex.assert_trees_all_close(
      jax.grad(lambda p: clipped.loss(POLICY, p, batch, ref_params=PARAMS)[0])(PARAMS),
      jax.grad(lambda p: plain.loss(POLICY, p, batch)[0])(PARAMS), atol=1e-6, rtol=1e-4)
  assert np.isfinite(loss)
  with pytest.raises(ValueError, match='kl_coef > 0 needs the initial policy'):
    clipped.loss(POLICY, PARAMS, batch)


def test_bon_sft_is_the_objective_on_expert_and_sample_logprobs():
  batch = _rollout_batch()
  batch.update(expert_tokens=batch['tokens'][:, :1], expert_lengths=batch['lengths'][:, :1],
               expert_scores=jnp.array([0.9, 0.2]))
  for form in ('variational', 'exact'):
    loss, _ = methods.BonSft(bon_n=2, form=form).loss(POLICY, PARAMS, batch)
    expected = objectives.bon_sft_loss(
        _sequence_logprobs(PARAMS, batch, 'expert_').sum(-1)[:, 0],
        _sequence_logprobs(PARAMS, batch).sum(-1), batch['expert_scores'], batch['scores'], 2,
        form)
    np.testing.assert_allclose(loss, expected, rtol=1e-6)


def _sft_batch():
  tokens = jax.random.randint(jax.random.key(1), (3, 7), 4, MODEL.config.vocab_size)
  mask = jnp.ones((3, 6), jnp.float32).at[:, :2].set(0.0)
  return {'inputs': tokens[:, :-1], 'targets': tokens[:, 1:], 'loss_mask': mask,
          'positions': jnp.broadcast_to(jnp.arange(6), (3, 6)),
          'input_mask': jnp.ones((3, 6), bool)}


def test_sft_and_dco_losses():
  batch = _sft_batch()
  token_lp = logprobs.token_logprobs(MODEL, PARAMS, batch['inputs'], batch['targets'])
  mask = batch['loss_mask'] > 0
  loss, metrics = methods.Sft(reduce='sequence').loss(POLICY, PARAMS, batch)
  np.testing.assert_allclose(loss, objectives.sft_loss(token_lp, mask), rtol=1e-6)
  assert 0.0 <= float(metrics['token_accuracy']) <= 1.0
  loss, _ = methods.Dco(bon_n=3).loss(POLICY, PARAMS, batch)
  np.testing.assert_allclose(
      loss, objectives.dco_loss(jnp.sum(jnp.where(mask, token_lp, 0.0), -1), 3), rtol=1e-6)


def test_reward_bce_is_the_binary_cross_entropy_of_the_reward_model_logit():
  reward_model = learned.RewardModel(helpers.tiny_config())
  params = helpers.tiny_params(reward_model)  # the model's own example inputs shape them
  assert set(params) == {'trunk', 'head'}
  rng = np.random.default_rng(0)
  batch = {'tokens': rng.integers(4, 64, (6, 5)).astype(np.int32),
           'lengths': np.array([1, 2, 3, 4, 5, 5], np.int32),
           'labels': np.array([1, 0, 1, 1, 0, 0], np.float32)}
  logits = reward_model.apply({'params': params}, batch['tokens'], batch['lengths'])
  loss, metrics = methods.RewardBce().loss(methods.Policy(reward_model), params, batch)
  expected = -np.mean(batch['labels'] * jax.nn.log_sigmoid(logits)
                      + (1 - batch['labels']) * jax.nn.log_sigmoid(-logits))
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  np.testing.assert_allclose(metrics['accuracy'], np.mean((logits > 0) == (batch['labels'] > 0)))


def test_bad_method_arguments_are_named():
  with pytest.raises(ValueError, match="unknown weights 'bon_rl'; valid: rloo"):
    methods.PolicyGradient('bon_rl')
  with pytest.raises(ValueError, match='bon_n must be a positive int'):
    methods.PolicyGradient('bon_rl_s', bon_n=0)
  assert methods.PolicyGradient('rloo', bon_n=8).n == 1  # single-sample estimators ignore n
  assert methods.PolicyGradient('bon_rl_v').uses_scores
  assert not methods.PolicyGradient('bon_rl_v').uses_rewards
  assert methods.PolicyGradient('bon_rl_s').uses_rewards
