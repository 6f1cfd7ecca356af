"""The KV cache for incremental decoding: a plain dict pytree of arrays.

    {'index':     int32 []             next slot to write (shared by all rows),
     'positions': int32 [B, S]         position of the token in each slot, -1 if empty/padding,
     'layers':    [{'k': [B, K, S, H], 'v': [B, K, S, H]}, ...]   one entry per layer}

Every leaf but 'index' has the batch as its leading axis, so caches can be repeated, sliced and
sharded along the batch like any other batch of data. Keys and values are stored head-major
([B, K, S, H], K = num_kv_heads): each head's slots are contiguous rows, so decoding attends over
the cache with batched matrix-vector products that read it in place, with no per-step transpose.
Keys are stored after RoPE, so a cached slot never needs to be touched again. The cache does not
wrap around: it must hold every token written to it (prompt + generated), including on
sliding-window layers.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from bonjax.models.config import TransformerConfig

Cache = dict[str, Any]


def init_cache(config: TransformerConfig, batch_size: int, cache_len: int,
               dtype: Any = jnp.float32) -> Cache:
  """An empty cache for `batch_size` rows of up to `cache_len` tokens, keys/values in `dtype`."""
  if batch_size <= 0 or cache_len <= 0:
    raise ValueError(f'batch_size and cache_len must be positive, got {batch_size}, {cache_len}')
  kv_shape = (batch_size, config.num_kv_heads, cache_len, config.head_dim)
  return {
      'index': jnp.zeros((), jnp.int32),
      'positions': jnp.full((batch_size, cache_len), -1, jnp.int32),
      'layers': [{'k': jnp.zeros(kv_shape, dtype), 'v': jnp.zeros(kv_shape, dtype)}
                 for _ in range(config.num_layers)],
  }


def repeat_cache(cache: Cache, n: int) -> Cache:
  """Repeats every row n times: [B, ...] -> [B * n, ...]; row b * n + j is copy j of row b.

  Used to prefill each prompt once and then decode n samples from it.
  """
  if n <= 0:
    raise ValueError(f'n must be positive, got {n}')
  repeat = lambda x: jnp.repeat(x, n, axis=0)
  return {
      'index': cache['index'],
      'positions': repeat(cache['positions']),
      'layers': jax.tree.map(repeat, cache['layers']),
  }


def cache_logical_axes(cache: Cache) -> Cache:
  """Logical axis names of every cache leaf (a tree of tuples), for `bonjax.sharding`."""
  kv = ('batch', 'kv_heads', 'length', 'head_dim')
  return {
      'index': (),
      'positions': ('batch', 'length'),
      'layers': [{'k': kv, 'v': kv} for _ in cache['layers']],
  }
