"""Tests for bonjax/models/hf_config.py: Hub config.json files map to the presets."""

import pytest

from bonjax import models
from bonjax.models import hf_config
from bonjax.models.config import GLOBAL, LOCAL, RopeScaling

# The config.json files on the Hub (abridged to what bonjax reads, plus a few it ignores), in
# the older format most releases still have: RoPE under rope_theta / rope_scaling, values equal
# to the config class's defaults often left out (the Gemma 3 4B and 12B text_config).
_HUB_GEMMA_2B = {  # https://huggingface.co/google/gemma-2b/blob/main/config.json
    'model_type': 'gemma', 'vocab_size': 256000, 'hidden_size': 2048, 'intermediate_size': 16384,
    'num_hidden_layers': 18, 'num_attention_heads': 8, 'num_key_value_heads': 1, 'head_dim': 256,
    'hidden_act': 'gelu', 'rope_theta': 10000.0, 'rms_norm_eps': 1e-06, 'rope_scaling': None}
_HUB_GEMMA2_2B = {  # https://huggingface.co/google/gemma-2-2b/blob/main/config.json
    'model_type': 'gemma2', 'vocab_size': 256000, 'hidden_size': 2304, 'intermediate_size': 9216,
    'num_hidden_layers': 26, 'num_attention_heads': 8, 'num_key_value_heads': 4, 'head_dim': 256,
    'hidden_act': 'gelu_pytorch_tanh', 'hidden_activation': 'gelu_pytorch_tanh',
    'rope_theta': 10000.0, 'rms_norm_eps': 1e-06, 'query_pre_attn_scalar': 256,
    'sliding_window': 4096, 'attn_logit_softcapping': 50.0, 'final_logit_softcapping': 30.0,
    'cache_implementation': 'hybrid'}
_HUB_GEMMA3_1B = {  # https://huggingface.co/google/gemma-3-1b-pt/blob/main/config.json
    'architectures': ['Gemma3ForCausalLM'], 'model_type': 'gemma3_text', 'vocab_size': 262144,
    'hidden_size': 1152, 'intermediate_size': 6912, 'num_hidden_layers': 26,
    'num_attention_heads': 4, 'num_key_value_heads': 1, 'head_dim': 256,
    'hidden_activation': 'gelu_pytorch_tanh', 'query_pre_attn_scalar': 256,
    'rms_norm_eps': 1e-06, 'rope_local_base_freq': 10000, 'rope_scaling': None,
    'rope_theta': 1000000, 'sliding_window': 512, 'sliding_window_pattern': 6,
    'attn_logit_softcapping': None, 'final_logit_softcapping': None, 'attention_bias': False,
    'max_position_embeddings': 32768, 'torch_dtype': 'bfloat16'}


def _hub_gemma3_multimodal(text_config):
  return {'architectures': ['Gemma3ForConditionalGeneration'], 'model_type': 'gemma3',
          'mm_tokens_per_image': 256, 'text_config': text_config,
          'vision_config': {'model_type': 'siglip_vision_model', 'hidden_size': 1152}}


_HUB_GEMMA3_4B = _hub_gemma3_multimodal({  # google/gemma-3-4b-pt
    'hidden_size': 2560, 'intermediate_size': 10240, 'model_type': 'gemma3_text',
    'num_hidden_layers': 34, 'rope_scaling': {'factor': 8.0, 'rope_type': 'linear'},
    'sliding_window': 1024})
_HUB_GEMMA3_12B = _hub_gemma3_multimodal({  # google/gemma-3-12b-pt
    'hidden_size': 3840, 'intermediate_size': 15360, 'model_type': 'gemma3_text',
    'num_attention_heads': 16, 'num_hidden_layers': 48, 'num_key_value_heads': 8,
    'rope_scaling': {'factor': 8.0, 'rope_type': 'linear'}, 'sliding_window': 1024})


def _hub_qwen3(hidden, mlp, layers, heads, tied):  # Qwen/Qwen3-{0.6B,1.7B,4B,8B}
  return {'architectures': ['Qwen3ForCausalLM'], 'model_type': 'qwen3', 'vocab_size': 151936,
          'hidden_size': hidden, 'intermediate_size': mlp, 'num_hidden_layers': layers,
          'num_attention_heads': heads, 'num_key_value_heads': 8, 'head_dim': 128,
          'hidden_act': 'silu', 'attention_bias': False, 'rms_norm_eps': 1e-06,
          'rope_scaling': None, 'rope_theta': 1000000, 'sliding_window': None,
          'use_sliding_window': False, 'max_window_layers': layers, 'tie_word_embeddings': tied}


def _hub_llama3(hidden, mlp, layers, heads, head_dim, factor, tied):
  config = {'architectures': ['LlamaForCausalLM'], 'model_type': 'llama', 'vocab_size': 128256,
            'hidden_size': hidden, 'intermediate_size': mlp, 'num_hidden_layers': layers,
            'num_attention_heads': heads, 'num_key_value_heads': 8, 'hidden_act': 'silu',
            'attention_bias': False, 'mlp_bias': False, 'rms_norm_eps': 1e-05,
            'rope_scaling': {'factor': factor, 'high_freq_factor': 4.0, 'low_freq_factor': 1.0,
                             'original_max_position_embeddings': 8192, 'rope_type': 'llama3'},
            'rope_theta': 500000.0, 'tie_word_embeddings': tied, 'pretraining_tp': 1}
  if head_dim is not None:  # Llama 3.1's config.json has none: hidden_size // heads.
    config['head_dim'] = head_dim
  return config


HUB_CONFIGS = {
    'gemma_2b': _HUB_GEMMA_2B,
    'gemma2_2b': _HUB_GEMMA2_2B,
    'gemma3_1b': _HUB_GEMMA3_1B,
    'gemma3_4b': _HUB_GEMMA3_4B,
    'gemma3_12b': _HUB_GEMMA3_12B,
    'qwen3_0_6b': _hub_qwen3(1024, 3072, 28, 16, tied=True),
    'qwen3_1_7b': _hub_qwen3(2048, 6144, 28, 16, tied=True),
    'qwen3_4b': _hub_qwen3(2560, 9728, 36, 32, tied=True),
    'qwen3_8b': _hub_qwen3(4096, 12288, 36, 32, tied=False),
    # meta-llama/Llama-3.2-1B, Llama-3.2-3B and Llama-3.1-8B
    'llama3_2_1b': _hub_llama3(2048, 8192, 16, 32, 64, 32.0, tied=True),
    'llama3_2_3b': _hub_llama3(3072, 8192, 28, 24, 128, 32.0, tied=True),
    'llama3_1_8b': _hub_llama3(4096, 14336, 32, 32, None, 8.0, tied=False),
}


@pytest.mark.parametrize('preset', sorted(HUB_CONFIGS))
def test_hub_configs_map_to_the_presets(preset):
  assert hf_config.config_from_hf(HUB_CONFIGS[preset]) == models.get_config(preset)


def test_gemma3_layers_alternate_five_local_to_one_global_with_their_own_rope():
  cfg = models.get_config('gemma3_4b')
  assert cfg.layer_attention_types[:12] == (LOCAL,) * 5 + (GLOBAL,) + (LOCAL,) * 5 + (GLOBAL,)
  assert cfg.rope(LOCAL) == (10_000.0, None)
  assert cfg.rope(GLOBAL) == (1_000_000.0, RopeScaling('linear', 8.0))
  assert cfg.qk_norm and cfg.norm_unit_offset and cfg.scale_embeddings and cfg.tie_embeddings


def test_transformers5_rope_parameters_are_read_like_the_older_fields():
  new_style = {k: v for k, v in _HUB_GEMMA3_1B.items()
               if k not in ('rope_theta', 'rope_local_base_freq', 'rope_scaling')}
  new_style['rope_parameters'] = {
      'full_attention': {'rope_type': 'linear', 'factor': 4.0, 'rope_theta': 1e6},
      'sliding_attention': {'rope_type': 'default', 'rope_theta': 1e4}}
  cfg = hf_config.config_from_hf(new_style)
  assert (cfg.rope_base, cfg.local_rope_base) == (1e6, 1e4)
  assert cfg.rope_scaling == RopeScaling('linear', 4.0)


@pytest.mark.parametrize('override, message', [
    ({'hidden_act': 'gelu_pytorch_tanh'}, 'activation'),
    ({'mlp_bias': True}, 'mlp_bias'),
    ({'use_sliding_window': True, 'sliding_window': 4096}, 'use_sliding_window'),
    ({'rope_scaling': {'rope_type': 'dynamic', 'factor': 2.0}}, "RoPE type 'dynamic'"),
])
def test_unsupported_llama_and_qwen_options_are_named(override, message):
  with pytest.raises(hf_config.UnsupportedModelError, match=message):
    hf_config.config_from_hf({**HUB_CONFIGS['qwen3_0_6b'], **override})


def test_scaled_local_rope_is_unsupported():
  config = dict(_HUB_GEMMA3_1B, rope_parameters={
      'full_attention': {'rope_type': 'default', 'rope_theta': 1e6},
      'sliding_attention': {'rope_type': 'linear', 'factor': 2.0, 'rope_theta': 1e4}})
  with pytest.raises(hf_config.UnsupportedModelError, match='local'):
    hf_config.config_from_hf(config)


def test_attention_bias_and_untied_heads_map_for_qwen_and_llama():
  cfg = hf_config.config_from_hf({**HUB_CONFIGS['llama3_1_8b'], 'attention_bias': True})
  assert cfg.attention_bias and not cfg.tie_embeddings and cfg.head_dim == 128
  assert cfg.activation == 'silu' and not cfg.norm_unit_offset and not cfg.scale_embeddings
