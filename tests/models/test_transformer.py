"""Tests of the transformer: forward == cached decoding, padding, shapes, counts and FLOPs."""

import dataclasses
import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bonjax import models

TINY = models.get_config('tiny')
# Gemma 2 features switched on, with a window (3) much shorter than the test sequences (9).
GEMMA2_STYLE = dict(attention_types=('local', 'global'), sliding_window=3, attn_logits_softcap=5.0,
                    final_logits_softcap=3.0, use_post_attn_norm=True, use_post_ffw_norm=True,
                    query_pre_attn_scalar=24)
# Gemma 3: query/key norms, local and global layers with their own RoPE bases, linearly scaled
# global RoPE, no soft-caps (2 layers, not the 5 : 1 pattern, to compile fast).
GEMMA3_STYLE = dict(attention_types=('local', 'global'), sliding_window=3,
                    use_post_attn_norm=True, use_post_ffw_norm=True, query_pre_attn_scalar=24,
                    qk_norm=True, rope_base=1e6, local_rope_base=1e4,
                    rope_scaling=models.RopeScaling('linear', 8.0))
# Llama 3 / Qwen3: SwiGLU, plain norm gains, no embedding scaling, an untied head, attention
# biases, query/key norms and llama3 RoPE scaling all at once.
LLAMA_STYLE = dict(activation='silu', norm_unit_offset=False, scale_embeddings=False,
                   tie_embeddings=False, attention_bias=True, qk_norm=True, rope_base=5e5,
                   rope_scaling=models.RopeScaling('llama3', 32.0))
CONFIGS = {
    f'{kind}{"-gemma2" if gemma2 else ""}': dataclasses.replace(
        TINY, num_kv_heads=kv_heads, **(GEMMA2_STYLE if gemma2 else {}))
    for kind, kv_heads in (('mha', 4), ('gqa', 2), ('mqa', 1))
    for gemma2 in (False, True)
}
CONFIGS['gqa-gemma3'] = dataclasses.replace(TINY, **GEMMA3_STYLE)
CONFIGS['mqa-llama'] = dataclasses.replace(TINY, num_kv_heads=1, **LLAMA_STYLE)


@functools.lru_cache(maxsize=None)
def _init(cfg, seed=0):
  """(model, random params) for cfg, drawn with numpy from the abstract param shapes.

  Compiling `model.init` costs seconds on a CPU (the PRNG unrolls per parameter); numpy draws
  cost nothing. Kernels get fan-in scaled values and the norm scales non-zero ones, so that a
  mixed-up norm or projection changes the logits.
  """
  model = models.Transformer(cfg)
  shapes = nn.unbox(jax.eval_shape(model.init, jax.random.key(0),
                                   jnp.zeros((1, 1), jnp.int32))['params'])
  rng = np.random.default_rng(seed)

  def draw(path, x):
    name = path[-1].key
    if name == 'scale':  # Around the identity gain: 0 for (1 + scale) norms, 1 for plain ones.
      return jnp.asarray(rng.normal(0.0 if cfg.norm_unit_offset else 1.0, 0.1, x.shape), x.dtype)
    std = 1.0 if 'embedding' in name else 0.1 if name.endswith('bias') else x.shape[0] ** -0.5
    return jnp.asarray(rng.normal(0.0, std, x.shape), x.dtype)

  return model, jax.tree_util.tree_map_with_path(draw, shapes)


@functools.lru_cache(maxsize=None)
def _jit_apply(cfg):
  """One jitted apply per config, so its compilations are reused across tests."""
  return jax.jit(models.Transformer(cfg).apply)


def _tokens(shape, seed=1, vocab=TINY.vocab_size):
  return jax.random.randint(jax.random.key(seed), shape, 0, vocab, dtype=jnp.int32)


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_forward_equals_prefill_then_decode(name):
  cfg = CONFIGS[name]
  _, params = _init(cfg)
  batch, prompt_len, total = 2, 4, 9
  tokens = _tokens((batch, total))
  apply = _jit_apply(cfg)

  full_logits = apply({'params': params}, tokens)

  cache = models.init_cache(cfg, batch, cache_len=total + 2)
  logits, cache = apply({'params': params}, tokens[:, :prompt_len], cache=cache)
  step_logits = [logits]
  for t in range(prompt_len, total):
    logits, cache = apply({'params': params}, tokens[:, t:t + 1], cache=cache)
    step_logits.append(logits)

  chex.assert_shape(full_logits, (batch, total, cfg.vocab_size))
  chex.assert_trees_all_close(jnp.concatenate(step_logits, axis=1), full_logits, atol=1e-5,
                              rtol=1e-5)
  assert int(cache['index']) == total


@pytest.mark.parametrize('name', ['gqa', 'mqa-gemma2', 'mqa-llama'])
def test_right_padded_prompts_of_different_lengths_decode_like_unpadded(name):
  cfg = CONFIGS[name]
  _, params = _init(cfg)
  apply = _jit_apply(cfg)
  prompt_lens, padded_len, new_tokens = np.array([5, 2, 4]), 5, 4
  batch = len(prompt_lens)
  rows = [np.asarray(_tokens((n + new_tokens,), seed=10 + b)) for b, n in enumerate(prompt_lens)]

  prompts = np.zeros((batch, padded_len), np.int32)
  for b, n in enumerate(prompt_lens):
    prompts[b, :n] = rows[b][:n]
  input_mask = np.arange(padded_len)[None] < prompt_lens[:, None]
  cache = models.init_cache(cfg, batch, padded_len + new_tokens)
  prefill_logits, cache = apply({'params': params}, jnp.asarray(prompts),
                                input_mask=jnp.asarray(input_mask), cache=cache)
  decode_logits = []
  for t in range(new_tokens):
    step = np.array([[rows[b][n + t]] for b, n in enumerate(prompt_lens)], np.int32)
    logits, cache = apply({'params': params}, jnp.asarray(step),
                          positions=jnp.asarray(prompt_lens[:, None] + t), cache=cache)
    decode_logits.append(logits[:, 0])

  # The reference: each whole row, right-padded into one batch (padding is shown not to matter
  # by test_padding_tokens_do_not_affect_real_logits).
  full = np.zeros((batch, padded_len + new_tokens), np.int32)
  for b, row in enumerate(rows):
    full[b, :len(row)] = row
  full_mask = np.arange(full.shape[1])[None] < (prompt_lens + new_tokens)[:, None]
  reference = apply({'params': params}, jnp.asarray(full), input_mask=jnp.asarray(full_mask))
  for b, n in enumerate(prompt_lens):
    expected = reference[b]
    chex.assert_trees_all_close(prefill_logits[b, :n], expected[:n], atol=1e-5, rtol=1e-5)
    got = jnp.stack([step[b] for step in decode_logits])
    chex.assert_trees_all_close(got, expected[n:n + new_tokens], atol=1e-5, rtol=1e-5)


def test_padding_tokens_do_not_affect_real_logits():
  cfg = CONFIGS['gqa-gemma2']
  _, params = _init(cfg)
  apply = _jit_apply(cfg)
  real = _tokens((1, 6))
  mask = jnp.array([[True] * 6 + [False] * 3])
  pad_a = jnp.concatenate([real, jnp.zeros((1, 3), jnp.int32)], axis=1)
  pad_b = jnp.concatenate([real, _tokens((1, 3), seed=7)], axis=1)

  expected = apply({'params': params}, real)
  for padded in (pad_a, pad_b):
    logits = apply({'params': params}, padded, input_mask=mask)
    chex.assert_trees_all_close(logits[:, :6], expected, atol=1e-5, rtol=1e-5)
    assert jnp.all(jnp.isfinite(logits))


@pytest.mark.parametrize('name', ['gqa', 'mqa-gemma2'])
def test_packed_segments_compute_as_if_each_ran_alone(name):
  """A row packing three sequences (positions restarting at 0, then padding), laid out as
  `data.batching.sft_batch` does, gives each sequence the logits it gets unpacked."""
  cfg = CONFIGS[name]
  _, params = _init(cfg)
  apply = _jit_apply(cfg)
  lengths, row_len = [4, 5, 2], 13
  sequences = [_tokens((1, n), seed=20 + i) for i, n in enumerate(lengths)]
  padding = row_len - sum(lengths)
  tokens = jnp.concatenate(sequences + [jnp.zeros((1, padding), jnp.int32)], axis=1)
  segment_ids = jnp.asarray(np.repeat([1, 2, 3, 0], lengths + [padding]))
  positions = jnp.asarray(
      np.concatenate([np.arange(n) for n in lengths] + [np.zeros(padding, int)]), jnp.int32)
  packed = apply({'params': params}, tokens, positions=positions[None],
                 input_mask=segment_ids[None] > 0, segment_ids=segment_ids[None])

  start = 0
  for sequence, n in zip(sequences, lengths):
    alone = apply({'params': params}, sequence)
    chex.assert_trees_all_close(packed[:, start:start + n], alone, atol=1e-5, rtol=1e-5)
    start += n
  # Without segment ids the later sequences see the earlier ones: the test can fail.
  unmasked = apply({'params': params}, tokens, positions=positions[None],
                   input_mask=segment_ids[None] > 0)
  assert not np.allclose(unmasked[:, lengths[0]:sum(lengths)],
                         packed[:, lengths[0]:sum(lengths)], atol=1e-3)


def test_segment_ids_with_a_cache_or_of_the_wrong_shape_raise():
  cfg = CONFIGS['gqa']
  model, params = _init(cfg)
  tokens = _tokens((2, 4))
  with pytest.raises(ValueError, match='segment_ids.*cannot be combined with a cache'):
    model.apply({'params': params}, tokens, cache=models.init_cache(cfg, 2, 4),
                segment_ids=jnp.ones((2, 4), jnp.int32))
  with pytest.raises(ValueError, match=r'segment_ids has shape \(2, 3\)'):
    model.apply({'params': params}, tokens, segment_ids=jnp.ones((2, 3), jnp.int32))


def test_return_hidden_gives_the_states_the_tied_projection_reads():
  cfg = CONFIGS['gqa']
  model, params = _init(cfg)
  tokens = _tokens((2, 5))
  hidden = model.apply({'params': params}, tokens, return_hidden=True)
  chex.assert_shape(hidden, (2, 5, cfg.embed_dim))
  logits = hidden @ params['embedder']['embedding'].T
  chex.assert_trees_all_close(logits, _jit_apply(cfg)({'params': params}, tokens), atol=1e-5,
                              rtol=1e-5)


@pytest.mark.parametrize('name', ['gqa-gemma2', 'mqa-llama'])
def test_unembed_of_the_hidden_states_is_the_forward(name):
  """Soft-capped (Gemma 2) and untied (Llama) heads: unembed applies them as the forward does."""
  cfg = CONFIGS[name]
  model, params = _init(cfg)
  tokens = _tokens((2, 5))
  hidden = model.apply({'params': params}, tokens, return_hidden=True)
  chex.assert_trees_all_close(models.unembed(model, params, hidden[:, 1:3]),
                              model.apply({'params': params}, tokens)[:, 1:3], atol=1e-6,
                              rtol=1e-6)


@pytest.mark.parametrize('name', ['gqa-gemma2', 'mqa-llama'])
def test_a_remat_forward_scans_its_layers_with_the_unrolled_values_and_gradients(name):
  """Gemma 2's local/global pair is scanned as one period; a depth it does not divide unrolls."""
  cfg = dataclasses.replace(CONFIGS[name], num_layers=4, remat=True)
  scanned = models.Transformer(cfg)
  unrolled = scanned.clone(scan_layers=False)
  assert scanned.scans and not unrolled.scans
  assert models.Transformer(dataclasses.replace(cfg, num_layers=3)).scans == (
      len(cfg.attention_types) == 1)
  _, params = _init(dataclasses.replace(cfg, remat=False))
  tokens = _tokens((2, 7))

  def value_and_grad(model):
    loss = lambda p: jnp.sum(jnp.sin(model.apply({'params': p}, tokens)))
    return jax.jit(jax.value_and_grad(loss))(params)

  # The same ops; XLA fuses the loop body differently, so f32 sums differ in the last bits.
  chex.assert_trees_all_close(value_and_grad(scanned), value_and_grad(unrolled), atol=1e-4,
                              rtol=1e-4)


def test_repeat_cache_gives_each_copy_the_same_continuation():
  cfg = CONFIGS['mqa']
  _, params = _init(cfg)
  apply = _jit_apply(cfg)
  cache = models.init_cache(cfg, 2, 8)
  _, cache = apply({'params': params}, _tokens((2, 3)), cache=cache)
  repeated = models.repeat_cache(cache, 3)
  chex.assert_shape(repeated['positions'], (6, 8))
  chex.assert_shape(repeated['layers'][0]['k'], (6, cfg.num_kv_heads, 8, cfg.head_dim))
  assert int(repeated['index']) == 3

  next_tokens = _tokens((2, 1), seed=3)
  logits, _ = apply({'params': params}, next_tokens, cache=cache)
  repeated_logits, _ = apply({'params': params}, jnp.repeat(next_tokens, 3, axis=0),
                             cache=repeated)
  chex.assert_trees_all_close(repeated_logits, jnp.repeat(logits, 3, axis=0), atol=1e-6)


@pytest.mark.parametrize('name', ['gqa', 'mqa-gemma2', 'gqa-gemma3'])
def test_a_shared_prefix_decodes_as_its_repeated_copy_would(name):
  """share_prefix(prefix, n) == repeat_cache(prefix, n), for one-token and chunked steps and
  across grow_cache; with a sliding window shorter than the prefix on gemma2-style layers."""
  cfg = CONFIGS[name]
  _, params = _init(cfg)
  apply = _jit_apply(cfg)
  num_prompts, n, prompt_len = 2, 3, 5
  lengths = jnp.array([5, 2])  # Right-padded: the second prompt's padding must stay unseen.
  prefix = models.init_cache(cfg, num_prompts, prompt_len)
  _, prefix = apply({'params': params}, _tokens((num_prompts, prompt_len)), cache=prefix,
                    input_mask=jnp.arange(prompt_len) < lengths[:, None])
  repeated = models.grow_cache(models.repeat_cache(prefix, n), prompt_len + 4)
  shared = models.share_prefix(prefix, n, 2)
  chex.assert_shape(shared['layers'][0]['k'], (num_prompts * n, cfg.num_kv_heads, 2, cfg.head_dim))
  assert shared['prefix']['layers'][0]['k'] is prefix['layers'][0]['k']  # Referenced, not copied.

  rows = num_prompts * n
  positions = jnp.repeat(lengths, n)[:, None]
  for step, chunk in enumerate([1, 1, 2]):
    if step == 2:
      shared = models.grow_cache(shared, 4)
    tokens = _tokens((rows, chunk), seed=10 + step)
    chunk_positions = positions + jnp.arange(chunk)
    want, repeated = apply({'params': params}, tokens, positions=chunk_positions, cache=repeated)
    # Positions default to continuing each row's prefix.
    got, shared = apply({'params': params}, tokens, cache=shared)
    chex.assert_trees_all_close(got, want, atol=1e-5, rtol=1e-5)
    positions = positions + chunk
  with pytest.raises(ValueError, match='cannot share a prefix of 2 rows'):
    apply({'params': params}, _tokens((5, 1)), cache=models.share_prefix(prefix, 1, 2) | {
        'positions': jnp.full((5, 2), -1), 'layers': models.init_cache(cfg, 5, 2)['layers']})


def test_positions_drive_rope_and_causality():
  # Shifting every position by a constant leaves the logits unchanged (RoPE is relative), while
  # a different causal order (reversed positions) changes them.
  cfg = CONFIGS['gqa']
  _, params = _init(cfg)
  apply = _jit_apply(cfg)
  tokens = _tokens((1, 6))
  base = apply({'params': params}, tokens)
  shifted = apply({'params': params}, tokens, positions=jnp.arange(6)[None] + 11)
  chex.assert_trees_all_close(shifted, base, atol=1e-4, rtol=1e-4)
  reversed_order = apply({'params': params}, tokens, positions=jnp.arange(6)[None, ::-1])
  assert not np.allclose(reversed_order, base, atol=1e-3)


def test_bfloat16_activations_run_and_return_float32_logits():
  cfg = dataclasses.replace(TINY, dtype=jnp.bfloat16, remat=True)
  assert cfg.dtype == 'bfloat16'
  model, params = _init(cfg)
  tokens = _tokens((2, 5))
  logits = jax.jit(model.apply)({'params': params}, tokens)
  assert logits.dtype == jnp.float32
  f32_logits = jax.jit(models.Transformer(dataclasses.replace(cfg, dtype='float32')).apply)(
      {'params': params}, tokens)
  chex.assert_trees_all_close(logits, f32_logits, atol=0.1, rtol=0.1)
  grads = jax.jit(jax.grad(lambda p: model.apply({'params': p}, tokens).mean()))(params)
  assert all(jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads))


def test_params_and_activations_carry_logical_axis_names():
  cfg = CONFIGS['gqa-gemma2']
  boxed = jax.eval_shape(models.Transformer(cfg).init, jax.random.key(0),
                         jnp.zeros((1, 2), jnp.int32))['params']
  specs = nn.get_partition_spec(boxed)
  assert specs['embedder']['embedding'] == jax.sharding.PartitionSpec('vocab', 'embed')
  assert specs['layer_0']['attn']['q'] == jax.sharding.PartitionSpec('embed', 'heads', 'head_dim')
  assert specs['layer_0']['attn']['k'] == jax.sharding.PartitionSpec(
      'embed', 'kv_heads', 'head_dim')
  assert specs['layer_1']['mlp']['down'] == jax.sharding.PartitionSpec('mlp', 'embed')
  assert specs['layer_1']['post_ffw_norm']['scale'] == jax.sharding.PartitionSpec('embed')
  every_leaf_named = jax.tree.leaves(
      jax.tree.map(lambda x: isinstance(x, nn.LogicallyPartitioned), boxed,
                   is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned)))
  assert all(every_leaf_named)


# Published parameter counts (Hugging Face model cards / `model.num_parameters()` of the
# google/gemma-2b, gemma-7b, gemma-2-2b and gemma-2-9b releases, vocabulary 256,000, tied
# embeddings counted once).
PUBLISHED_PARAM_COUNTS = {
    'gemma_2b': 2_506_172_416,
    'gemma_7b': 8_537_680_896,
    'gemma2_2b': 2_614_341_888,
    'gemma2_9b': 9_241_705_984,
    # The newer families: `num_parameters()` of the transformers model (Gemma3ForCausalLM,
    # Qwen3ForCausalLM, LlamaForCausalLM) built from each release's config.json (the URLs are
    # in bonjax/models/config.py; text_config for Gemma 3 4B / 12B, whose cards count the
    # vision tower too), tied embeddings counted once. They agree with the model cards: Gemma 3
    # 1B "1B"; Qwen3 "0.6B" (0.44B without embeddings), "1.7B", "4.0B", "8.2B"; Llama 3.2 "1.23B",
    # "3.21B"; Llama 3.1 "8.03B".
    'gemma3_1b': 999_885_952,
    'gemma3_4b': 3_880_263_168,
    'gemma3_12b': 11_766_034_176,
    'qwen3_0_6b': 596_049_920,
    'qwen3_1_7b': 1_720_574_976,
    'qwen3_4b': 4_022_468_096,
    'qwen3_8b': 8_190_735_360,
    'llama3_2_1b': 1_235_814_400,
    'llama3_2_3b': 3_212_749_824,
    'llama3_1_8b': 8_030_261_248,
}


@pytest.mark.parametrize('name', sorted(PUBLISHED_PARAM_COUNTS))
def test_presets_have_the_published_parameter_counts(name):
  assert models.param_count(models.get_config(name)) == PUBLISHED_PARAM_COUNTS[name]


def test_small_preset_is_in_the_cpu_experiment_range():
  assert 10e6 <= models.param_count(models.get_config('small')) <= 30e6


def test_gemma_2b_builds_abstractly_without_allocating():
  cfg = models.get_config('gemma_2b')
  before = sum(x.nbytes for x in jax.live_arrays())
  shapes = jax.eval_shape(models.Transformer(cfg).init, jax.random.key(0),
                          jnp.zeros((1, 8), jnp.int32))
  leaves = jax.tree.leaves(nn.unbox(shapes))
  assert all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)
  assert sum(x.size for x in leaves) == 2_506_172_416
  # Nothing close to the 10 GB of float32 weights was allocated.
  assert sum(x.nbytes for x in jax.live_arrays()) - before < 1e6


def test_flops_per_token_formula():
  cfg = models.get_config('gemma_2b')
  n = models.param_count(cfg)
  assert models.flops_per_token(cfg, 1024) == 6 * n + 12 * 18 * 8 * 256 * 1024
  # Local layers see at most the window: beyond it, only global layers grow with seq_len.
  g2 = models.get_config('gemma2_2b')
  grow = models.flops_per_token(g2, 8192) - models.flops_per_token(g2, 4096)
  assert grow == 12 * 13 * 8 * 256 * 4096
  # An untied input table is only looked up: its parameters cost no matmul FLOPs.
  qwen = models.get_config('qwen3_8b')
  assert models.flops_per_token(qwen, 1) == (
      6 * (models.param_count(qwen) - 151_936 * 4096) + 12 * 36 * 32 * 128)
  with pytest.raises(ValueError, match='seq_len'):
    models.flops_per_token(cfg, 0)
