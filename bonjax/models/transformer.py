"""The decoder-only transformer (Gemma 1/2/3, Llama 3, Qwen3), its parameter count and FLOPs.

    tokens -> embed [* sqrt(D)] -> num_layers x Block -> RMSNorm -> @ (un)embedding.T
           -> (softcap) logits

    Block(x) = x + [post_attn_norm](Attention(pre_attention_norm(x)))
             then  + [post_ffw_norm](GeGLU or SwiGLU(pre_ffw_norm(x)))

The families differ only in config options (config.py): which norms exist and their gain form,
query/key norms, per-layer-type RoPE, the MLP activation, embedding scaling, tying and biases.

One module serves training (the whole sequence at once) and decoding (through a KV cache); both
paths share the weights and the masking rule (`attention.attention_mask`).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bonjax.models import layers
from bonjax.models import params as params_lib
from bonjax.models.attention import Attention, LayerCache, attention_mask
from bonjax.models.cache import Cache
from bonjax.models.config import GLOBAL, LOCAL, TransformerConfig


class Block(nn.Module):
  """One pre-norm transformer layer: attention then gated MLP, each added to the residual."""

  config: TransformerConfig
  attention_type: str = GLOBAL

  @nn.compact
  def __call__(self, x: jax.Array, positions: jax.Array, mask: jax.Array,
               layer_cache: LayerCache | None, cache_index: jax.Array | None,
               prefix: LayerCache | None = None, prefix_mask: jax.Array | None = None
               ) -> tuple[jax.Array, LayerCache | None]:
    cfg = self.config
    norm = functools.partial(layers.RMSNorm, eps=cfg.norm_eps, param_dtype=cfg.param_dtype,
                             unit_offset=cfg.norm_unit_offset)

    h = norm(name='pre_attention_norm')(x)
    h, layer_cache = Attention(cfg, self.attention_type, name='attn')(
        h, positions, mask, layer_cache, cache_index, prefix, prefix_mask)
    if cfg.use_post_attn_norm:
      h = norm(name='post_attention_norm')(h)
    x = x + h

    h = norm(name='pre_ffw_norm')(x)
    h = layers.FeedForward(cfg.embed_dim, cfg.mlp_dim, cfg.dtype, cfg.param_dtype, cfg.activation,
                           name='mlp')(h)
    if cfg.use_post_ffw_norm:
      h = norm(name='post_ffw_norm')(h)
    x = x + h
    return nn.with_logical_constraint(x, ('batch', 'length', 'embed')), layer_cache


def _scanned_blocks(cfg: TransformerConfig, layer_params: list[Any], x: jax.Array,
                    positions: jax.Array, masks: dict[str, jax.Array],
                    layer_caches: list[LayerCache] | None = None, start: jax.Array | None = None,
                    prefix_layers: list[LayerCache] | None = None,
                    prefix_masks: dict[str, jax.Array] | None = None
                    ) -> tuple[jax.Array, list[LayerCache] | None]:
  """The blocks of a remat training forward as one `lax.scan` over periods of the layer pattern.

  Each period's params are stacked along a new leading axis and the scan body, rematerialized,
  applies one period. Unrolled, a compiler may keep every layer's FSDP-gathered weights and
  recomputed activations alive from the forward into the backward (XLA does); in a scan the
  backward is a loop that recomputes one period at a time, gathers included, so one period's
  weights and activations are live at once. Same ops, same values as the unrolled blocks.
  With `layer_caches` (and a shared prefix's layers), the layers write their keys and values
  into them and read the prefix, as the unrolled blocks do; returns the written caches.
  """
  period = len(cfg.attention_types)
  blocks = [Block(cfg, t, parent=None) for t in cfg.attention_types]
  by_period = lambda layers: [jax.tree.map(lambda *leaves: jnp.stack(leaves), *layers[j::period])
                              for j in range(period)]
  xs = tuple(None if layers is None else by_period(layers)
             for layers in (layer_params, layer_caches, prefix_layers))

  @functools.partial(jax.checkpoint, prevent_cse=False)  # a scan body needs no CSE barrier
  def body(x, inputs):
    params, caches, prefixes = inputs
    written = []
    for j, (block, t) in enumerate(zip(blocks, cfg.attention_types)):
      prefix_args = () if prefixes is None else (prefixes[j], prefix_masks[t])
      x, cache = block.apply({'params': params[j]}, x, positions, masks[t],
                             None if caches is None else caches[j], start, *prefix_args)
      written.append(cache)
    return x, None if caches is None else written

  x, written = jax.lax.scan(body, x, xs)
  if written is None:
    return x, None
  return x, [jax.tree.map(lambda a: a[i // period], written[i % period])
             for i in range(cfg.num_layers)]


class Transformer(nn.Module):
  """Decoder-only transformer; `__call__` documents the calling convention.

  Parameters: {'embedder': {'embedding': [V, D], ['unembedding': [V, D]]},
               'layer_{i}': {'pre_attention_norm', 'attn': {'q', 'k', 'v', 'o', ['q_norm',
                             'k_norm'], ['q_bias', 'k_bias', 'v_bias', 'o_bias']},
                             ['post_attention_norm'], 'pre_ffw_norm',
                             'mlp': {'gate', 'up', 'down'}, ['post_ffw_norm']},
               'final_norm': {'scale': [D]}}
  with q [D, N, H], k and v [D, K, H], o [N, H, D], gate and up [D, F], down [F, D], every norm
  {'scale': [D]} ([H] for q_norm / k_norm; applied as 1 + scale, or as scale when not
  config.norm_unit_offset), biases [N, H], [K, H], [K, H], [D]; bracketed ones only when the
  config asks for them (tie_embeddings=False, qk_norm, attention_bias, the post-norms).

  scan_layers: with config.remat, a training forward (no cache) runs its layers as one
  `lax.scan` over periods of the layer pattern (`_scanned_blocks`): the same values, with one
  period's activations and gathered weights live at a time instead of every layer's. The params
  stay one subtree per layer either way. False unrolls the layers (`bonjax plan` counts FLOPs
  on the unrolled program, since XLA's cost analysis counts a loop body once).
  """

  config: TransformerConfig
  scan_layers: bool = True

  @property
  def scans(self) -> bool:
    """Whether its training forward scans over the layers (see the class docstring)."""
    cfg = self.config
    return self.scan_layers and cfg.remat and cfg.num_layers % len(cfg.attention_types) == 0

  @nn.compact
  def __call__(
      self,
      tokens: jax.Array,
      positions: jax.Array | None = None,
      input_mask: jax.Array | None = None,
      cache: Cache | None = None,
      return_hidden: bool = False,
      segment_ids: jax.Array | None = None,
      scan_cache: bool = False,
  ) -> jax.Array | tuple[jax.Array, Cache]:
    """Runs the model on tokens int32 [B, L].

    Args:
      tokens: token ids [B, L].
      positions: position of each token [B, L] (RoPE and causal order). Defaults to
        arange(L), offset by cache['index'] when a cache is given (and, with a shared prefix, by
        one past the row's last prefix position).
      input_mask: bool [B, L], False for padding tokens, which are never attended to. Defaults to
        all True.
      cache: None for the training forward; otherwise a cache from `init_cache` (or
        `share_prefix`) into which the tokens are written at slots [cache['index'],
        cache['index'] + L). Tokens also attend to the cache's shared prefix, if it has one.
      return_hidden: return the final-normed hidden states [B, L, embed_dim] (what the
        output projection reads) instead of the logits, e.g. for a reward model's scalar head.
      segment_ids: int32 [B, L] for packed rows (training forward only, no cache): a token
        attends only to earlier tokens of the same segment id, so several sequences packed into
        one row (each with positions restarting at 0) are computed as if run alone. None: one
        sequence per row.
      scan_cache: with a cache, still scan the layers as the training forward does (when the
        model scans): for a cached forward that is differentiated (`bonjax.train.logprobs`),
        not for decoding, whose every step would restack the layers' params.

    Returns:
      float32 logits [B, L, vocab_size] (or the hidden states); with a cache, (that, updated cache).
    """
    cfg = self.config
    batch, length = tokens.shape
    if segment_ids is not None:
      if cache is not None:
        raise ValueError('segment_ids is for the training forward of packed rows; it cannot be'
                         ' combined with a cache (decode one sequence per row instead)')
      if segment_ids.shape != tokens.shape:
        raise ValueError(f'segment_ids has shape {segment_ids.shape}, but tokens have shape'
                         f' {tokens.shape}')
    start = jnp.zeros((), jnp.int32) if cache is None else cache['index']
    prefix = None if cache is None else cache.get('prefix')
    if prefix is not None:
      num_prefixes = prefix['positions'].shape[0]
      if batch % num_prefixes:
        raise ValueError(f'a cache of {batch} rows cannot share a prefix of {num_prefixes} rows: '
                         f'each prefix row must have the same number of rows continuing it')
      prefix_positions = jnp.repeat(prefix['positions'], batch // num_prefixes, axis=0)
    if positions is None:
      positions = jnp.broadcast_to(start + jnp.arange(length, dtype=jnp.int32), (batch, length))
      if prefix is not None:
        positions = positions + jnp.max(prefix_positions, axis=1, keepdims=True) + 1
    if input_mask is None:
      input_mask = jnp.ones((batch, length), jnp.bool_)
    token_positions = jnp.where(input_mask, positions, -1)

    if cache is None:
      key_positions = token_positions
    else:
      key_positions = jax.lax.dynamic_update_slice(cache['positions'], token_positions, (0, start))
    # One mask per attention type, shared by all layers of that type.
    windows = {t: cfg.sliding_window if t == LOCAL else None for t in cfg.layer_attention_types}
    masks = {t: attention_mask(positions, key_positions, w, segment_ids)
             for t, w in windows.items()}
    if prefix is not None:
      prefix_masks = {t: attention_mask(positions, prefix_positions, w) for t, w in windows.items()}

    embedder = _embedder(cfg)
    x = embedder.encode(tokens)
    x = nn.with_logical_constraint(x, ('batch', 'length', 'embed'))

    block_cls = nn.remat(Block) if cfg.remat else Block
    new_layer_caches = []
    # A remat training forward scans its layers (_scanned_blocks); initialization creates the
    # params through the modules, and decoding (a cache) runs them one by one.
    scan = self.scans and (cache is None or scan_cache) and not self.is_initializing()
    if scan:
      x, new_layer_caches = _scanned_blocks(
          cfg, [self.variables['params'][f'layer_{i}'] for i in range(cfg.num_layers)], x,
          positions, masks, None if cache is None else cache['layers'],
          None if cache is None else start, None if prefix is None else prefix['layers'],
          None if prefix is None else prefix_masks)
    for i, attention_type in enumerate(() if scan else cfg.layer_attention_types):
      layer_cache = None if cache is None else cache['layers'][i]
      prefix_args = () if prefix is None else (prefix['layers'][i], prefix_masks[attention_type])
      x, layer_cache = block_cls(cfg, attention_type, name=f'layer_{i}')(
          x, positions, masks[attention_type], layer_cache, None if cache is None else start,
          *prefix_args)
      new_layer_caches.append(layer_cache)

    x = layers.RMSNorm(cfg.norm_eps, cfg.param_dtype, cfg.norm_unit_offset, name='final_norm')(x)
    logits = x if return_hidden else _output_logits(cfg, embedder, x)

    if cache is None:
      return logits
    new_cache = dict(cache, index=start + length, positions=key_positions, layers=new_layer_caches)
    return logits, new_cache


def _embedder(cfg: TransformerConfig) -> layers.Embedder:
  return layers.Embedder(cfg.vocab_size, cfg.embed_dim, cfg.dtype, cfg.param_dtype,
                         cfg.scale_embeddings, cfg.tie_embeddings, name='embedder')


def _output_logits(cfg: TransformerConfig, embedder: layers.Embedder,
                   hidden: jax.Array) -> jax.Array:
  logits = layers.softcap(embedder.decode(hidden).astype(jnp.float32), cfg.final_logits_softcap)
  return nn.with_logical_constraint(logits, ('batch', 'length', 'vocab'))


def unembed(model: Transformer, params: Any, hidden: jax.Array) -> jax.Array:
  """The logits of final hidden states (`return_hidden=True`): f32 [B, L, vocab_size].

  `model.apply(params, tokens)` equals `unembed(model, params, model.apply(params, tokens,
  return_hidden=True))`. Scoring only some positions (a completion after a long prompt) this way
  projects just those onto the vocabulary, where the logits of every position would be the
  step's largest buffer.
  """
  embedder = _embedder(model.config)
  return embedder.apply({'params': params['embedder']}, hidden,
                        method=lambda module, x: _output_logits(model.config, module, x))


@functools.lru_cache(maxsize=None)
def param_count(config: TransformerConfig) -> int:
  """Number of parameters, from shapes alone (`jax.eval_shape`: nothing is allocated)."""
  return sum(leaf.size for leaf in jax.tree.leaves(params_lib.abstract_params(Transformer(config))))


def flops_per_token(config: TransformerConfig, seq_len: int) -> float:
  """Training FLOPs (forward + backward) per token for sequences of `seq_len` tokens.

  6 * N + 12 * sum over layers of (num_heads * head_dim * context), as in the PaLM paper
  (Chowdhery et al. 2022, appendix B): N parameters cost 2 FLOPs each per token forward and 4
  backward; the attention scores and the weighted sum of values each cost 2 * N*H * context per
  token forward, tripled for the backward. N includes the output projection (the embedding
  table when tied) but not an untied input embedding table, which is only looked up; the
  context is seq_len (not halved for causality, as in PaLM) and at most sliding_window on local
  layers.
  """
  if seq_len <= 0:
    raise ValueError(f'seq_len must be positive, got {seq_len}')
  attention = 0
  for attention_type in config.layer_attention_types:
    context = seq_len if attention_type != LOCAL else min(seq_len, config.sliding_window)
    attention += 12 * config.num_heads * config.head_dim * context
  matmul_params = param_count(config)
  if not config.tie_embeddings:
    matmul_params -= config.vocab_size * config.embed_dim
  return float(6 * matmul_params + attention)
