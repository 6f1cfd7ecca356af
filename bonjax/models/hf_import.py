"""Import of Hugging Face checkpoints (a folder of config.json + *.safetensors).

Families: Gemma 1/2/3, Qwen3 and Llama 3 (hf_config.py maps their config.json). Their decoders
share one tensor layout (torch `nn.Linear` weights are [out, in]; bonjax kernels are [in, out]):

    model.embed_tokens.weight                     [V, D]      -> embedder/embedding
    lm_head.weight (untied models)                [V, D]      -> embedder/unembedding
    model.layers.{i}.self_attn.q_proj.weight      [N*H, D]    -> layer_{i}/attn/q  [D, N, H]
    model.layers.{i}.self_attn.{k,v}_proj.weight  [K*H, D]    -> layer_{i}/attn/{k,v}  [D, K, H]
    model.layers.{i}.self_attn.o_proj.weight      [D, N*H]    -> layer_{i}/attn/o  [N, H, D]
    model.layers.{i}.self_attn.{q,k}_norm.weight  [H]         -> layer_{i}/attn/{q,k}_norm/scale
    model.layers.{i}.self_attn.{q,k,v,o}_proj.bias            -> layer_{i}/attn/{q,k,v,o}_bias
    model.layers.{i}.mlp.{gate,up}_proj.weight    [F, D]      -> layer_{i}/mlp/{gate,up}  [D, F]
    model.layers.{i}.mlp.down_proj.weight         [D, F]      -> layer_{i}/mlp/down  [F, D]
    model.norm.weight                             [D]         -> final_norm/scale

Norm weights copy unchanged: Gemma's HF norms multiply by (1 + weight) like bonjax's default,
Llama's and Qwen's by weight like bonjax's norm_unit_offset=False. The per-layer norm names
differ between layer layouts:

    two norms (Gemma 1, Llama, Qwen3): input_layernorm -> pre_attention_norm,
             post_attention_layernorm -> pre_ffw_norm (it is the norm *before* the MLP);
    four norms (Gemma 2, Gemma 3): input_layernorm -> pre_attention_norm,
             post_attention_layernorm -> post_attention_norm, pre_feedforward_layernorm ->
             pre_ffw_norm, post_feedforward_layernorm -> post_ffw_norm.

The Gemma 3 multimodal checkpoints (4B and up) hold the same text model under
'language_model.model.' (or 'model.language_model.'), beside a vision tower and its projector,
which are not read.

Safetensors files are read through their documented header (8-byte little-endian length, JSON
table of dtype / shape / byte offsets, raw little-endian data) into memory-mapped numpy arrays:
`safetensors.numpy` refuses BF16, the dtype real Gemma checkpoints are stored in, and its flax
loader would place every tensor on an accelerator; ml_dtypes (a jax dependency) supplies numpy's
bfloat16. Nothing is copied until a tensor is converted, one at a time.
"""

from __future__ import annotations

import json
import os
import pathlib
import struct
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from jax.sharding import Mesh

from bonjax import sharding
from bonjax.models.config import TransformerConfig
from bonjax.models.gemma_import import CheckpointFormatError, Params, check_param_shapes
from bonjax.models.hf_config import (SUPPORTED_MODEL_TYPES, UnsupportedModelError,
                                     config_from_hf)
from bonjax.models.params import param_shardings
from bonjax.models.transformer import Transformer

__all__ = ['SUPPORTED_MODEL_TYPES', 'CheckpointFormatError', 'UnsupportedModelError',
           'config_from_hf', 'convert_hf_params', 'load_hf_checkpoint']

# Where the text model's tensors live: causal-LM checkpoints, then the multimodal Gemma 3 ones.
_TEXT_PREFIXES = ('model.', '', 'language_model.model.', 'model.language_model.')
_HEAD_NAMES = ('lm_head.weight', 'language_model.lm_head.weight')
# Tensors of a multimodal checkpoint that are not part of its language model.
_NON_TEXT_PREFIXES = ('vision_tower.', 'multi_modal_projector.', 'model.vision_tower.',
                      'model.multi_modal_projector.')

_SAFETENSORS_DTYPES = {
    'F64': np.float64, 'F32': np.float32, 'F16': np.float16, 'BF16': ml_dtypes.bfloat16,
}


def _read_safetensors(file: pathlib.Path) -> dict[str, np.ndarray]:
  """Memory-maps every tensor of one .safetensors file as a numpy array."""
  with open(file, 'rb') as f:
    (header_len,) = struct.unpack('<Q', f.read(8))
    header = json.loads(f.read(header_len))
  data = np.memmap(file, dtype=np.uint8, mode='r', offset=8 + header_len)
  tensors = {}
  for name, info in header.items():
    if name == '__metadata__':
      continue
    if info['dtype'] not in _SAFETENSORS_DTYPES:
      raise CheckpointFormatError(
          f'Tensor {name!r} in {file} has dtype {info["dtype"]}; supported:'
          f' {sorted(_SAFETENSORS_DTYPES)}.')
    start, end = info['data_offsets']
    tensors[name] = data[start:end].view(_SAFETENSORS_DTYPES[info['dtype']]).reshape(info['shape'])
  return tensors


def _read_folder_tensors(folder: pathlib.Path) -> dict[str, np.ndarray]:
  """All tensors of a checkpoint folder, sharded (model.safetensors.index.json) or not."""
  index = folder / 'model.safetensors.index.json'
  if index.exists():
    files = sorted(set(json.loads(index.read_text())['weight_map'].values()))
    missing = [name for name in files if not (folder / name).exists()]
    if missing:
      raise FileNotFoundError(f'{index} lists shard files that are missing: {missing}.')
    paths = [folder / name for name in files]
  else:
    paths = sorted(folder.glob('*.safetensors'))
  if not paths:
    raise FileNotFoundError(
        f'No *.safetensors files in {folder}; a Hugging Face checkpoint folder holds config.json'
        ' and model*.safetensors (PyTorch .bin checkpoints are not supported).')
  tensors: dict[str, np.ndarray] = {}
  for path in paths:
    tensors.update(_read_safetensors(path))
  return tensors


class _Tensors:
  """Takes named tensors out of a checkpoint, checking shapes; reports what was never used."""

  def __init__(self, tensors: Mapping[str, np.ndarray], prefix: str):
    self._tensors = dict(tensors)
    self._prefix = prefix

  def take(self, name: str, shape: tuple[int, ...], prefixed: bool = True) -> np.ndarray:
    full_name = self._prefix + name if prefixed else name
    if full_name not in self._tensors:
      raise CheckpointFormatError(
          f'Hugging Face checkpoint has no tensor {full_name!r} (needed by the config in'
          ' config.json); the folder may be incomplete or of another architecture.')
    tensor = self._tensors.pop(full_name)
    if tensor.shape != tuple(shape):
      raise CheckpointFormatError(
          f'Hugging Face tensor {full_name!r} has shape {tensor.shape}, but config.json implies'
          f' {tuple(shape)}.')
    return tensor

  def drop(self, unused: Callable[[str], bool]) -> None:
    """Forgets the tensors whose names `unused` accepts (they are neither read nor reported)."""
    self._tensors = {name: t for name, t in self._tensors.items() if not unused(name)}

  def remaining(self) -> list[str]:
    return sorted(self._tensors)


def _layer_params(take, i: int, cfg: TransformerConfig) -> Params:
  """The bonjax params of layer i, taken from its HF tensors (module docstring)."""
  d, n, k, h, f = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.mlp_dim
  attn, mlp = f'layers.{i}.self_attn.', f'layers.{i}.mlp.'
  layer: Params = {
      'attn': {
          'q': take(attn + 'q_proj.weight', (n * h, d)).T.reshape(d, n, h),
          'k': take(attn + 'k_proj.weight', (k * h, d)).T.reshape(d, k, h),
          'v': take(attn + 'v_proj.weight', (k * h, d)).T.reshape(d, k, h),
          'o': take(attn + 'o_proj.weight', (d, n * h)).T.reshape(n, h, d),
      },
      'mlp': {
          'gate': take(mlp + 'gate_proj.weight', (f, d)).T,
          'up': take(mlp + 'up_proj.weight', (f, d)).T,
          'down': take(mlp + 'down_proj.weight', (d, f)).T,
      },
  }
  if cfg.qk_norm:
    for name in ('q_norm', 'k_norm'):
      layer['attn'][name] = {'scale': take(f'{attn}{name}.weight', (h,))}
  if cfg.attention_bias:
    for name, heads in (('q', n), ('k', k), ('v', k)):
      bias = take(f'{attn}{name}_proj.bias', (heads * h,))
      layer['attn'][f'{name}_bias'] = bias.reshape(heads, h)
    layer['attn']['o_bias'] = take(attn + 'o_proj.bias', (d,))
  if cfg.use_post_attn_norm:
    norm_names = dict(input_layernorm='pre_attention_norm',
                      post_attention_layernorm='post_attention_norm',
                      pre_feedforward_layernorm='pre_ffw_norm',
                      post_feedforward_layernorm='post_ffw_norm')
  else:
    norm_names = dict(input_layernorm='pre_attention_norm', post_attention_layernorm='pre_ffw_norm')
  for hf_name, name in norm_names.items():
    layer[name] = {'scale': take(f'layers.{i}.{hf_name}.weight', (d,))}
  return layer


def _param_views(tensors: Mapping[str, np.ndarray], config: TransformerConfig,
                 model_type: str) -> Params:
  """bonjax params as views of the checkpoint's arrays (reshaped, in their stored dtype)."""
  if model_type not in SUPPORTED_MODEL_TYPES:
    raise UnsupportedModelError(
        f'model_type {model_type!r} is not supported; supported: {SUPPORTED_MODEL_TYPES}.')
  cfg = config
  prefix = next((p for p in _TEXT_PREFIXES if p + 'embed_tokens.weight' in tensors), 'model.')
  source = _Tensors(tensors, prefix)
  if model_type == 'gemma3':
    source.drop(lambda name: name.startswith(_NON_TEXT_PREFIXES))
  head_name = next((name for name in _HEAD_NAMES if name in tensors), _HEAD_NAMES[0])

  embedding = source.take('embed_tokens.weight', (cfg.vocab_size, cfg.embed_dim))
  params: Params = {'embedder': {'embedding': embedding}}
  if not cfg.tie_embeddings:
    params['embedder']['unembedding'] = source.take(head_name, (cfg.vocab_size, cfg.embed_dim),
                                                    prefixed=False)
  for i in range(cfg.num_layers):
    params[f'layer_{i}'] = _layer_params(source.take, i, cfg)
  params['final_norm'] = {'scale': source.take('norm.weight', (cfg.embed_dim,))}

  leftover = source.remaining()
  if cfg.tie_embeddings and head_name in leftover:  # a tied head saved anyway: fine if it is
    if not np.array_equal(tensors[head_name], embedding):  # the embedding table
      raise UnsupportedModelError(
          f'Tensor {head_name!r} differs from the embedding table, but config.json says'
          ' tie_word_embeddings: the checkpoint does not match its config.')
    leftover.remove(head_name)
  if leftover:
    raise CheckpointFormatError(
        f'Hugging Face checkpoint has tensors the {model_type} mapping does not use (not a'
        f' {model_type} model of this config?): {leftover[:10]}'
        + (f' and {len(leftover) - 10} more' if len(leftover) > 10 else ''))
  check_param_shapes(params, cfg)
  return params


def _host_array(view: np.ndarray, config: TransformerConfig) -> np.ndarray:
  """A contiguous copy of a checkpoint view in the config's parameter dtype."""
  return np.ascontiguousarray(view, dtype=jnp.dtype(config.param_dtype))


def convert_hf_params(
    tensors: Mapping[str, np.ndarray], config: TransformerConfig, model_type: str
) -> Params:
  """Maps the Hugging Face tensors of a supported family (module docstring) to bonjax params.

  Args:
    tensors: tensor name -> array, as stored by `save_pretrained` (names with or without the
      leading 'model.'; a multimodal Gemma 3's text model under its prefix).
    config: the matching config (see `config_from_hf`).
    model_type: the config.json's model_type (one of SUPPORTED_MODEL_TYPES).

  Returns:
    bonjax params as host numpy arrays in config.param_dtype.

  Raises:
    CheckpointFormatError: a tensor is missing, misshapen, or left over (names it).
    UnsupportedModelError: a saved tied head that differs from the embedding table.
  """
  return jax.tree.map(lambda x: _host_array(x, config),
                      _param_views(tensors, config, model_type))


def load_hf_checkpoint(
    path: str | os.PathLike[str], *, dtype: str | None = None, mesh: Mesh | None = None,
    rules: sharding.LogicalRules = sharding.DEFAULT_RULES,
) -> tuple[TransformerConfig, Params]:
  """Loads a Hugging Face Gemma 1/2/3, Qwen3 or Llama 3 checkpoint folder as (config, params).

  Args:
    path: folder with config.json and model.safetensors (or shards listed in
      model.safetensors.index.json), as written by `save_pretrained` or downloaded from the Hub.
    dtype: dtype of the returned parameters and of the config's computation; defaults to the
      dtype the embedding table is stored in (bfloat16 for the released models).
    mesh: if given, every parameter is placed on it as `bonjax.models.param_shardings` says,
      one tensor at a time (the host never holds more than one converted tensor).
    rules: the logical axis rules for `mesh`.

  Returns:
    (config, params): params are host numpy arrays (without a mesh) or sharded jax arrays; call
    `Transformer(config).apply({'params': params}, tokens)`.

  Raises:
    FileNotFoundError: no config.json or no safetensors files.
    UnsupportedModelError: another model type or an unsupported option (names it).
    CheckpointFormatError: a missing, misshapen or unexpected tensor (names it).
  """
  folder = pathlib.Path(path)
  config_file = folder / 'config.json'
  if not config_file.exists():
    raise FileNotFoundError(
        f'No config.json in {folder}: expected a Hugging Face checkpoint folder (config.json +'
        ' *.safetensors).')
  hf = json.loads(config_file.read_text())
  tensors = _read_folder_tensors(folder)
  if dtype is None:
    embed = next((tensors[p + 'embed_tokens.weight'] for p in _TEXT_PREFIXES
                  if p + 'embed_tokens.weight' in tensors), None)
    dtype = jnp.dtype(embed.dtype).name if embed is not None else 'float32'
  config = config_from_hf(hf, dtype=dtype)
  views = _param_views(tensors, config, hf['model_type'])
  if mesh is None:
    return config, jax.tree.map(lambda x: _host_array(x, config), views)
  shardings = param_shardings(Transformer(config), mesh, tuple(rules))
  return config, jax.tree.map(lambda x, s: jax.device_put(_host_array(x, config), s), views,
                              shardings)
