"""``learned``: a reward model, the bonjax transformer with a scalar head, used as a verifier.

    tokens  = BOS prompt completion EOS        (right-padded, see `encode_pairs`)
    hidden  = Transformer trunk -> final RMSNorm            [B, L, D]
    score   = Dense(1)(hidden at the last real token)       [B]   (a logit: P(correct) = sigmoid)

The trunk is `bonjax.models.Transformer` itself, so its parameters have exactly the layout of a
policy's (``params['trunk']``) and a reward model can start from a policy checkpoint. The head
reads the trunk's final-normed hidden state (``return_hidden=True``), so the vocabulary projection
is never computed.

This is the one verifier that owns Flax parameters. It knows nothing of checkpoints or training:
``bonjax.train.reward_model`` trains it and loads it from a run directory.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bonjax import models
from bonjax.data.tokenizer import Tokenizer, pad_rows
from bonjax.verifiers.base import Verifier

PyTree = Any


class RewardModel(nn.Module):
  """Scores right-padded token sequences with one logit each.

  Parameters: ``{'trunk': <Transformer params>, 'head': {'kernel': [D, 1], 'bias': [1]}}``.
  The head starts at zero, so an untrained model scores every sequence 0 (P = 1/2).
  """

  config: models.TransformerConfig

  @nn.compact
  def __call__(self, tokens: jax.Array, lengths: jax.Array) -> jax.Array:
    """Returns float32 logits [B] for tokens int32 [B, L] with `lengths` [B] real tokens each.

    Rows must have at least one real token; tokens past a row's length are padding and are
    never attended to.
    """
    trunk = models.Transformer(self.config, name='trunk')
    positions = jnp.arange(tokens.shape[1], dtype=jnp.int32)
    input_mask = positions[None, :] < lengths[:, None]

    hidden = trunk(tokens, input_mask=input_mask, return_hidden=True)  # [B, L, D]

    last = jnp.clip(lengths - 1, 0, tokens.shape[1] - 1)
    last_hidden = jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]  # [B, D]
    head = nn.Dense(
        1, dtype=jnp.float32, param_dtype=self.config.param_dtype,
        kernel_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ('embed', None)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (None,)),
        name='head')
    return head(last_hidden.astype(jnp.float32))[:, 0]

  def example_inputs(self) -> tuple[jax.Array, jax.Array]:
    """What `bonjax.models.init_params` initializes it with: tokens [1, 2], lengths [1]."""
    return jnp.zeros((1, 2), jnp.int32), jnp.ones((1,), jnp.int32)


def encode_pairs(tokenizer: Tokenizer, prompts: Sequence[str], completions: Sequence[str],
                 max_len: int) -> tuple[np.ndarray, np.ndarray]:
  """Token rows ``BOS prompt completion EOS``, right-padded to ``max_len``.

  Prompt and completion are tokenized separately (as the sampler sees them) and joined. A pair too
  long for ``max_len`` loses tokens from the left of the prompt, then of the completion: the end of
  the completion, where the answer is, is what the score must see.

  Returns:
    ``(tokens, lengths)``: int32 ``[K, max_len]`` and int32 ``[K]``.
  """
  if len(prompts) != len(completions):
    raise ValueError(f'prompts and completions must have the same length, got {len(prompts)} '
                     f'and {len(completions)}')
  if max_len < 3:
    raise ValueError(f'max_len must be at least 3 (BOS, one token, EOS), got {max_len}')
  room = max_len - 2
  prompt_ids = tokenizer.tokenize(list(prompts))
  completion_ids = tokenizer.tokenize(list(completions))
  rows = [[tokenizer.bos_id] + (p + c)[-room:] + [tokenizer.eos_id]
          for p, c in zip(prompt_ids, completion_ids)]
  return pad_rows(rows, max_len, tokenizer.pad_id)


@functools.partial(jax.jit, static_argnames='model')
def reward_logits(model: RewardModel, params: PyTree, tokens: jax.Array,
                  lengths: jax.Array) -> jax.Array:
  """The jitted forward pass: logits [B] (compiled once per model and batch shape)."""
  return model.apply({'params': params}, tokens, lengths)


@functools.partial(jax.jit, static_argnums=0)
def init_params(config: models.TransformerConfig, rng: jax.Array) -> PyTree:
  """Fresh, unboxed reward-model parameters for `config`."""
  return models.init_params(RewardModel(config), rng)


@functools.lru_cache(maxsize=None)
def abstract_params(config: models.TransformerConfig) -> PyTree:
  """The parameter tree of `config` as ShapeDtypeStructs (nothing is allocated)."""
  return models.abstract_params(RewardModel(config))


def check_params(params: PyTree, config: models.TransformerConfig) -> None:
  """Raises ValueError, naming the first mismatches, if `params` do not fit `config`."""
  diff = models.compare_trees(abstract_params(config), params)
  problems = [f'missing {k}' for k in diff.missing] + [f'unexpected {k}' for k in diff.unexpected]
  problems += [f'{k} has shape {got}, expected {want}' for k, want, got in diff.misshapen]
  if problems:
    raise ValueError(f'params do not fit the reward model config ({len(problems)} problems): '
                     + '; '.join(problems[:5]))


class LearnedVerifier(Verifier):
  """A trained `RewardModel` behind the verifier protocol; scores are its logits.

  Every (prompt, completion) pair is scored on its own, in fixed-shape batches of
  ``[batch_size, max_len]`` tokens, so scoring compiles once whatever ``B`` and ``M`` are.
  """

  name = 'learned'

  def __init__(self, tokenizer: Tokenizer, params: PyTree, config: models.TransformerConfig,
               max_len: int = 512, batch_size: int = 32):
    if not isinstance(config, models.TransformerConfig):
      raise TypeError(f'config must be a bonjax.models.TransformerConfig, got '
                      f'{type(config).__name__}')
    if not isinstance(tokenizer, Tokenizer):
      raise TypeError(f'tokenizer must be a bonjax.data.Tokenizer, got {type(tokenizer).__name__}')
    if tokenizer.vocab_size > config.vocab_size:
      raise ValueError(f'the tokenizer has {tokenizer.vocab_size} ids but the model only '
                       f'{config.vocab_size} embeddings (config.vocab_size)')
    for arg, value, low in (('max_len', max_len, 3), ('batch_size', batch_size, 1)):
      if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f'{arg} must be an int >= {low}, got {value!r}')
    check_params(params, config)
    self.tokenizer = tokenizer
    self.config = config
    self.max_len = max_len
    self.batch_size = batch_size
    self.params = nn.unbox(params)
    self._model = RewardModel(config)

  def score_pairs(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
    """Logits float32 [K] of K (prompt, completion) pairs."""
    tokens, lengths = encode_pairs(self.tokenizer, prompts, completions, self.max_len)
    count = len(tokens)
    padded = -count % self.batch_size
    # Filler rows (one BOS token each) keep every batch the same shape; their scores are dropped.
    tokens = np.concatenate([tokens, np.full((padded, self.max_len), self.tokenizer.bos_id,
                                             np.int32)])
    lengths = np.concatenate([lengths, np.ones(padded, np.int32)])
    scores = [reward_logits(self._model, self.params, tokens[i:i + self.batch_size],
                            lengths[i:i + self.batch_size])
              for i in range(0, len(tokens), self.batch_size)]
    return np.asarray(jnp.concatenate(scores), np.float32)[:count]

  def _score_batch(self, prompts: list[str], completions: list[list[str]],
                   metadata: list[dict[str, Any]]) -> np.ndarray:
    num_samples = len(completions[0])
    flat_prompts = [p for p, cs in zip(prompts, completions) for _ in cs]
    flat_completions = [c for cs in completions for c in cs]
    if not flat_completions:
      return np.zeros((len(prompts), 0), np.float32)
    return self.score_pairs(flat_prompts, flat_completions).reshape(len(prompts), num_samples)
