"""Teacher-forced log-probabilities of given tokens: what every surrogate loss differentiates.

    prompts [B, P] (right-padded) + completions [B, N, T]
      --one forward over [B * N, P + T - 1]--> log pi(completion token t | prompt, earlier tokens)

The prompt's padding sits between its last real token and the completion; the model never sees it
(input_mask) and positions continue from the prompt's real length, so the completion is scored
exactly as the sampler produced it.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def token_logprobs(model: nn.Module, params: Any, inputs: jax.Array, targets: jax.Array, *,
                   positions: jax.Array | None = None, input_mask: jax.Array | None = None,
                   temperature: float | jax.Array = 1.0) -> jax.Array:
  """log pi(targets[b, t] | inputs[b, :t + 1]) for next-token pairs: f32 [B, L].

  Args:
    model: a `bonjax.models.Transformer`.
    params: its parameters.
    inputs: int32 [B, L] tokens fed to the model.
    targets: int32 [B, L] the token each position predicts.
    positions: int32 [B, L]; defaults to arange(L).
    input_mask: bool [B, L], False on padding; defaults to all True.
    temperature: the policy is softmax(logits / temperature); a scalar or a [B] array.
  """
  logits = model.apply({'params': params}, inputs, positions=positions, input_mask=input_mask)
  return _gather_logprobs(logits, targets, temperature)


def completion_logprobs(model: nn.Module, params: Any, prompts: jax.Array,
                        prompt_lengths: jax.Array, completions: jax.Array, *,
                        completion_lengths: jax.Array | None = None,
                        temperature: float | jax.Array = 1.0) -> jax.Array:
  """log pi of each completion token given its prompt and the tokens before it: f32 [B, N, T].

  Args:
    model: a `bonjax.models.Transformer`.
    params: its parameters.
    prompts: int32 [B, P], right-padded, with prompt_lengths int32 [B] real tokens each.
    prompt_lengths: int32 [B].
    completions: int32 [B, N, T], N completions of each prompt (e.g. `Samples.tokens`).
    completion_lengths: int32 [B, N]; tokens at t >= length get log-probability 0. Defaults to T.
    temperature: the policy is softmax(logits / temperature); a scalar or a [B] array.
  """
  batch, prompt_len = prompts.shape
  _, num_samples, length = completions.shape
  rows = batch * num_samples
  repeat = lambda x: jnp.repeat(x, num_samples, axis=0)
  prompt_lengths = repeat(prompt_lengths)
  completions = completions.reshape(rows, length)
  if completion_lengths is None:
    completion_lengths = jnp.full((batch, num_samples), length, jnp.int32)
  completion_lengths = completion_lengths.reshape(rows)

  # The last completion token predicts nothing that is scored, so it is not fed.
  inputs = jnp.concatenate([repeat(prompts), completions[:, :-1]], axis=1)
  slot = jnp.arange(prompt_len + length - 1)[None, :]
  in_prompt = slot < prompt_len
  steps = slot - prompt_len  # index within the completion of the fed token
  input_mask = jnp.where(in_prompt, slot < prompt_lengths[:, None],
                         steps < completion_lengths[:, None])
  positions = jnp.where(in_prompt, slot, prompt_lengths[:, None] + steps)
  logits = model.apply({'params': params}, inputs, positions=positions, input_mask=input_mask)

  # Token 0 is predicted at the prompt's last real token, token t > 0 at completion token t - 1.
  first = jnp.take_along_axis(logits, (prompt_lengths - 1)[:, None, None], axis=1)
  logits = jnp.concatenate([first, logits[:, prompt_len:]], axis=1)
  if jnp.ndim(temperature) == 1:
    temperature = repeat(temperature)
  logprobs = _gather_logprobs(logits, completions, temperature)
  mask = jnp.arange(length)[None, :] < completion_lengths[:, None]
  return jnp.where(mask, logprobs, 0.0).reshape(batch, num_samples, length)


def _gather_logprobs(logits: jax.Array, targets: jax.Array,
                     temperature: float | jax.Array) -> jax.Array:
  temperature = jnp.asarray(temperature, jnp.float32)
  if temperature.ndim == 1:
    temperature = temperature[:, None, None]
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32) / temperature, axis=-1)
  return jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
