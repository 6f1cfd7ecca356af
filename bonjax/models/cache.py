"""The KV cache for incremental decoding: a plain dict pytree of arrays.

    {'index':     int32 []             next slot to write (shared by all rows),
     'positions': int32 [B, S]         position of the token in each slot, -1 if empty/padding,
     'layers':    [{'k': [B, K, S, H], 'v': [B, K, S, H]}, ...]   one entry per layer,
     'prefix':    optional, a shared prefix (below)}

A cache may carry a read-only *shared prefix*, {'positions': [Bp, P], 'layers': [{'k', 'v'}:
[Bp, K, P, H]]} with B = Bp * n: rows b * n .. b * n + n - 1 all continue prefix row b. Attention
reads the prefix's keys and values once per prefix row (a matrix product over the n rows) instead
of once per row, and they are stored once: this is how N samples of one prompt share its prefill
(`share_prefix`).

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
  return _empty_cache(kv_shape, config.num_layers, dtype)


def _empty_cache(kv_shape: tuple[int, int, int, int], num_layers: int, dtype: Any) -> Cache:
  batch_size, _, cache_len, _ = kv_shape
  return {
      'index': jnp.zeros((), jnp.int32),
      'positions': jnp.full((batch_size, cache_len), -1, jnp.int32),
      'layers': [{'k': jnp.zeros(kv_shape, dtype), 'v': jnp.zeros(kv_shape, dtype)}
                 for _ in range(num_layers)],
  }


def repeat_cache(cache: Cache, n: int) -> Cache:
  """Repeats every row n times: [B, ...] -> [B * n, ...]; row b * n + j is copy j of row b.

  A shared prefix stays as it is (each copy continues the same prefix row). `share_prefix` is the
  cheaper way to decode n samples from one prefill.
  """
  if n <= 0:
    raise ValueError(f'n must be positive, got {n}')
  repeat = lambda x: jnp.repeat(x, n, axis=0)
  return dict(cache, positions=repeat(cache['positions']),
              layers=jax.tree.map(repeat, cache['layers']))


def share_prefix(prefix: Cache, n: int, cache_len: int) -> Cache:
  """A cache of `cache_len` empty slots for n rows per row of `prefix`, which they all continue.

  `prefix` is a filled cache (e.g. the prefill of B prompts); its keys and values become the
  shared prefix of the new cache's B * n rows (row b * n + j continues prefix row b), referenced
  rather than copied n times. New tokens are written from slot 0 of the rows' own slots; their
  positions continue the prefix's.
  """
  if n <= 0 or cache_len <= 0:
    raise ValueError(f'n and cache_len must be positive, got {n}, {cache_len}')
  if 'prefix' in prefix:
    raise ValueError('share_prefix: the cache already has a shared prefix')
  batch_size, num_kv_heads, _, head_dim = prefix['layers'][0]['k'].shape
  kv_shape = (batch_size * n, num_kv_heads, cache_len, head_dim)
  cache = _empty_cache(kv_shape, len(prefix['layers']), prefix['layers'][0]['k'].dtype)
  cache['prefix'] = {'positions': prefix['positions'], 'layers': prefix['layers']}
  return cache


def grow_cache(cache: Cache, cache_len: int) -> Cache:
  """The same cache with its rows' own slots extended to `cache_len` (new slots are empty).

  Lets a decode loop attend over only as many slots as it has filled so far, growing the cache
  in a few steps instead of allocating (and reading) the longest length from the start.
  """
  extra = cache_len - cache['positions'].shape[1]
  if extra < 0:
    raise ValueError(f'grow_cache: cannot shrink a cache of {cache["positions"].shape[1]} slots '
                     f'to {cache_len}')
  pad_kv = lambda x: jnp.pad(x, ((0, 0), (0, 0), (0, extra), (0, 0)))
  return dict(cache, positions=jnp.pad(cache['positions'], ((0, 0), (0, extra)),
                                       constant_values=-1),
              layers=jax.tree.map(pad_kv, cache['layers']))


def cache_logical_axes(cache: Cache) -> Cache:
  """Logical axis names of every cache leaf (a tree of tuples), for `bonjax.sharding`."""
  kv = ('batch', 'kv_heads', 'length', 'head_dim')
  axes = {
      'index': (),
      'positions': ('batch', 'length'),
      'layers': [{'k': kv, 'v': kv} for _ in cache['layers']],
  }
  if 'prefix' in cache:
    axes['prefix'] = {'positions': ('batch', 'length'),
                      'layers': [{'k': kv, 'v': kv} for _ in cache['prefix']['layers']]}
  return axes
