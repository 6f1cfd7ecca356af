"""Hugging Face config.json -> TransformerConfig, for the families bonjax implements.

    model_type     family                         what differs from the Gemma 1 decoder
    gemma          Gemma 1                        -
    gemma2         Gemma 2                        local/global layers, soft-caps, post-norms
    gemma3_text    Gemma 3 (1B, or any text-only) Gemma 2's layer without soft-caps, query/key
                                                  norms, 5 local : 1 global, RoPE per layer type
    gemma3         Gemma 3 multimodal (4B+)       its text_config is a gemma3_text config
    qwen3          Qwen3 (dense)                  SwiGLU, plain norm gains, query/key norms, no
                                                  embedding scaling, untied head on larger sizes
    llama          Llama 3 / 3.1 / 3.2            SwiGLU, plain norm gains, llama3 RoPE scaling,
                                                  no embedding scaling, untied head on 3.1 8B

Two generations of config.json are read. Files written by transformers 5 hold every value,
RoPE under `rope_parameters` (for Gemma 3 one entry per layer type); older ones (most Hub
checkpoints) put RoPE under `rope_theta` / `rope_scaling` (and Gemma 3's local base under
`rope_local_base_freq`) and may leave out any value equal to the config class's default, so the
defaults of the transformers classes are filled in (`_DEFAULTS`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bonjax.models.config import (GELU_TANH, GLOBAL, LINEAR, LLAMA3, LOCAL, SILU, RopeScaling,
                                  TransformerConfig)

SUPPORTED_MODEL_TYPES = ('gemma', 'gemma2', 'gemma3_text', 'gemma3', 'qwen3', 'llama')
GEMMA_LIKE = ('gemma', 'gemma2', 'gemma3_text')  # (1 + scale) norms, sqrt(D)-scaled embeddings

# Names of the tanh approximation of GELU, the activation every Gemma model was trained with.
_TANH_GELU = ('gelu_pytorch_tanh', 'gelu_new', 'gelu_tanh')
_ACTIVATIONS = {**{name: GELU_TANH for name in _TANH_GELU}, 'silu': SILU, 'swish': SILU}
_HF_LAYER_TYPES = {'sliding_attention': LOCAL, 'full_attention': GLOBAL}

# Defaults of the transformers config classes, for the values bonjax reads that older
# config.json files may omit (the Gemma 3 multimodal releases' text_config lists only what
# differs from Gemma3TextConfig's defaults).
_DEFAULTS: dict[str, dict[str, Any]] = {
    'gemma': dict(tie_word_embeddings=True),
    'gemma2': dict(tie_word_embeddings=True),
    'gemma3_text': dict(
        vocab_size=262_208, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
        num_attention_heads=8, num_key_value_heads=4, head_dim=256, rms_norm_eps=1e-6,
        hidden_activation='gelu_pytorch_tanh', query_pre_attn_scalar=256, sliding_window=4096,
        sliding_window_pattern=6, rope_theta=1_000_000.0, rope_local_base_freq=10_000.0,
        tie_word_embeddings=True),
    'qwen3': dict(head_dim=128, tie_word_embeddings=False),
    'llama': dict(tie_word_embeddings=False),
}


class UnsupportedModelError(ValueError):
  """A Hugging Face config describes a model bonjax cannot represent."""


def _text_config(hf: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
  """(model_type, the text model's config with the class defaults filled in)."""
  model_type = hf.get('model_type')
  if model_type not in SUPPORTED_MODEL_TYPES:
    raise UnsupportedModelError(
        f'Hugging Face model_type {model_type!r} is not supported; supported model types:'
        f' {", ".join(SUPPORTED_MODEL_TYPES)}.')
  if model_type == 'gemma3':  # Only the language model of the multimodal release is read.
    text = dict(hf.get('text_config') or {})
    text.setdefault('tie_word_embeddings', hf.get('tie_word_embeddings', True))
    hf, model_type = text, 'gemma3_text'
  return model_type, {**_DEFAULTS[model_type], **{k: v for k, v in hf.items() if v is not None}}


def _rope(params: Mapping[str, Any], what: str) -> tuple[float, RopeScaling | None]:
  """(base, scaling) from one RoPE parameter dict ({'rope_type', 'rope_theta', 'factor', ...})."""
  rope_type = params.get('rope_type', params.get('type', 'default'))
  base = float(params['rope_theta'])
  if rope_type == 'default':
    return base, None
  if rope_type == 'linear':
    return base, RopeScaling(LINEAR, float(params['factor']))
  if rope_type == 'llama3':
    return base, RopeScaling(LLAMA3, float(params['factor']), float(params['low_freq_factor']),
                             float(params['high_freq_factor']),
                             int(params['original_max_position_embeddings']))
  raise UnsupportedModelError(
      f"RoPE type {rope_type!r} ({what}) is not supported; bonjax implements 'default',"
      " 'linear' and 'llama3' RoPE.")


def _rope_fields(hf: Mapping[str, Any], model_type: str,
                 pattern: tuple[str, ...]) -> dict[str, Any]:
  """rope_base, local_rope_base and rope_scaling, from either generation of config.json."""
  params = hf.get('rope_parameters') or {}
  if model_type == 'gemma3_text':
    if 'full_attention' in params:  # transformers 5: one entry per layer type
      global_params, local_params = params['full_attention'], params['sliding_attention']
    else:
      global_params = {'rope_theta': hf['rope_theta'], **(hf.get('rope_scaling') or {})}
      local_params = {'rope_theta': hf['rope_local_base_freq']}
    base, scaling = _rope(global_params, 'global layers')
    local_base, local_scaling = _rope(local_params, 'local layers')
    if local_scaling is not None:
      raise UnsupportedModelError('RoPE scaling of the local (sliding-window) layers is not'
                                  ' supported; bonjax scales only the global layers.')
    return dict(rope_base=base, local_rope_base=local_base, rope_scaling=scaling)
  params = params or hf.get('rope_scaling') or {}
  base, scaling = _rope({'rope_theta': hf.get('rope_theta', 10_000.0), **params}, 'all layers')
  if scaling is not None and LOCAL in pattern:
    raise UnsupportedModelError('RoPE scaling together with sliding-window layers is supported'
                                ' only as Gemma 3 has it (global layers scaled, local ones not).')
  return dict(rope_base=base, rope_scaling=scaling)


def _activation(hf: Mapping[str, Any], model_type: str) -> str:
  activation = hf.get('hidden_activation') or hf.get('hidden_act')
  # The first Gemma release's config.json said hidden_act='gelu', although the model was trained
  # with (and HF runs it with) the tanh approximation; it was later corrected by adding
  # hidden_activation='gelu_pytorch_tanh'. Follow the trained model.
  if activation == 'gelu' and model_type == 'gemma':
    activation = 'gelu_pytorch_tanh'
  if activation not in _ACTIVATIONS or (model_type in GEMMA_LIKE) != (
      _ACTIVATIONS[activation] == GELU_TANH):
    expected = _TANH_GELU if model_type in GEMMA_LIKE else ('silu',)
    raise UnsupportedModelError(
        f'hidden activation {activation!r} is not supported for {model_type}; bonjax implements'
        f' {", ".join(expected)} for it.')
  return _ACTIVATIONS[activation]


def _attention_pattern(hf: Mapping[str, Any], model_type: str) -> tuple[str, ...]:
  """Per-layer attention types, as the shortest pattern that repeats to all layers."""
  num_layers = hf['num_hidden_layers']
  layer_types = hf.get('layer_types')
  if layer_types is None and model_type == 'gemma2':
    layer_types = ['sliding_attention' if i % 2 == 0 else 'full_attention'
                   for i in range(num_layers)]
  elif layer_types is None and model_type == 'gemma3_text':
    period = hf['sliding_window_pattern']
    layer_types = ['full_attention' if (i + 1) % period == 0 else 'sliding_attention'
                   for i in range(num_layers)]
  elif layer_types is None:
    layer_types = ['full_attention'] * num_layers
  unknown = sorted(set(layer_types) - set(_HF_LAYER_TYPES))
  if unknown:
    raise UnsupportedModelError(
        f'layer_types {unknown} are not supported; valid: {sorted(_HF_LAYER_TYPES)}.')
  types = [_HF_LAYER_TYPES[t] for t in layer_types]
  period = next(p for p in range(1, len(types) + 1)
                if all(t == types[i % p] for i, t in enumerate(types)))
  return tuple(types[:period])


def _check_supported(hf: Mapping[str, Any], model_type: str) -> None:
  unsupported = {
      'use_bidirectional_attention': bool(hf.get('use_bidirectional_attention')),
      'use_sliding_window': bool(hf.get('use_sliding_window')),  # Qwen's optional window
      'mlp_bias': bool(hf.get('mlp_bias')),
      'attention_bias': model_type in GEMMA_LIKE and bool(hf.get('attention_bias')),
      'tie_word_embeddings=False': model_type in GEMMA_LIKE and not hf['tie_word_embeddings'],
  }
  if any(unsupported.values()):
    raise UnsupportedModelError(
        f'{[name for name, on in unsupported.items() if on]} not supported for {model_type}:'
        ' bonjax models are causal, have no MLP biases, and its Gemma models have no attention'
        ' biases and tie the output head to the embedding table.')


def config_from_hf(hf: Mapping[str, Any], *, dtype: str = 'float32') -> TransformerConfig:
  """Maps a Hugging Face config.json (as a dict) of a supported family to a TransformerConfig.

  Args:
    hf: the parsed config.json.
    dtype: the config's `dtype` and `param_dtype`.

  Raises:
    UnsupportedModelError: another model type, or an option bonjax does not implement.
  """
  model_type, hf = _text_config(hf)
  _check_supported(hf, model_type)
  activation = _activation(hf, model_type)
  pattern = _attention_pattern(hf, model_type)
  num_heads = hf['num_attention_heads']
  fields = dict(
      vocab_size=hf['vocab_size'],
      num_layers=hf['num_hidden_layers'],
      embed_dim=hf['hidden_size'],
      num_heads=num_heads,
      num_kv_heads=hf.get('num_key_value_heads') or num_heads,
      head_dim=hf.get('head_dim') or hf['hidden_size'] // num_heads,
      mlp_dim=hf['intermediate_size'],
      norm_eps=hf.get('rms_norm_eps', 1e-6),
      attention_types=pattern,
      sliding_window=hf.get('sliding_window') if LOCAL in pattern else None,
      dtype=dtype,
      param_dtype=dtype,
      **_rope_fields(hf, model_type, pattern),
  )
  if model_type in ('gemma2', 'gemma3_text'):
    fields.update(
        query_pre_attn_scalar=hf.get('query_pre_attn_scalar'),
        attn_logits_softcap=hf.get('attn_logit_softcapping'),
        final_logits_softcap=hf.get('final_logit_softcapping'),
        use_post_attn_norm=True,
        use_post_ffw_norm=True,
    )
  if model_type not in GEMMA_LIKE:
    fields.update(norm_unit_offset=False, scale_embeddings=False,
                  tie_embeddings=bool(hf['tie_word_embeddings']),
                  attention_bias=bool(hf.get('attention_bias', False)))
  return TransformerConfig(qk_norm=model_type in ('gemma3_text', 'qwen3'), activation=activation,
                           **fields)
