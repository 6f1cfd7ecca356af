"""Multi-head / multi-query / grouped-query self-attention with RoPE and an optional KV cache.

Shapes use one-letter axis names: B batch, L query length, S key length (the whole cache when
decoding), D embed_dim, N query heads, K key/value heads, G = N // K query heads per KV head,
H head_dim. Query heads are grouped as [K, G] so that GQA never materializes repeated keys or
values: the einsums contract each group of G query heads against its one shared KV head. Keys and
values are laid out [B, K, S, H], as in the cache, so the attention einsums read the cache as it
is stored. A shared prefix (see cache.py) has Bp rows of P slots, each continued by M = B // Bp
rows: its einsums group the batch as [Bp, M].
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from bonjax.models import layers
from bonjax.models.config import GLOBAL, TransformerConfig

LayerCache = dict[str, jax.Array]  # {'k': [B, K, S, H], 'v': [B, K, S, H]}

# Masked logits get the most negative finite float32, not -inf: a row with no visible key (a
# padding query) then gets a uniform distribution instead of NaNs that would leak into gradients.
_MASKED = float(jnp.finfo(jnp.float32).min)


class Attention(nn.Module):
  """Self-attention over the current tokens, or over a KV cache they are first written into.

  `attention_type` ('global' / 'local') selects the layer's RoPE (config.rope); its mask comes
  from the caller.
  """

  config: TransformerConfig
  attention_type: str = GLOBAL

  @nn.compact
  def __call__(
      self,
      x: jax.Array,
      positions: jax.Array,
      mask: jax.Array,
      layer_cache: LayerCache | None = None,
      cache_index: jax.Array | None = None,
      prefix: LayerCache | None = None,
      prefix_mask: jax.Array | None = None,
  ) -> tuple[jax.Array, LayerCache | None]:
    """Attends x [B, L, D] at positions [B, L] under mask [B, L, S] (True = may attend).

    Without a cache, S = L and keys/values come from x. With a cache, this chunk's keys and values
    are first written at slots [cache_index, cache_index + L), then all S cache slots are the keys.
    A shared prefix {'k', 'v'}: [Bp, K, P, H] (B = Bp * M, rows b * M + j read prefix row b) adds
    P more keys in front, under prefix_mask [B, L, P]; one softmax spans prefix and cache.
    Returns the output [B, L, D] and the updated layer cache (None without a cache).
    """
    cfg = self.config
    dtype = cfg.dtype
    num_groups = cfg.num_heads // cfg.num_kv_heads

    def kernel(name, shape, names, in_axes, out_axes):
      init = nn.with_logical_partitioning(layers.kernel_init(in_axes, out_axes), names)
      return self.param(name, init, shape, cfg.param_dtype).astype(dtype)

    w_q = kernel('q', (cfg.embed_dim, cfg.num_heads, cfg.head_dim),
                 ('embed', 'heads', 'head_dim'), (0,), (1, 2))
    w_k = kernel('k', (cfg.embed_dim, cfg.num_kv_heads, cfg.head_dim),
                 ('embed', 'kv_heads', 'head_dim'), (0,), (1, 2))
    w_v = kernel('v', (cfg.embed_dim, cfg.num_kv_heads, cfg.head_dim),
                 ('embed', 'kv_heads', 'head_dim'), (0,), (1, 2))
    w_o = kernel('o', (cfg.num_heads, cfg.head_dim, cfg.embed_dim),
                 ('heads', 'head_dim', 'embed'), (0, 1), (2,))

    def bias(name, shape, names):
      init = nn.with_logical_partitioning(nn.initializers.zeros_init(), names)
      return self.param(name, init, shape, cfg.param_dtype).astype(dtype)

    q = jnp.einsum('BLD,DNH->BLNH', x, w_q)
    k = jnp.einsum('BLD,DKH->BLKH', x, w_k)
    v = jnp.einsum('BLD,DKH->BLKH', x, w_v)
    if cfg.attention_bias:
      q += bias('q_bias', (cfg.num_heads, cfg.head_dim), ('heads', 'head_dim'))
      k += bias('k_bias', (cfg.num_kv_heads, cfg.head_dim), ('kv_heads', 'head_dim'))
      v += bias('v_bias', (cfg.num_kv_heads, cfg.head_dim), ('kv_heads', 'head_dim'))
    q = nn.with_logical_constraint(q, ('batch', 'length', 'heads', 'head_dim'))
    # Keys/values stay unconstrained: with few KV heads (MQA) the 'kv_heads' dimension may not
    # divide the tensor-parallel axis, and the compiler places them well from the weights.
    if cfg.qk_norm:  # Each head normalized on its own, before RoPE (Gemma 3, Qwen3).
      head_norm = lambda name: layers.RMSNorm(cfg.norm_eps, cfg.param_dtype, cfg.norm_unit_offset,
                                              'head_dim', name=name)
      q, k = head_norm('q_norm')(q), head_norm('k_norm')(k)

    rope_base, rope_scaling = cfg.rope(self.attention_type)
    q = layers.apply_rope(q, positions, rope_base, rope_scaling) * jnp.asarray(cfg.query_scale,
                                                                               dtype)
    k = layers.apply_rope(k, positions, rope_base, rope_scaling)
    k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, K, L, H]: only this chunk moves.

    new_cache = None
    if layer_cache is not None:
      # Write this chunk into the cache in place (no concatenation: shapes stay static for jit and
      # XLA can update the buffer without copying it), then attend over every slot.
      start = (0, 0, cache_index, 0)
      k_all = jax.lax.dynamic_update_slice(layer_cache['k'], k.astype(layer_cache['k'].dtype), start)
      v_all = jax.lax.dynamic_update_slice(layer_cache['v'], v.astype(layer_cache['v'].dtype), start)
      new_cache = {'k': k_all, 'v': v_all}
      k, v = k_all.astype(dtype), v_all.astype(dtype)

    batch, length = x.shape[:2]
    q = q.reshape(batch, length, cfg.num_kv_heads, num_groups, cfg.head_dim)
    logits = jnp.einsum('BLKGH,BKSH->BKGLS', q, k, preferred_element_type=jnp.float32)
    if prefix is not None:
      # The M rows of a prefix row meet its keys in one [M * L * G, H] x [H, P] product per head.
      num_prefixes, prefix_len = prefix['k'].shape[0], prefix['k'].shape[2]
      grouped_q = q.reshape((num_prefixes, batch // num_prefixes) + q.shape[1:])
      prefix_logits = jnp.einsum('BMLKGH,BKPH->BMKGLP', grouped_q, prefix['k'].astype(dtype),
                                 preferred_element_type=jnp.float32)
      logits = jnp.concatenate([prefix_logits.reshape(logits.shape[:-1] + (prefix_len,)),
                                logits], axis=-1)
      mask = jnp.concatenate([prefix_mask, mask], axis=-1)
    logits = layers.softcap(logits, cfg.attn_logits_softcap)
    logits = jnp.where(mask[:, None, None, :, :], logits, _MASKED)
    probs = jax.nn.softmax(logits, axis=-1).astype(dtype)

    if prefix is None:
      encoded = jnp.einsum('BKGLS,BKSH->BLKGH', probs, v)
    else:
      prefix_probs = probs[..., :prefix_len].reshape(
          (num_prefixes, batch // num_prefixes) + probs.shape[1:-1] + (prefix_len,))
      encoded = jnp.einsum('BKGLS,BKSH->BLKGH', probs[..., prefix_len:], v)
      encoded += jnp.einsum('BMKGLP,BKPH->BMLKGH', prefix_probs,
                            prefix['v'].astype(dtype)).reshape(encoded.shape)
    encoded = encoded.reshape(batch, length, cfg.num_heads, cfg.head_dim)
    out = jnp.einsum('BLNH,NHD->BLD', encoded, w_o)
    if cfg.attention_bias:
      out += bias('o_bias', (cfg.embed_dim,), ('embed',))
    return out, new_cache


def attention_mask(query_positions: jax.Array, key_positions: jax.Array,
                   sliding_window: int | None = None,
                   segment_ids: jax.Array | None = None) -> jax.Array:
  """Which keys each query may attend to: bool [B, L, S].

  A query at position q sees a key at position p iff the key is real (p >= 0; padding and empty
  cache slots carry -1), not in the future (p <= q) and, for sliding-window layers, recent enough
  (q - p < sliding_window). With segment_ids [B, L] (only without a cache, so S = L), a query
  also sees only keys of its own segment: sequences packed into one row stay independent.
  """
  q = query_positions[:, :, None]
  p = key_positions[:, None, :]
  mask = (p >= 0) & (p <= q)
  if sliding_window is not None:
    mask &= q - p < sliding_window
  if segment_ids is not None:
    mask &= segment_ids[:, :, None] == segment_ids[:, None, :]
  return mask
