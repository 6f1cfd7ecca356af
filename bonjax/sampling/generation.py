"""N samples per prompt from one prefill per prompt and one jitted decode loop.

    prompts [B, P] --prefill once--> prompt cache [B, P slots], next-token logits [B, V]
      --share it: the B * N rows' cache has the prompt cache as its shared prefix-->
      --lax.while_loop: sample, feed back, until every sample has emitted EOS or T tokens-->
    Samples(tokens [B, N, T], logprobs [B, N, T], lengths [B, N], done [B, N])

The prompt's keys and values are stored once per prompt and read once per prompt per step (a
matrix product over its N samples), never copied to the samples. The samples' own slots grow with
the loop (16, 32, 64, ... up to T: one loop per length, each ending early when every sample is
done), so attention reads about as many slots as have been filled rather than all T from the start.

Randomness contract: `rng` is either one key, which is split into one key per prompt with
`jax.random.split(rng, B)`, or a `[B]` array of keys, one per prompt. Prompt b's samples depend only
on its tokens and its key, never on its batch position, on the other prompts or on the padding: the
same prompt with the same key gives the same samples alone or in any batch. Inside a prompt, sample
j draws token t with `fold_in(split(prompt_key, N)[j], t)`, so the N samples are independent.
"""

from __future__ import annotations

import functools
import numbers
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.sharding import Mesh

from bonjax import models, sharding
from bonjax.sampling.samplers import Sampler, Temperature, token_log_probs


@struct.dataclass
class Samples:
  """The output of `generate`: B prompts x N samples x T = max_new_tokens slots.

  Attributes:
    tokens: int32 [B, N, T] generated tokens (EOS included), pad_id after EOS.
    logprobs: f32 [B, N, T] log-probability of each token under the distribution it was drawn from
      (after temperature and filtering; 0 for greedy tokens, a point mass); 0 after EOS.
    lengths: int32 [B, N] number of generated tokens, EOS included.
    done: bool [B, N] whether the sample emitted EOS.
    untempered_logprobs: f32 [B, N, T] log-probability under the raw model (temperature 1, no
      filter), 0 after EOS; None unless requested.
  """

  tokens: jax.Array
  logprobs: jax.Array
  lengths: jax.Array
  done: jax.Array
  untempered_logprobs: jax.Array | None = None


def _is_int(value: Any) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def prompt_keys(rng: jax.Array, batch_size: int) -> jax.Array:
  """One typed PRNG key per prompt `[B]`, from one key or from `[B]` keys (typed or raw uint32)."""
  rng = jnp.asarray(rng)
  if not jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
    if rng.dtype != jnp.uint32 or rng.ndim not in (1, 2):
      raise TypeError(f'rng must be a PRNG key (jax.random.key) or a [B] array of keys, got '
                      f'dtype {rng.dtype} and shape {rng.shape}.')
    rng = jax.random.wrap_key_data(rng)
  if rng.ndim == 0:
    return jax.random.split(rng, batch_size)
  if rng.shape != (batch_size,):
    raise ValueError(f'rng must be one key or {batch_size} keys (one per prompt), got key array '
                     f'shape {rng.shape}.')
  return rng


def _check_inputs(model: nn.Module, prompts: jax.Array, prompt_lengths: jax.Array,
                  num_samples: int, max_new_tokens: int, sampler: Sampler, eos_id: int,
                  pad_id: int) -> None:
  """Raises one clear error for each kind of bad argument `generate` can detect before tracing."""
  config = getattr(model, 'config', None)
  if not isinstance(config, models.TransformerConfig):
    raise TypeError(f'model must be a bonjax.models.Transformer (with a TransformerConfig '
                    f'`config`), got {type(model).__name__}.')
  if prompts.ndim != 2 or not jnp.issubdtype(prompts.dtype, jnp.integer):
    raise ValueError(f'prompts must be integer token ids [batch, prompt_len], got dtype '
                     f'{prompts.dtype} and shape {prompts.shape}.')
  if prompt_lengths.shape != prompts.shape[:1]:
    raise ValueError(f'prompt_lengths must have shape [{prompts.shape[0]}] (one per prompt), got '
                     f'{prompt_lengths.shape}.')
  # Values are checked where this process holds them all (not under tracing, not the global
  # arrays of a multi-process job).
  if not isinstance(prompt_lengths, jax.core.Tracer) and prompt_lengths.is_fully_addressable:
    lengths = np.asarray(prompt_lengths)
    if np.any(lengths < 1) or np.any(lengths > prompts.shape[1]):
      raise ValueError(f'prompt_lengths must lie in [1, {prompts.shape[1]}] (prompts are right-'
                       f'padded to that length), got {lengths}.')
  for name, value in (('num_samples', num_samples), ('max_new_tokens', max_new_tokens)):
    if not _is_int(value) or value < 1:
      raise ValueError(f'{name} must be a positive int, got {value!r}.')
  if not isinstance(sampler, Sampler):
    raise TypeError(f'sampler must be a bonjax.sampling Sampler (Greedy, Temperature, TopK, TopP, '
                    f'MinP), got {type(sampler).__name__}.')
  for path, leaf in jax.tree.leaves_with_path(sampler):
    if np.ndim(leaf) not in (0, 1) or np.ndim(leaf) == 1 and np.shape(leaf)[0] != prompts.shape[0]:
      raise ValueError(f'{type(sampler).__name__}{jax.tree_util.keystr(path)} must be a scalar or '
                       f'have shape [{prompts.shape[0]}] (one value per prompt), got shape '
                       f'{np.shape(leaf)}.')
  for name, value in (('eos_id', eos_id), ('pad_id', pad_id)):
    if not _is_int(value) or not 0 <= value < config.vocab_size:
      raise ValueError(f'{name} must be a token id in [0, {config.vocab_size}), got {value!r}.')


def generate(model: nn.Module, params: Any, prompts: jax.Array, prompt_lengths: jax.Array, *,
             num_samples: int, max_new_tokens: int, rng: jax.Array,
             sampler: Sampler = Temperature(1.0), eos_id: int, pad_id: int,
             return_untempered_logprobs: bool = False, mesh: Mesh | None = None,
             rules: sharding.LogicalRules = sharding.DEFAULT_RULES) -> Samples:
  """Draws `num_samples` continuations of each prompt.

  Args:
    model: a `bonjax.models.Transformer`.
    params: its parameters (the value of `variables['params']`, boxed or not).
    prompts: int32 [B, P] right-padded prompts.
    prompt_lengths: int32 [B] number of real tokens of each prompt, in [1, P].
    num_samples: N, samples per prompt.
    max_new_tokens: T, the most tokens generated per sample (EOS included).
    rng: one PRNG key or [B] keys, one per prompt (see the module docstring for the contract).
    sampler: how to draw each token (Greedy, Temperature, TopK, TopP or MinP).
    eos_id: the token that ends a sample.
    pad_id: the token written after EOS.
    return_untempered_logprobs: also return each token's log-probability under the raw model.
    mesh: if given, generation runs sharded on it: params as `bonjax.models.param_shardings`
      says (they are moved there if they are not already), the B * N decoding rows and their KV
      cache over the batch mesh axes. Prompt-level work (the prefill) is sharded too when the mesh
      divides B, replicated otherwise.
    rules: the logical axis rules that map the model's axis names to the mesh axes.

  Returns:
    Samples with tokens [B, N, T]. The decode loop stops as soon as every sample is done.
  """
  prompts = jnp.asarray(prompts)
  prompt_lengths = jnp.asarray(prompt_lengths)
  _check_inputs(model, prompts, prompt_lengths, num_samples, max_new_tokens, sampler, eos_id,
                pad_id)
  keys = prompt_keys(rng, prompts.shape[0])
  # Python floats and numpy/jax scalars of any precision trace alike: no re-compilation when only
  # a sampler parameter's value (or its Python type) changes.
  sampler = jax.tree.map(lambda leaf: jnp.asarray(leaf, jnp.float32), sampler)
  prompts, prompt_lengths = prompts.astype(jnp.int32), prompt_lengths.astype(jnp.int32)
  rules = tuple(tuple(rule) for rule in rules)  # Hashable: a static argument of the jit.
  params = nn.unbox(params)
  if mesh is not None:
    params = jax.device_put(params, _param_shardings(model, mesh, rules))
  return _generate(model, params, prompts, prompt_lengths, keys, sampler, jnp.int32(eos_id),
                   jnp.int32(pad_id), num_samples=num_samples, max_new_tokens=max_new_tokens,
                   return_untempered_logprobs=return_untempered_logprobs, mesh=mesh, rules=rules)


@functools.lru_cache(maxsize=16)
def _param_shardings(model: nn.Module, mesh: Mesh, rules: sharding.LogicalRules) -> Any:
  return models.param_shardings(model, mesh, rules)


def _constrain(tree: Any, logical_axes: Any, mesh: Mesh | None,
               rules: sharding.LogicalRules) -> Any:
  """Shards `tree` by its logical axes on `mesh` (dimensions the mesh does not divide stay whole)."""
  if mesh is None:
    return tree
  return jax.lax.with_sharding_constraint(
      tree, sharding.logical_to_sharding(logical_axes, mesh, rules, shapes=tree))


def _per_row(sampler: Sampler, num_samples: int) -> Sampler:
  """Repeats the per-prompt ([B]) parameters of `sampler` to the B * N rows."""
  return jax.tree.map(lambda x: jnp.repeat(x, num_samples) if x.ndim == 1 else x, sampler)


def _loop_ends(max_new_tokens: int, first: int = 16) -> list[int]:
  """Where the decode loops end: 16, 32, 64, ... and max_new_tokens (log2(T / 16) + 1 loops).

  Each loop is compiled separately, so the lengths double: few programs, and attention over at
  most twice the filled slots.
  """
  ends = [min(first, max_new_tokens)]
  while ends[-1] < max_new_tokens:
    ends.append(min(2 * ends[-1], max_new_tokens))
  return ends


@functools.partial(jax.jit, static_argnames=('model', 'num_samples', 'max_new_tokens',
                                             'return_untempered_logprobs', 'mesh', 'rules'))
def _generate(model: nn.Module, params: Any, prompts: jax.Array, prompt_lengths: jax.Array,
              keys: jax.Array, sampler: Sampler, eos_id: jax.Array, pad_id: jax.Array, *,
              num_samples: int, max_new_tokens: int, return_untempered_logprobs: bool,
              mesh: Mesh | None, rules: sharding.LogicalRules) -> Samples:
  """The whole generation as one XLA program (compiled once per model, shapes and sampler type).

  Decoding works on B * N flat rows (row b * N + j is sample j of prompt b), sharded over the
  batch mesh axes; prompt-level arrays are repeated to rows once, before the loop.
  """
  config = model.config
  batch_size, prompt_len = prompts.shape
  num_rows = batch_size * num_samples
  variables = {'params': params}
  constrain = functools.partial(_constrain, mesh=mesh, rules=rules)
  rows = lambda x: jnp.repeat(x, num_samples, axis=0)  # [B, ...] -> [B * N, ...]

  # Prefill: every prompt once; its cache becomes the shared prefix of its samples' cache.
  slots = jnp.arange(prompt_len, dtype=jnp.int32)
  prompt_cache = models.init_cache(config, batch_size, prompt_len, dtype=config.dtype)
  prompt_cache = constrain(prompt_cache, models.cache_logical_axes(prompt_cache))
  logits, prompt_cache = model.apply(
      variables, prompts, positions=jnp.broadcast_to(slots, prompts.shape),
      input_mask=slots < prompt_lengths[:, None], cache=prompt_cache)
  last_logits = jnp.take_along_axis(logits, (prompt_lengths - 1)[:, None, None], axis=1)[:, 0]
  # Decode step t writes token t - 1 into own slot t - 1: a loop ending at step `end` needs `end`.
  loop_ends = _loop_ends(max_new_tokens)
  cache = models.share_prefix(prompt_cache, num_samples, loop_ends[0])
  cache = constrain(cache, models.cache_logical_axes(cache))

  sampler = _per_row(sampler, num_samples)
  row_keys = jax.vmap(lambda key: jax.random.split(key, num_samples))(keys).reshape(num_rows)
  row_prompt_lengths = rows(prompt_lengths)
  step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))

  def draw(logits, step, done):
    """Token `step` of every row from logits [B * N, V]; rows already done get padding."""
    tokens, logprobs = sampler.sample(step_keys(row_keys, step), logits)
    outputs = {'tokens': jnp.where(done, pad_id, tokens),
               'logprobs': jnp.where(done, 0.0, logprobs)}
    if return_untempered_logprobs:
      untempered = token_log_probs(jax.nn.log_softmax(logits, axis=-1), tokens)
      outputs['untempered'] = jnp.where(done, 0.0, untempered)
    return outputs

  def constrain_state(state):
    axes = {name: ('batch',) + (None,) * (value.ndim - 1)
            for name, value in state.items() if name != 'cache'}
    axes['step'] = ()
    axes['cache'] = models.cache_logical_axes(state['cache'])
    return constrain(state, axes)

  def record(state, step, drawn):
    """Writes the tokens drawn at `step` and updates which rows are done."""
    done = state['done']
    state = dict(state, step=step + 1, last=drawn['tokens'], done=done | (drawn['tokens'] == eos_id),
                 lengths=state['lengths'] + (~done).astype(jnp.int32))
    for name in drawn:
      state[name] = jax.lax.dynamic_update_index_in_dim(state[name], drawn[name], step, axis=1)
    return constrain_state(state)

  shape = (num_rows, max_new_tokens)
  state = {
      'step': jnp.zeros((), jnp.int32),
      'last': jnp.zeros((num_rows,), jnp.int32),
      'done': jnp.zeros((num_rows,), bool),
      'lengths': jnp.zeros((num_rows,), jnp.int32),
      'tokens': jnp.full(shape, pad_id, jnp.int32),
      'logprobs': jnp.zeros(shape, jnp.float32),
      'cache': cache,
  }
  if return_untempered_logprobs:
    state['untempered'] = jnp.zeros(shape, jnp.float32)
  state = record(state, state['step'], draw(rows(last_logits), 0, state['done']))

  def decode_step(state):
    step = state['step']
    logits, cache = model.apply(variables, state['last'][:, None],
                                positions=(row_prompt_lengths + step - 1)[:, None],
                                cache=state['cache'])
    return record(dict(state, cache=cache), step, draw(logits[:, 0], step, state['done']))

  for end in loop_ends:
    if end > loop_ends[0]:
      state = constrain_state(dict(state, cache=models.grow_cache(state['cache'], end)))
    keep_going = lambda state, end=end: (state['step'] < end) & ~jnp.all(state['done'])
    state = jax.lax.while_loop(keep_going, decode_step, state)
  per_prompt = lambda x: x.reshape((batch_size, num_samples) + x.shape[1:])
  return Samples(tokens=per_prompt(state['tokens']), logprobs=per_prompt(state['logprobs']),
                 lengths=per_prompt(state['lengths']), done=per_prompt(state['done']),
                 untempered_logprobs=(per_prompt(state['untempered'])
                                      if return_untempered_logprobs else None))
