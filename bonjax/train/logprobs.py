"""Teacher-forced log-probabilities of given tokens: what every surrogate loss differentiates.

    prompts [B, P] (right-padded) + completions [B, N, T]
      --the prompts once ([B, P]), their keys and values a prefix shared by their N completions
        ([B * N, T - 1]), as the sampler decodes them--> hidden states
      --the T scored positions only--> logits [B * N, T, V] --sampler.log_probs--> log pi(token | ...)

Sharing the prompt makes the forward (and its backward) cost B * P + B * N * (T - 1) tokens instead
of B * N * (P + T - 1): with N = 32 samples of a few-shot MATH prompt as long as its completions,
about half. The gradient of the prompt's keys and values sums over its N completions, as it
must. A model that scans its layers (`Transformer.scans`, remat) scans both forwards
(`scan_cache`), keeping the prompt's keys and values of every layer for the backward: B * P
slots, where the repeated forward would keep B * N * P activations. `share_prompt=False` asks
for the one forward over repeated prompts.

The policy differentiated is the one that was sampled: the log-probabilities come from the same
`bonjax.sampling` sampler object (temperature, then top-k / top-p / min-p filtering, renormalised)
that drew the completions. The prompt's padding sits between its last real token and the
completion; the model never sees it (input_mask) and positions continue from the prompt's real
length, so the completion is scored exactly as the sampler produced it.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bonjax import models, sampling


def _check_sampler(sampler: sampling.Sampler) -> None:
  if not isinstance(sampler, sampling.Sampler):
    raise TypeError(f'sampler must be a bonjax.sampling Sampler, got {type(sampler).__name__}')
  if isinstance(getattr(sampler, 'sampler', sampler), sampling.Greedy):
    raise ValueError('cannot differentiate a Greedy sampler: its law is a point mass with no '
                     'gradient; train with Temperature, TopK, TopP or MinP')


def token_logprobs(model: nn.Module, params: Any, inputs: jax.Array, targets: jax.Array, *,
                   positions: jax.Array | None = None, input_mask: jax.Array | None = None,
                   segment_ids: jax.Array | None = None,
                   sampler: sampling.Sampler = sampling.Temperature(1.0)) -> jax.Array:
  """log pi(targets[b, t] | inputs[b, :t + 1]) for next-token pairs: f32 [B, L].

  Args:
    model: a `bonjax.models.Transformer`.
    params: its parameters.
    inputs: int32 [B, L] tokens fed to the model.
    targets: int32 [B, L] the token each position predicts.
    positions: int32 [B, L]; defaults to arange(L).
    input_mask: bool [B, L], False on padding; defaults to all True.
    segment_ids: int32 [B, L] of packed rows (tokens attend only within their segment), or None.
    sampler: the policy's law over each token's logits (default: the model's own softmax).
  """
  _check_sampler(sampler)
  extra = {} if segment_ids is None else {'segment_ids': segment_ids}
  logits = model.apply({'params': params}, inputs, positions=positions, input_mask=input_mask,
                       **extra)
  return sampling.token_log_probs(sampler.log_probs(logits), targets)


def completion_logprobs(model: models.Transformer, params: Any, prompts: jax.Array,
                        prompt_lengths: jax.Array, completions: jax.Array, *,
                        completion_lengths: jax.Array | None = None,
                        sampler: sampling.Sampler = sampling.Temperature(1.0),
                        share_prompt: bool = True) -> jax.Array:
  """log pi of each completion token given its prompt and the tokens before it: f32 [B, N, T].

  Args:
    model: a `bonjax.models.Transformer`.
    params: its parameters.
    prompts: int32 [B, P], right-padded, with prompt_lengths int32 [B] real tokens each.
    prompt_lengths: int32 [B].
    completions: int32 [B, N, T], N completions of each prompt (e.g. `Samples.tokens`).
    completion_lengths: int32 [B, N]; tokens at t >= length get log-probability 0. Defaults to T.
    sampler: the sampler the completions were drawn with; its float parameters may be per prompt
      ([B] arrays), as in `bonjax.sampling.generate`.
    share_prompt: run each prompt once, as a prefix its N completions attend to (see the module
      docstring). The values are the same either way.
  """
  _check_sampler(sampler)
  batch, num_samples, length = completions.shape
  if completion_lengths is None:
    completion_lengths = jnp.full((batch, num_samples), length, jnp.int32)

  if share_prompt:
    scored = _shared_prompt_hidden(model, params, prompts, prompt_lengths, completions,
                                   completion_lengths, num_samples)
  else:
    scored = _repeated_prompt_hidden(model, params, prompts, prompt_lengths, completions,
                                     completion_lengths, num_samples)
  logits = models.unembed(model, params, scored)
  # [B, N, T, V]: the sampler's per-prompt parameters broadcast over the leading axis.
  log_probs = sampler.log_probs(logits.reshape(batch, num_samples, length, -1))
  logprobs = sampling.token_log_probs(log_probs, completions)
  mask = jnp.arange(length) < completion_lengths[..., None]
  return jnp.where(mask, logprobs, 0.0)


# Both return the final hidden states of the T scored positions of each completion row,
# [B * N, T, D]: token 0 is predicted at the prompt's last real token, token t > 0 at completion
# token t - 1 (the last completion token predicts nothing that is scored, so it is not fed). Only
# those T positions are projected onto the vocabulary, not the P prompt positions.


def _repeated_prompt_hidden(model, params, prompts, prompt_lengths, completions,
                            completion_lengths, num_samples):
  """One forward over [B * N, P + T - 1]: each prompt repeated before each of its completions."""
  prompt_len, length = prompts.shape[1], completions.shape[-1]
  repeat = lambda x: jnp.repeat(x, num_samples, axis=0)
  prompt_lengths = repeat(prompt_lengths)
  completions = completions.reshape(-1, length)
  completion_lengths = completion_lengths.reshape(-1)
  inputs = jnp.concatenate([repeat(prompts), completions[:, :-1]], axis=1)
  slot = jnp.arange(prompt_len + length - 1)[None, :]
  in_prompt = slot < prompt_len
  steps = slot - prompt_len  # index within the completion of the fed token
  input_mask = jnp.where(in_prompt, slot < prompt_lengths[:, None],
                         steps < completion_lengths[:, None])
  positions = jnp.where(in_prompt, slot, prompt_lengths[:, None] + steps)
  hidden = model.apply({'params': params}, inputs, positions=positions, input_mask=input_mask,
                       return_hidden=True)
  first = jnp.take_along_axis(hidden, (prompt_lengths - 1)[:, None, None], axis=1)
  return jnp.concatenate([first, hidden[:, prompt_len:]], axis=1)


def _shared_prompt_hidden(model, params, prompts, prompt_lengths, completions,
                          completion_lengths, num_samples):
  """The prompts' forward [B, P] into a KV cache, shared by the completions' [B * N, T - 1]."""
  config = model.config
  batch, prompt_len = prompts.shape
  length = completions.shape[-1]
  variables = {'params': params}
  slots = jnp.arange(prompt_len, dtype=jnp.int32)
  cache = models.init_cache(config, batch, prompt_len, dtype=config.dtype)
  cache = nn.with_logical_constraint(cache, models.cache_logical_axes(cache))
  prompt_hidden, cache = model.apply(
      variables, prompts, positions=jnp.broadcast_to(slots, prompts.shape),
      input_mask=slots < prompt_lengths[:, None], cache=cache, return_hidden=True,
      scan_cache=True)
  first = jnp.take_along_axis(prompt_hidden, (prompt_lengths - 1)[:, None, None], axis=1)
  first = jnp.repeat(first, num_samples, axis=0)
  if length == 1:
    return first
  fed = completions.reshape(-1, length)[:, :-1]
  steps = jnp.arange(length - 1, dtype=jnp.int32)[None, :]
  shared = models.share_prefix(cache, num_samples, length - 1)
  shared = nn.with_logical_constraint(shared, models.cache_logical_axes(shared))
  hidden, _ = model.apply(
      variables, fed, positions=jnp.repeat(prompt_lengths, num_samples)[:, None] + steps,
      input_mask=steps < completion_lengths.reshape(-1, 1), cache=shared, return_hidden=True,
      scan_cache=True)
  return jnp.concatenate([first, hidden], axis=1)
