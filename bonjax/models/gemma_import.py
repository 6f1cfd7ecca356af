"""Import of the official Gemma Flax checkpoints (google-deepmind/gemma layout).

The official parameter tree (``gemma.gm.nn.Transformer``, and ``gemma.transformer`` before it):

    embedder/input_embedding                      [V_padded, D]
    layer_{i}/pre_attention_norm/scale            [D]            applied as (1 + scale)
    layer_{i}/attn/q_einsum/w                     [N, D, H]      when K != N (GQA, MQA)
    layer_{i}/attn/kv_einsum/w                    [2, K, D, H]   (k, v) stacked
    layer_{i}/attn/qkv_einsum/w                   [3, N, D, H]   (q, k, v) when K == N
    layer_{i}/attn/attn_vec_einsum/w              [N, H, D]
    layer_{i}/post_attention_norm/scale           [D]            Gemma 2 only
    layer_{i}/pre_ffw_norm/scale                  [D]
    layer_{i}/mlp/gating_einsum                   [2, D, F] (Gemma 1) or [2, F, D] (Gemma 2,
                                                  "transpose_gating_einsum"); index 0 is the
                                                  GELU-gated branch, index 1 the linear one
    layer_{i}/mlp/linear                          [F, D]
    layer_{i}/post_ffw_norm/scale                 [D]            Gemma 2 only
    final_norm/scale                              [D]

Checkpoints come in two structures, both accepted:

- nested dicts as above (``{'transformer': {...}}`` or the transformer's tree itself);
- the flat structure of the released checkpoints: one entry per module with '/'-joined keys,
  ``{'transformer/layer_0/attn/q_einsum': {'w': ...}, 'transformer/layer_0/mlp/linear': {'w':
  ...}, 'transformer/embedder': {'input_embedding': ...}, ...}``.

Vocabulary padding: the official embedding tables have 256,128 rows, the tokenizer (and the
Hugging Face release, and bonjax's presets) 256,000. The extra 128 rows are padding no token id
reaches; they are dropped, keeping the first ``config.vocab_size`` rows. A table with fewer rows
than the config's vocabulary is an error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bonjax.models.config import TransformerConfig, get_config
from bonjax.models.params import abstract_params, compare_trees
from bonjax.models.transformer import Transformer

Params = dict[str, Any]


class CheckpointFormatError(ValueError):
  """An external checkpoint is missing a tensor or holds one of the wrong shape."""


def expected_param_shapes(config: TransformerConfig) -> Params:
  """The bonjax parameter tree for `config` as ShapeDtypeStructs (nothing is allocated)."""
  return abstract_params(Transformer(config))


def check_param_shapes(params: Params, config: TransformerConfig) -> None:
  """Raises CheckpointFormatError unless `params` has exactly the tree and shapes of `config`."""
  diff = compare_trees(expected_param_shapes(config), params)
  problems = [f'missing {diff.missing}'] if diff.missing else []
  problems += [f'unexpected {diff.unexpected}'] if diff.unexpected else []
  problems += [f'{path} has shape {got}, the config needs {want}'
               for path, want, got in diff.misshapen]
  if problems:
    raise CheckpointFormatError(
        'Converted parameters do not fit the model config: ' + '; '.join(problems))


def _unflatten_released_layout(tree: Mapping[str, Any]) -> dict[str, Any]:
  """{'transformer/layer_0/attn/q_einsum': {'w': x}} -> {'layer_0': {'attn': {'q_einsum': ...}}}."""
  nested: dict[str, Any] = {}
  for key, value in tree.items():
    parts = key.split('/')
    if parts[0] != 'transformer':
      continue  # e.g. a multimodal encoder's parameters: not part of the text model
    node = nested
    for part in parts[1:-1]:
      node = node.setdefault(part, {})
    node[parts[-1]] = value
  return nested


def _transformer_tree(tree: Mapping[str, Any]) -> Mapping[str, Any]:
  """The nested transformer parameter tree, whichever supported structure `tree` uses."""
  if 'params' in tree and isinstance(tree['params'], Mapping):
    tree = tree['params']
  if any('/' in key for key in tree):
    return _unflatten_released_layout(tree)
  if 'transformer' in tree:
    return tree['transformer']
  return tree


def _leaf_paths(tree: Mapping[str, Any], prefix: str = '') -> list[str]:
  paths = []
  for key, value in tree.items():
    path = f'{prefix}{key}'
    paths += _leaf_paths(value, path + '/') if isinstance(value, Mapping) else [path]
  return paths


class _Reader:
  """Fetches tensors from a nested tree by '/'-path (errors name the path); tracks what is used."""

  def __init__(self, tree: Mapping[str, Any]):
    self._tree = tree
    self._used: set[str] = set()

  def _find(self, path: str) -> Any:
    node: Any = self._tree
    for part in path.split('/'):
      if not isinstance(node, Mapping) or part not in node:
        return None
      node = node[part]
    return node

  def has(self, path: str) -> bool:
    return self._find(path) is not None

  def __call__(self, path: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    node = self._find(path)
    if node is None:
      raise CheckpointFormatError(
          f'Gemma checkpoint has no parameter {path!r}; is it a checkpoint of this preset?')
    self._used.add(path)
    if isinstance(node, Mapping) and set(node) == {'w'}:  # mlp weights may keep their 'w' level
      node = node['w']
    array = np.asarray(node)
    if shape is not None and array.shape != tuple(shape):
      raise CheckpointFormatError(
          f'Gemma checkpoint parameter {path!r} has shape {array.shape}, but the config needs'
          f' {tuple(shape)}.')
    return array

  def unused(self) -> list[str]:
    """Leaf paths never read (nor under a read path): parameters the conversion would drop."""
    return [path for path in _leaf_paths(self._tree)
            if not any(path == used or path.startswith(used + '/') for used in self._used)]


def _gating_einsum(read: _Reader, prefix: str, embed_dim: int, mlp_dim: int):
  """(gate [D, F], up [D, F]) from either orientation of the stacked gating weights."""
  gating = read(f'{prefix}/mlp/gating_einsum')
  if gating.shape == (2, embed_dim, mlp_dim):  # Gemma 1 (also taken when D == F)
    return gating[0], gating[1]
  if gating.shape == (2, mlp_dim, embed_dim):  # Gemma 2: transpose_gating_einsum
    return gating[0].T, gating[1].T
  raise CheckpointFormatError(
      f'Gemma checkpoint parameter {prefix}/mlp/gating_einsum has shape {gating.shape}; the'
      f' config needs (2, {embed_dim}, {mlp_dim}) or (2, {mlp_dim}, {embed_dim}).'
  )


def convert_gemma_params(tree: Mapping[str, Any], config: TransformerConfig) -> Params:
  """Maps an official Gemma parameter tree (module docstring) to bonjax parameters.

  Args:
    tree: the checkpoint's tree, nested or flat ('transformer/...' keys), arrays as leaves.
    config: the bonjax config the checkpoint was trained with.

  Returns:
    bonjax params (host numpy arrays in config.param_dtype), ready for
    `Transformer(config).apply({'params': params}, tokens)` or `jax.device_put` with shardings.

  Raises:
    CheckpointFormatError: a parameter is missing or has a shape the config does not allow.
  """
  cfg = config
  d, n, k, h, f = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.mlp_dim
  read = _Reader(_transformer_tree(tree))
  dtype = jnp.dtype(cfg.param_dtype)

  table = read('embedder/input_embedding')
  if table.ndim != 2 or table.shape[1] != d or table.shape[0] < cfg.vocab_size:
    raise CheckpointFormatError(
        f'Gemma checkpoint parameter embedder/input_embedding has shape {table.shape}; the'
        f' config needs ({cfg.vocab_size} or more padding rows, {d}).'
    )
  params: Params = {'embedder': {'embedding': table[: cfg.vocab_size]}}

  for i in range(cfg.num_layers):
    prefix = f'layer_{i}'
    if read.has(f'{prefix}/attn/qkv_einsum'):
      q, key, value = read(f'{prefix}/attn/qkv_einsum/w', (3, n, d, h))
      if n != k:
        raise CheckpointFormatError(
            f'Gemma checkpoint has {prefix}/attn/qkv_einsum (multi-head attention) but the'
            f' config has num_kv_heads={k} != num_heads={n}.'
        )
    else:
      q = read(f'{prefix}/attn/q_einsum/w', (n, d, h))
      key, value = read(f'{prefix}/attn/kv_einsum/w', (2, k, d, h))
    gate, up = _gating_einsum(read, prefix, d, f)
    layer = {
        'pre_attention_norm': {'scale': read(f'{prefix}/pre_attention_norm/scale', (d,))},
        'attn': {
            'q': q.transpose(1, 0, 2),  # [N, D, H] -> [D, N, H]
            'k': key.transpose(1, 0, 2),
            'v': value.transpose(1, 0, 2),
            'o': read(f'{prefix}/attn/attn_vec_einsum/w', (n, h, d)),
        },
        'pre_ffw_norm': {'scale': read(f'{prefix}/pre_ffw_norm/scale', (d,))},
        'mlp': {'gate': gate, 'up': up, 'down': read(f'{prefix}/mlp/linear', (f, d))},
    }
    if cfg.use_post_attn_norm:
      layer['post_attention_norm'] = {
          'scale': read(f'{prefix}/post_attention_norm/scale', (d,))}
    if cfg.use_post_ffw_norm:
      layer['post_ffw_norm'] = {'scale': read(f'{prefix}/post_ffw_norm/scale', (d,))}
    params[prefix] = layer
  params['final_norm'] = {'scale': read('final_norm/scale', (d,))}
  unused = read.unused()
  if unused:
    raise CheckpointFormatError(
        f'Gemma checkpoint has parameters the config does not use (more than num_layers='
        f'{cfg.num_layers} layers, or another architecture?): {unused[:10]}'
        + (f' and {len(unused) - 10} more' if len(unused) > 10 else ''))

  params = jax.tree.map(lambda x: np.ascontiguousarray(x, dtype=dtype), params)
  check_param_shapes(params, cfg)
  return params


def _restore_on_host(path: str) -> Mapping[str, Any]:
  """Restores an orbax PyTree checkpoint as numpy arrays, whatever devices it was saved from."""
  # Imported here: orbax is slow to import and only this loader of bonjax.models needs it.
  import orbax.checkpoint as ocp

  checkpointer = ocp.PyTreeCheckpointer()
  metadata = checkpointer.metadata(path)
  tree = getattr(metadata, 'item_metadata', metadata)
  tree = getattr(tree, 'tree', tree)
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
  return checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=restore_args))


def load_gemma_checkpoint(
    path: str | os.PathLike[str], preset: str | TransformerConfig
) -> Params:
  """Loads an official Gemma Flax checkpoint (an orbax PyTree directory) as bonjax params.

  Args:
    path: the checkpoint directory (e.g. `.../gemma-2b/2b`), holding the orbax PyTree
      checkpoint (nested or flat '/'-keyed structure, see the module docstring).
    preset: the bonjax preset name of the checkpoint's model (e.g. 'gemma_2b', 'gemma2_9b')
      or its TransformerConfig.

  Returns:
    bonjax params as host numpy arrays (see `convert_gemma_params`).
  """
  config = get_config(preset) if isinstance(preset, str) else preset
  path = os.fspath(path)
  if not os.path.isdir(path):
    raise FileNotFoundError(
        f'No Gemma checkpoint directory at {path!r}: expected an orbax PyTree checkpoint'
        ' directory (the folder holding _METADATA / checkpoint files).'
    )
  return convert_gemma_params(_restore_on_host(os.path.abspath(path)), config)
