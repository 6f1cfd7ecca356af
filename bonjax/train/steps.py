"""Pure train steps: (state, batch) -> (state, metrics), to be wrapped in `jax.jit` by the caller.

    sft_step:             batch of next-token pairs --sft_loss--> grads --optax--> new state
    policy_gradient_step: prompts + sampled completions + per-sample weights w [B, N]
                          --policy_gradient_loss(w)--> grads --optax--> new state

The weights come from `bonjax.objectives` (rloo_weights, bon_rl_weights, ...) computed on the
host or in another jitted function: the step treats them as constants (stop-gradient), which is
what makes sum_i w_i grad log pi(y_i) the objective's gradient (BON_MATH.md section 5).
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from bonjax import objectives
from bonjax.train import logprobs as logprobs_lib

Metrics = dict[str, jax.Array]


@struct.dataclass
class TrainState:
  """Everything a step updates: a pytree, so it jits, shards and checkpoints as one."""

  step: jax.Array
  params: Any
  opt_state: Any

  @classmethod
  def create(cls, params: Any, tx: optax.GradientTransformation) -> 'TrainState':
    return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def _apply_gradients(tx: optax.GradientTransformation, state: TrainState, loss_fn
                     ) -> tuple[TrainState, Metrics]:
  (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads))
  return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics


def sft_step(model: nn.Module, tx: optax.GradientTransformation, state: TrainState,
             batch: Mapping[str, jax.Array]) -> tuple[TrainState, Metrics]:
  """One supervised step on `bonjax.data.sft_batches` arrays (inputs, targets, loss_mask, ...)."""

  def loss_fn(params):
    token_logprobs = logprobs_lib.token_logprobs(
        model, params, batch['inputs'], batch['targets'], positions=batch['positions'],
        input_mask=batch['input_mask'])
    mask = batch['loss_mask'] > 0
    loss = objectives.sft_loss(token_logprobs, mask, reduce='token')
    accuracy = jnp.sum(jnp.where(mask, token_logprobs > jnp.log(0.5), False)) / jnp.maximum(
        jnp.sum(mask), 1)
    return loss, {'token_accuracy': accuracy}

  return _apply_gradients(tx, state, loss_fn)


def policy_gradient_step(model: nn.Module, tx: optax.GradientTransformation, state: TrainState,
                         batch: Mapping[str, jax.Array], *, temperature: float = 1.0,
                         reduce: str = 'sequence') -> tuple[TrainState, Metrics]:
  """One policy-gradient step on sampled completions with precomputed weights.

  Args:
    model: the policy, a `bonjax.models.Transformer`.
    tx: the optax optimizer.
    state: the train state.
    batch: `prompts` [B, P], `prompt_lengths` [B], `tokens` [B, N, T] and `lengths` [B, N] (as
      `bonjax.sampling.generate` returns them) and `weights` [B, N].
    temperature: the temperature the completions were sampled at: the policy differentiated is
      the one that was sampled from.
    reduce: how `objectives.policy_gradient_loss` normalizes over tokens.
  """

  def loss_fn(params):
    token_logprobs = logprobs_lib.completion_logprobs(
        model, params, batch['prompts'], batch['prompt_lengths'], batch['tokens'],
        completion_lengths=batch['lengths'], temperature=temperature)
    length = batch['tokens'].shape[-1]
    mask = jnp.arange(length) < batch['lengths'][..., None]
    loss = objectives.policy_gradient_loss(token_logprobs, mask, batch['weights'], reduce=reduce)
    return loss, {'mean_logprob': jnp.sum(token_logprobs) / jnp.maximum(jnp.sum(mask), 1)}

  return _apply_gradients(tx, state, loss_fn)
