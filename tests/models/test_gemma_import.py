"""Tests for bonjax/models/gemma_import.py.

The `gemma` library is not installed here, so `_reference_logits` is an independent numpy forward
of the official layout (following google-deepmind/gemma's gm/nn/_modules.py): it reads the
checkpoint tree in its own orientation (q_einsum [N, D, H], gating_einsum [2, F, D] ...) and uses
the padded embedding table, so every transpose and slice the importer does is checked against it.
"""

import dataclasses
import functools

import chex
import jax
import numpy as np
import pytest

from bonjax import models
from bonjax.models import gemma_import
from bonjax.models.config import GLOBAL, LOCAL

_VOCAB_PADDING = 8  # extra embedding rows, like the official 256,128 for a 256,000 vocabulary


def _gelu_tanh(x):
  return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def _rms_norm(x, scale, eps=1e-6):
  return x / np.sqrt(np.mean(x**2, axis=-1, keepdims=True) + eps) * (1 + scale)


def _rope(x, positions, base=10_000):
  """Gemma's RoPE on x [B, T, N, H]: the two halves of H rotate as (real, imaginary)."""
  half = x.shape[-1] // 2
  timescale = base ** (2 * np.arange(half) / x.shape[-1])
  angles = positions[..., None, None] / timescale  # [B, T, 1, H/2]
  first, second = x[..., :half], x[..., half:]
  return np.concatenate(
      [first * np.cos(angles) - second * np.sin(angles),
       second * np.cos(angles) + first * np.sin(angles)], axis=-1)


def _softcap(x, cap):
  return x if cap is None else cap * np.tanh(x / cap)


def _reference_logits(tree, cfg, tokens, *, transpose_gating):
  """Official-layout forward in float64 numpy; returns logits over the padded vocabulary."""
  t = tree['transformer']
  batch, length = tokens.shape
  positions = np.broadcast_to(np.arange(length), (batch, length))
  x = t['embedder']['input_embedding'][tokens] * np.sqrt(cfg.embed_dim)
  causal = positions[:, None, :] <= positions[:, :, None]  # [B, T, S]
  for i, attention_type in enumerate(cfg.layer_attention_types):
    p = t[f'layer_{i}']
    h = _rms_norm(x, p['pre_attention_norm']['scale'])
    if 'qkv_einsum' in p['attn']:
      q, k, v = np.einsum('BTD,SNDH->SBTNH', h, p['attn']['qkv_einsum']['w'])
    else:
      q = np.einsum('BTD,NDH->BTNH', h, p['attn']['q_einsum']['w'])
      k, v = np.einsum('BSD,CKDH->CBSKH', h, p['attn']['kv_einsum']['w'])
    q = _rope(q, positions) * cfg.query_scale
    k = _rope(k, positions)
    groups = cfg.num_heads // cfg.num_kv_heads
    k, v = np.repeat(k, groups, axis=2), np.repeat(v, groups, axis=2)
    logits = _softcap(np.einsum('BTNH,BSNH->BTNS', q, k), cfg.attn_logits_softcap)
    mask = causal
    if attention_type == LOCAL:
      mask = mask & (positions[:, None, :] > positions[:, :, None] - cfg.sliding_window)
    logits = np.where(mask[:, :, None, :], logits, -1e30)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    out = np.einsum('BTNS,BSNH->BTNH', probs, v)
    out = np.einsum('BTNH,NHD->BTD', out, p['attn']['attn_vec_einsum']['w'])
    if cfg.use_post_attn_norm:
      out = _rms_norm(out, p['post_attention_norm']['scale'])
    x = x + out
    h = _rms_norm(x, p['pre_ffw_norm']['scale'])
    eq = '...F,NHF->...NH' if transpose_gating else '...F,NFH->...NH'
    gate = np.einsum(eq, h, p['mlp']['gating_einsum'])
    h = _gelu_tanh(gate[..., 0, :]) * gate[..., 1, :]
    out = h @ p['mlp']['linear']
    if cfg.use_post_ffw_norm:
      out = _rms_norm(out, p['post_ffw_norm']['scale'])
    x = x + out
  x = _rms_norm(x, t['final_norm']['scale'])
  return _softcap(x @ t['embedder']['input_embedding'].T, cfg.final_logits_softcap)


def _gemma_tree(cfg, *, transpose_gating, seed=0):
  """A random checkpoint in the official nested layout ({'transformer': ...})."""
  rng = np.random.default_rng(seed)
  d, n, k, h, f = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.mlp_dim

  def normal(*shape, scale=None):
    scale = scale if scale is not None else shape[-2] ** -0.5 if len(shape) > 1 else 0.1
    return (rng.standard_normal(shape) * scale).astype(np.float32)

  t = {'embedder': {'input_embedding': normal(cfg.vocab_size + _VOCAB_PADDING, d, scale=1.0)},
       'final_norm': {'scale': normal(d)}}
  for i in range(cfg.num_layers):
    attn = {'attn_vec_einsum': {'w': normal(n, h, d, scale=(n * h) ** -0.5)}}
    if n == k:
      attn['qkv_einsum'] = {'w': normal(3, n, d, h, scale=d**-0.5)}
    else:
      attn['q_einsum'] = {'w': normal(n, d, h, scale=d**-0.5)}
      attn['kv_einsum'] = {'w': normal(2, k, d, h, scale=d**-0.5)}
    gating_shape = (2, f, d) if transpose_gating else (2, d, f)
    layer = {
        'pre_attention_norm': {'scale': normal(d)},
        'attn': attn,
        'pre_ffw_norm': {'scale': normal(d)},
        'mlp': {'gating_einsum': normal(*gating_shape, scale=d**-0.5),
                'linear': normal(f, d, scale=f**-0.5)},
    }
    if cfg.use_post_attn_norm:
      layer['post_attention_norm'] = {'scale': normal(d)}
    if cfg.use_post_ffw_norm:
      layer['post_ffw_norm'] = {'scale': normal(d)}
    t[f'layer_{i}'] = layer
  return {'transformer': t}


def _flatten_released(tree):
  """The flat structure of the released checkpoints: one '/'-keyed entry per module."""
  flat = {}

  def visit(node, path):
    if all(isinstance(v, np.ndarray) for v in node.values()):
      flat['/'.join(path)] = dict(node)
      return
    for key, value in node.items():
      if isinstance(value, np.ndarray):  # mlp/gating_einsum, mlp/linear: keep a 'w' level
        flat['/'.join(path + [key])] = {'w': value}
      else:
        visit(value, path + [key])

  visit(tree['transformer'], ['transformer'])
  return flat


_TINY = dataclasses.replace(models.get_config('tiny'), vocab_size=64, num_layers=2)
_GEMMA1_MQA = dataclasses.replace(_TINY, num_kv_heads=1)
_GEMMA1_MHA = dataclasses.replace(_TINY, num_kv_heads=_TINY.num_heads)
_GEMMA2 = dataclasses.replace(
    _TINY, num_layers=3, query_pre_attn_scalar=24, attn_logits_softcap=50.0,
    final_logits_softcap=30.0, attention_types=(LOCAL, GLOBAL), sliding_window=3,
    use_post_attn_norm=True, use_post_ffw_norm=True)


@functools.lru_cache(maxsize=None)
def _jitted_apply(cfg):
  return jax.jit(models.Transformer(cfg).apply)


def _bonjax_logits(cfg, params, tokens):
  return np.asarray(_jitted_apply(cfg)({'params': params}, tokens))


_TOKENS = np.random.default_rng(1).integers(0, 64, size=(2, 7)).astype(np.int32)


@pytest.mark.parametrize(
    'cfg, transpose_gating, flat',
    [(_GEMMA1_MQA, False, False), (_GEMMA1_MHA, False, True), (_GEMMA2, True, True),
     (_GEMMA2, True, False)],
    ids=['gemma1_mqa_nested', 'gemma1_mha_qkv_flat', 'gemma2_gqa_flat', 'gemma2_gqa_nested'])
def test_imported_logits_match_reference_forward(cfg, transpose_gating, flat):
  tree = _gemma_tree(cfg, transpose_gating=transpose_gating)
  source = _flatten_released(tree) if flat else tree
  params = gemma_import.convert_gemma_params(source, cfg)
  expected = _reference_logits(tree, cfg, _TOKENS, transpose_gating=transpose_gating)
  assert expected.shape[-1] == cfg.vocab_size + _VOCAB_PADDING
  np.testing.assert_allclose(
      _bonjax_logits(cfg, params, _TOKENS), expected[..., : cfg.vocab_size], atol=1e-4, rtol=1e-4)


def test_load_from_orbax_directory_drops_vocab_padding(tmp_path):
  import orbax.checkpoint as ocp

  tree = _gemma_tree(_GEMMA2, transpose_gating=True)
  checkpointer = ocp.PyTreeCheckpointer()
  checkpointer.save(tmp_path / 'flat', _flatten_released(tree))
  params = models.load_gemma_checkpoint(tmp_path / 'flat', _GEMMA2)  # the public entry point
  assert params['embedder']['embedding'].shape == (_GEMMA2.vocab_size, _GEMMA2.embed_dim)
  np.testing.assert_array_equal(
      params['embedder']['embedding'],
      tree['transformer']['embedder']['input_embedding'][: _GEMMA2.vocab_size])
  direct = gemma_import.convert_gemma_params(tree, _GEMMA2)
  chex.assert_trees_all_equal(params, direct)
  chex.assert_trees_all_equal_shapes_and_dtypes(
      params, gemma_import.expected_param_shapes(_GEMMA2))


def test_preset_name_selects_config(tmp_path):
  import orbax.checkpoint as ocp

  tiny = models.get_config('tiny')
  ocp.PyTreeCheckpointer().save(tmp_path / 'nested', _gemma_tree(tiny, transpose_gating=False))
  params = gemma_import.load_gemma_checkpoint(tmp_path / 'nested', 'tiny')
  chex.assert_trees_all_equal_shapes_and_dtypes(params, gemma_import.expected_param_shapes(tiny))
  with pytest.raises(ValueError, match='unknown model preset'):
    gemma_import.load_gemma_checkpoint(tmp_path / 'nested', 'gemma_3b')


def test_missing_directory_raises():
  with pytest.raises(FileNotFoundError, match='No Gemma checkpoint directory'):
    gemma_import.load_gemma_checkpoint('/nonexistent/gemma', 'tiny')


def test_missing_and_misshapen_parameters_are_named():
  tree = _gemma_tree(_GEMMA1_MQA, transpose_gating=False)
  del tree['transformer']['layer_1']['attn']['kv_einsum']
  with pytest.raises(gemma_import.CheckpointFormatError,
                     match="no parameter 'layer_1/attn/kv_einsum/w'"):
    gemma_import.convert_gemma_params(tree, _GEMMA1_MQA)

  tree = _gemma_tree(_GEMMA1_MQA, transpose_gating=False)
  with pytest.raises(gemma_import.CheckpointFormatError,
                     match=r"'layer_0/attn/q_einsum/w' has shape \(4, 64, 16\), but the config"
                           r' needs \(8, 64, 16\)'):
    gemma_import.convert_gemma_params(tree, dataclasses.replace(_GEMMA1_MQA, num_heads=8))


def test_too_small_vocabulary_and_unused_parameters_are_errors():
  tree = _gemma_tree(_GEMMA1_MQA, transpose_gating=False)
  with pytest.raises(gemma_import.CheckpointFormatError, match='input_embedding has shape'):
    gemma_import.convert_gemma_params(tree, dataclasses.replace(_GEMMA1_MQA, vocab_size=100))
  with pytest.raises(gemma_import.CheckpointFormatError, match=r"does not use .*'layer_1/attn"):
    gemma_import.convert_gemma_params(tree, dataclasses.replace(_GEMMA1_MQA, num_layers=1))
  tree['transformer']['layer_0']['attn']['_query_norm'] = {'scale': np.ones(16, np.float32)}
  with pytest.raises(gemma_import.CheckpointFormatError, match='layer_0/attn/_query_norm/scale'):
    gemma_import.convert_gemma_params(tree, _GEMMA1_MQA)  # a Gemma 3 style QK-norm


def test_expected_param_shapes_allocates_nothing_for_gemma_2b():
  shapes = gemma_import.expected_param_shapes(models.get_config('gemma_2b'))
  assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(shapes))
  assert shapes['embedder']['embedding'].shape == (256_000, 2048)
