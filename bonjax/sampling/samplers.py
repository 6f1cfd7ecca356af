"""Token samplers: small frozen pytrees that turn f32 logits into a distribution and draw from it.

Every sampler maps logits `[B, ..., V]` (B prompts; any middle axes, e.g. the N samples of each
prompt) to the log-probabilities of the distribution it samples from: temperature first, then the
filter, then renormalisation. Float parameters (temperature, p, min_p) may be Python floats or `[B]`
arrays, one value per prompt, so a single `generate` call can sweep temperatures. They are pytree
leaves: changing their values never re-traces a jitted caller; only the sampler's type and its
static fields (top-k's `k`) are part of the compiled signature.
"""

from __future__ import annotations

import numbers
from typing import Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

Scalar = Union[float, jax.Array, np.ndarray]

_NEG_INF = -jnp.inf


def _concrete_values(value) -> np.ndarray | None:
  """Returns `value` as a numpy array if it is known now (not a tracer or placeholder)."""
  if isinstance(value, numbers.Real) and not isinstance(value, bool):
    return np.asarray(value, np.float64)
  if isinstance(value, np.ndarray) or (
      isinstance(value, jax.Array) and not isinstance(value, jax.core.Tracer)):
    return np.asarray(value)
  return None


def _check_range(sampler: str, name: str, value, low: float, high: float,
                 low_inclusive: bool) -> None:
  """Raises ValueError unless every known value of `value` lies in its documented range."""
  values = _concrete_values(value)
  if values is None:
    return
  if values.ndim > 1:
    raise ValueError(f'{sampler}.{name} must be a scalar or a [batch] vector, got shape '
                     f'{values.shape}.')
  above_low = values >= low if low_inclusive else values > low
  if not (np.all(above_low) and np.all(values <= high)):
    bracket = '[' if low_inclusive else '('
    raise ValueError(f'{sampler}.{name} must lie in {bracket}{low}, {high}], got {values}.')


def _per_prompt(value: Scalar, logits: jax.Array) -> jax.Array:
  """Reshapes a scalar or `[B]` parameter so that it broadcasts against logits `[B, ..., V]`."""
  value = jnp.asarray(value, jnp.float32)
  if value.ndim == 0:
    return value
  if value.ndim != 1 or value.shape[0] != logits.shape[0]:
    raise ValueError(f'A per-prompt sampler parameter must be a scalar or have shape '
                     f'[{logits.shape[0]}] (one value per prompt), got shape {value.shape}.')
  return value.reshape(value.shape + (1,) * (logits.ndim - 1))


def _argmax_log_probs(logits: jax.Array) -> jax.Array:
  """The log-probabilities of a point mass on the argmax: 0 there, -inf elsewhere."""
  best = jnp.argmax(logits, axis=-1)
  return jnp.where(jax.nn.one_hot(best, logits.shape[-1], dtype=bool), 0.0, _NEG_INF)


def tempered_log_probs(logits: jax.Array, temperature: Scalar) -> jax.Array:
  """`log_softmax(logits / temperature)`; a temperature of exactly 0 means greedy (a point mass)."""
  logits = logits.astype(jnp.float32)
  if isinstance(temperature, numbers.Real):
    if temperature == 0:
      return _argmax_log_probs(logits)
    return jax.nn.log_softmax(logits / temperature, axis=-1)
  temperature = _per_prompt(temperature, logits)
  is_greedy = temperature == 0
  scaled = jax.nn.log_softmax(logits / jnp.where(is_greedy, 1.0, temperature), axis=-1)
  return jnp.where(is_greedy, _argmax_log_probs(logits), scaled)


def token_log_probs(log_probs: jax.Array, tokens: jax.Array) -> jax.Array:
  """The log-probabilities `[...]` of `tokens [...]` under `log_probs [..., V]`."""
  return jnp.take_along_axis(log_probs, tokens[..., None].astype(jnp.int32), axis=-1)[..., 0]


def _renormalise(log_probs: jax.Array, keep: jax.Array) -> jax.Array:
  """Drops the tokens outside `keep` and renormalises the rest."""
  kept = jnp.where(keep, log_probs, _NEG_INF)
  return kept - jax.nn.logsumexp(kept, axis=-1, keepdims=True)


def categorical(keys: jax.Array, log_probs: jax.Array) -> jax.Array:
  """Draws one token per row, each row with its own key: keys `[...]`, log_probs `[..., V]`.

  Inverts the row's CDF with one uniform u: the token is the first whose cumulative probability
  exceeds u * total. One random number per row: Gumbel-max needs V of them, which cost ~0.8 ms of
  a ~10 ms small-model decode step on a CPU. The law is the same up to float32 resolution (u lies
  on a 2^-23 grid, so a token's probability is realised to within about 1e-7). Tokens of
  probability 0 (filtered, log-probability -inf) never come out: with exact sums they own an empty
  interval of the CDF, and should rounding of the cumulative sum ever land u on one (or past the
  end), the row's most likely token is returned instead.
  """
  log_probs = log_probs.astype(jnp.float32)
  probs = jnp.exp(log_probs - jnp.max(log_probs, axis=-1, keepdims=True))
  cdf = jnp.cumsum(probs, axis=-1)
  uniform = jax.vmap(jax.random.uniform)(keys.reshape(-1)).reshape(keys.shape)
  threshold = uniform[..., None] * cdf[..., -1:]
  tokens = jnp.minimum(jnp.sum(cdf <= threshold, axis=-1), log_probs.shape[-1] - 1)
  drawn_prob = jnp.take_along_axis(probs, tokens[..., None], axis=-1)[..., 0]
  tokens = jnp.where(drawn_prob > 0, tokens, jnp.argmax(log_probs, axis=-1))
  return tokens.astype(jnp.int32)


class Sampler(struct.PyTreeNode):
  """Base class of the samplers.

  A subclass defines `log_probs(logits [B, ..., V]) -> [B, ..., V]`: the f32 log-probabilities of
  the distribution it samples from (-inf on filtered tokens); `sample` draws from it.
  """

  def sample(self, keys: jax.Array, logits: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Draws tokens `[B, ...]` (one key per row in `keys [B, ...]`) and returns their log-probs."""
    log_probs = self.log_probs(logits)
    tokens = categorical(keys, log_probs)
    return tokens, token_log_probs(log_probs, tokens)


class Greedy(Sampler):
  """Always the most likely token (the first on ties); its log-probability is 0 (a point mass)."""

  def log_probs(self, logits: jax.Array) -> jax.Array:
    return _argmax_log_probs(logits.astype(jnp.float32))

  def sample(self, keys: jax.Array, logits: jax.Array) -> tuple[jax.Array, jax.Array]:
    del keys  # Deterministic.
    tokens = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return tokens, jnp.zeros(tokens.shape, jnp.float32)


class Temperature(Sampler):
  """Ancestral sampling from `softmax(logits / temperature)`; temperature 0 is greedy."""

  temperature: Scalar = 1.0

  def __post_init__(self):
    _check_range('Temperature', 'temperature', self.temperature, 0.0, np.inf, True)

  def log_probs(self, logits: jax.Array) -> jax.Array:
    return tempered_log_probs(logits, self.temperature)


class TopK(Sampler):
  """Samples among the `k` most likely tokens (exactly k; ties broken towards lower ids)."""

  k: int = struct.field(pytree_node=False, default=50)
  temperature: Scalar = 1.0

  def __post_init__(self):
    if isinstance(self.k, bool) or not isinstance(self.k, numbers.Integral) or self.k < 1:
      raise ValueError(f'TopK.k must be a positive int, got {self.k!r}.')
    _check_range('TopK', 'temperature', self.temperature, 0.0, np.inf, True)

  def log_probs(self, logits: jax.Array) -> jax.Array:
    vocab_size = logits.shape[-1]
    if self.k > vocab_size:
      raise ValueError(f'TopK.k={self.k} exceeds the vocabulary size {vocab_size}.')
    log_probs = tempered_log_probs(logits, self.temperature)
    _, top_ids = jax.lax.top_k(log_probs, self.k)
    keep = jnp.put_along_axis(jnp.zeros(log_probs.shape, bool), top_ids, True, axis=-1,
                              inplace=False)
    return _renormalise(log_probs, keep)


class TopP(Sampler):
  """Nucleus sampling: the smallest set of most likely tokens whose mass reaches `p`.

  A token is kept iff the mass of the tokens ranked strictly before it is below `p` (so the most
  likely token is always kept); tokens tied with the least likely kept token are kept too. Costs
  one sort of the vocabulary per step.
  """

  p: Scalar = 0.95
  temperature: Scalar = 1.0

  def __post_init__(self):
    _check_range('TopP', 'p', self.p, 0.0, 1.0, False)
    _check_range('TopP', 'temperature', self.temperature, 0.0, np.inf, True)

  def log_probs(self, logits: jax.Array) -> jax.Array:
    log_probs = tempered_log_probs(logits, self.temperature)
    probs = jnp.exp(log_probs)
    descending = -jnp.sort(-probs, axis=-1)
    mass_before = jnp.cumsum(descending, axis=-1) - descending
    in_nucleus = mass_before < _per_prompt(self.p, logits)
    threshold = jnp.min(jnp.where(in_nucleus, descending, jnp.inf), axis=-1, keepdims=True)
    return _renormalise(log_probs, probs >= threshold)


class MinP(Sampler):
  """Keeps the tokens whose probability is at least `min_p` times that of the most likely one."""

  min_p: Scalar = 0.1
  temperature: Scalar = 1.0

  def __post_init__(self):
    _check_range('MinP', 'min_p', self.min_p, 0.0, 1.0, True)
    _check_range('MinP', 'temperature', self.temperature, 0.0, np.inf, True)

  def log_probs(self, logits: jax.Array) -> jax.Array:
    log_probs = tempered_log_probs(logits, self.temperature)
    best = jnp.max(log_probs, axis=-1, keepdims=True)
    # In log space: log p >= log(min_p) + log p_max; log(0) = -inf keeps everything.
    return _renormalise(log_probs, log_probs >= jnp.log(_per_prompt(self.min_p, logits)) + best)


class ValidTokens(Sampler):
  """`sampler` restricted to the ids [0, vocab_size): for a model whose embedding table is larger
  than its tokenizer's vocabulary (padded vocabularies), so no sample holds an id it cannot decode.
  """

  sampler: Sampler = struct.field(default_factory=Temperature)
  vocab_size: int = struct.field(pytree_node=False, default=0)

  def __post_init__(self):
    if not isinstance(self.vocab_size, int) or self.vocab_size < 1:
      raise ValueError(f'ValidTokens.vocab_size must be a positive int, got {self.vocab_size!r}.')

  def _restrict(self, logits: jax.Array) -> jax.Array:
    valid = jnp.arange(logits.shape[-1]) < self.vocab_size
    return jnp.where(valid, logits.astype(jnp.float32), _NEG_INF)

  def log_probs(self, logits: jax.Array) -> jax.Array:
    return self.sampler.log_probs(self._restrict(logits))

  def sample(self, keys: jax.Array, logits: jax.Array) -> tuple[jax.Array, jax.Array]:
    return self.sampler.sample(keys, self._restrict(logits))
