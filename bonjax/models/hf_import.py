"""Import of Hugging Face Gemma / Gemma 2 checkpoints (a folder of config.json + *.safetensors).

Tensor mapping (torch `nn.Linear` weights are [out, in]; bonjax kernels are [in, out]):

    model.embed_tokens.weight                     [V, D]      -> embedder/embedding
    model.layers.{i}.self_attn.q_proj.weight      [N*H, D]    -> layer_{i}/attn/q  [D, N, H]
    model.layers.{i}.self_attn.{k,v}_proj.weight  [K*H, D]    -> layer_{i}/attn/{k,v}  [D, K, H]
    model.layers.{i}.self_attn.o_proj.weight      [D, N*H]    -> layer_{i}/attn/o  [N, H, D]
    model.layers.{i}.mlp.{gate,up}_proj.weight    [F, D]      -> layer_{i}/mlp/{gate,up}  [D, F]
    model.layers.{i}.mlp.down_proj.weight         [D, F]      -> layer_{i}/mlp/down  [F, D]
    model.norm.weight                             [D]         -> final_norm/scale

Norms: HF's GemmaRMSNorm multiplies by (1 + weight) like bonjax, so weights copy unchanged. The
names differ between the two generations:

    Gemma 1: input_layernorm -> pre_attention_norm, post_attention_layernorm -> pre_ffw_norm
             (in Gemma 1 "post_attention_layernorm" is the norm *before* the MLP);
    Gemma 2: input_layernorm -> pre_attention_norm, post_attention_layernorm ->
             post_attention_norm, pre_feedforward_layernorm -> pre_ffw_norm,
             post_feedforward_layernorm -> post_ffw_norm.

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
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from bonjax.models.config import GLOBAL, LOCAL, TransformerConfig
from bonjax.models.gemma_import import CheckpointFormatError, Params, check_param_shapes

SUPPORTED_MODEL_TYPES = ('gemma', 'gemma2')

_SAFETENSORS_DTYPES = {
    'F64': np.float64, 'F32': np.float32, 'F16': np.float16, 'BF16': ml_dtypes.bfloat16,
}
# Names of the tanh approximation of GELU, the activation every Gemma model was trained with.
_TANH_GELU = ('gelu_pytorch_tanh', 'gelu_new', 'gelu_tanh')
_HF_LAYER_TYPES = {'sliding_attention': LOCAL, 'full_attention': GLOBAL}


class UnsupportedModelError(ValueError):
  """A Hugging Face config describes a model bonjax cannot represent."""


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


def _rope_base(hf: Mapping[str, Any]) -> float:
  rope = hf.get('rope_parameters') or hf.get('rope_scaling') or {}
  rope_type = rope.get('rope_type', rope.get('type', 'default'))
  if rope_type != 'default':
    raise UnsupportedModelError(
        f"RoPE type {rope_type!r} is not supported; bonjax implements only 'default' RoPE.")
  return float(rope.get('rope_theta', hf.get('rope_theta', 10_000.0)))


def _activation(hf: Mapping[str, Any]) -> str:
  activation = hf.get('hidden_activation') or hf.get('hidden_act')
  # The first Gemma release's config.json said hidden_act='gelu', although the model was trained
  # with (and HF runs it with) the tanh approximation; it was later corrected by adding
  # hidden_activation='gelu_pytorch_tanh'. Follow the trained model.
  if activation == 'gelu' and hf['model_type'] == 'gemma':
    return 'gelu_pytorch_tanh'
  return activation


def _attention_pattern(hf: Mapping[str, Any]) -> tuple[str, ...]:
  """Gemma 2's per-layer attention types, as the shortest pattern that repeats to all layers."""
  num_layers = hf['num_hidden_layers']
  layer_types = hf.get('layer_types') or [
      'sliding_attention' if i % 2 == 0 else 'full_attention' for i in range(num_layers)]
  unknown = sorted(set(layer_types) - set(_HF_LAYER_TYPES))
  if unknown:
    raise UnsupportedModelError(
        f'layer_types {unknown} are not supported; valid: {sorted(_HF_LAYER_TYPES)}.')
  types = [_HF_LAYER_TYPES[t] for t in layer_types]
  period = next(p for p in range(1, len(types) + 1)
                if all(t == types[i % p] for i, t in enumerate(types)))
  return tuple(types[:period])


def config_from_hf(hf: Mapping[str, Any], *, dtype: str = 'float32') -> TransformerConfig:
  """Maps a Hugging Face Gemma / Gemma 2 config.json (as a dict) to a TransformerConfig.

  Args:
    hf: the parsed config.json.
    dtype: the config's `dtype` and `param_dtype`.

  Raises:
    UnsupportedModelError: another model type, or an option bonjax does not implement.
  """
  model_type = hf.get('model_type')
  if model_type not in SUPPORTED_MODEL_TYPES:
    raise UnsupportedModelError(
        f'Hugging Face model_type {model_type!r} is not supported; supported model types:'
        f' {", ".join(SUPPORTED_MODEL_TYPES)}.')
  if _activation(hf) not in _TANH_GELU:
    raise UnsupportedModelError(
        f'hidden activation {_activation(hf)!r} is not supported; bonjax implements the tanh'
        f' approximation of GELU ({", ".join(_TANH_GELU)}).')
  unsupported = {
      'attention_bias': bool(hf.get('attention_bias', False)),
      'use_bidirectional_attention': bool(hf.get('use_bidirectional_attention')),
      'tie_word_embeddings=False': not hf.get('tie_word_embeddings', True),
  }
  if any(unsupported.values()):
    raise UnsupportedModelError(
        f'{[name for name, on in unsupported.items() if on]} not supported: bonjax models are'
        ' causal, bias-free and tie the output head to the embedding table.')

  num_heads = hf['num_attention_heads']
  fields = dict(
      vocab_size=hf['vocab_size'],
      num_layers=hf['num_hidden_layers'],
      embed_dim=hf['hidden_size'],
      num_heads=num_heads,
      num_kv_heads=hf.get('num_key_value_heads') or num_heads,
      head_dim=hf.get('head_dim') or hf['hidden_size'] // num_heads,
      mlp_dim=hf['intermediate_size'],
      rope_base=_rope_base(hf),
      norm_eps=hf.get('rms_norm_eps', 1e-6),
      dtype=dtype,
      param_dtype=dtype,
  )
  if model_type == 'gemma2':
    pattern = _attention_pattern(hf)
    fields.update(
        query_pre_attn_scalar=hf.get('query_pre_attn_scalar'),
        attn_logits_softcap=hf.get('attn_logit_softcapping'),
        final_logits_softcap=hf.get('final_logit_softcapping'),
        attention_types=pattern,
        sliding_window=hf.get('sliding_window') if LOCAL in pattern else None,
        use_post_attn_norm=True,
        use_post_ffw_norm=True,
    )
  return TransformerConfig(**fields)


class _Tensors:
  """Takes named tensors out of a checkpoint, checking shapes; reports what was never used."""

  def __init__(self, tensors: Mapping[str, np.ndarray], prefix: str):
    self._tensors = dict(tensors)
    self._prefix = prefix

  def take(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
    full_name = self._prefix + name
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

  def remaining(self) -> list[str]:
    return sorted(self._tensors)


def convert_hf_params(
    tensors: Mapping[str, np.ndarray], config: TransformerConfig, model_type: str
) -> Params:
  """Maps Hugging Face Gemma / Gemma 2 tensors (module docstring) to bonjax params.

  Args:
    tensors: tensor name -> array, as stored by `GemmaForCausalLM.save_pretrained` (names with
      or without the leading 'model.').
    config: the matching config (see `config_from_hf`).
    model_type: 'gemma' or 'gemma2' (the norm names differ).

  Returns:
    bonjax params as host numpy arrays in config.param_dtype.

  Raises:
    CheckpointFormatError: a tensor is missing, misshapen, or left over (names it).
  """
  if model_type not in SUPPORTED_MODEL_TYPES:
    raise UnsupportedModelError(
        f'model_type {model_type!r} is not supported; supported: {SUPPORTED_MODEL_TYPES}.')
  cfg = config
  d, n, k, h, f = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.mlp_dim
  prefix = 'model.' if 'model.embed_tokens.weight' in tensors else ''
  source = _Tensors(tensors, prefix)
  norm_names = {'input_layernorm': 'pre_attention_norm'}
  if model_type == 'gemma':
    norm_names['post_attention_layernorm'] = 'pre_ffw_norm'
  else:
    norm_names.update(post_attention_layernorm='post_attention_norm',
                      pre_feedforward_layernorm='pre_ffw_norm',
                      post_feedforward_layernorm='post_ffw_norm')

  embedding = source.take('embed_tokens.weight', (cfg.vocab_size, d))
  params: Params = {'embedder': {'embedding': embedding}}
  for i in range(cfg.num_layers):
    attn = f'layers.{i}.self_attn.'
    mlp = f'layers.{i}.mlp.'
    layer: Params = {
        'attn': {
            'q': source.take(attn + 'q_proj.weight', (n * h, d)).T.reshape(d, n, h),
            'k': source.take(attn + 'k_proj.weight', (k * h, d)).T.reshape(d, k, h),
            'v': source.take(attn + 'v_proj.weight', (k * h, d)).T.reshape(d, k, h),
            'o': source.take(attn + 'o_proj.weight', (d, n * h)).T.reshape(n, h, d),
        },
        'mlp': {
            'gate': source.take(mlp + 'gate_proj.weight', (f, d)).T,
            'up': source.take(mlp + 'up_proj.weight', (f, d)).T,
            'down': source.take(mlp + 'down_proj.weight', (d, f)).T,
        },
    }
    for hf_name, name in norm_names.items():
      layer[name] = {'scale': source.take(f'layers.{i}.{hf_name}.weight', (d,))}
    params[f'layer_{i}'] = layer
  params['final_norm'] = {'scale': source.take('norm.weight', (d,))}

  leftover = source.remaining()
  if 'lm_head.weight' in leftover:  # a tied head saved anyway: fine if it is the embedding
    if not np.array_equal(tensors['lm_head.weight'], embedding):
      raise UnsupportedModelError(
          "Tensor 'lm_head.weight' differs from the embedding table: bonjax ties the output head"
          ' to the embeddings and cannot load an untied head.')
    leftover.remove('lm_head.weight')
  if leftover:
    raise CheckpointFormatError(
        f'Hugging Face checkpoint has tensors the {model_type} mapping does not use (not a'
        f' {model_type} model of this config?): {leftover[:10]}'
        + (f' and {len(leftover) - 10} more' if len(leftover) > 10 else ''))

  dtype = jnp.dtype(cfg.param_dtype)
  params = jax.tree.map(lambda x: np.ascontiguousarray(x, dtype=dtype), params)
  check_param_shapes(params, cfg)
  return params


def load_hf_checkpoint(
    path: str | os.PathLike[str], *, dtype: str | None = None
) -> tuple[TransformerConfig, Params]:
  """Loads a Hugging Face Gemma / Gemma 2 checkpoint folder as (config, bonjax params).

  Args:
    path: folder with config.json and model.safetensors (or shards listed in
      model.safetensors.index.json), as written by `save_pretrained` or downloaded from the Hub.
    dtype: dtype of the returned parameters and of the config's computation; defaults to the
      dtype the embedding table is stored in (bfloat16 for the released Gemma models).

  Returns:
    (config, params): params are host numpy arrays; `jax.device_put` them with the shardings of
    your mesh, then call `Transformer(config).apply({'params': params}, tokens)`.

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
    embed = tensors.get('model.embed_tokens.weight', tensors.get('embed_tokens.weight'))
    dtype = jnp.dtype(embed.dtype).name if embed is not None else 'float32'
  config = config_from_hf(hf, dtype=dtype)
  return config, convert_hf_params(tensors, config, hf['model_type'])
