"""Tests for bonjax/models/hf_import.py, against the transformers implementation itself."""

import json

import jax
import ml_dtypes
import numpy as np
import pytest

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

from bonjax import models  # noqa: E402  (after the optional-dependency checks)
from bonjax.models import hf_import  # noqa: E402
from bonjax.models.config import GLOBAL, LOCAL  # noqa: E402

_COMMON = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_attention_heads=4,
               head_dim=8, initializer_range=0.2, attn_implementation='eager')


def _gemma(num_kv_heads: int):
  config = transformers.GemmaConfig(num_hidden_layers=2, num_key_value_heads=num_kv_heads,
                                    **_COMMON)
  return transformers.GemmaForCausalLM(config)


def _gemma2():
  # Softcaps small enough to bend the logits, and a window shorter than the test sequence.
  config = transformers.Gemma2Config(
      num_hidden_layers=3, num_key_value_heads=2, query_pre_attn_scalar=12,
      attn_logit_softcapping=4.0, final_logit_softcapping=3.0, sliding_window=3, **_COMMON)
  return transformers.Gemma2ForCausalLM(config)


_TOKENS = np.random.default_rng(0).integers(0, 64, size=(2, 9))


def _torch_logits(model) -> np.ndarray:
  with torch.no_grad():
    return model(torch.tensor(_TOKENS)).logits.float().numpy()


def _saved(model, folder, **kwargs):
  model.save_pretrained(folder, **kwargs)
  return folder


@pytest.mark.parametrize('make_model, sharded', [
    (lambda: _gemma(num_kv_heads=1), False),  # Gemma 1 2B-style multi-query
    (lambda: _gemma(num_kv_heads=4), True),  # Gemma 1 7B-style multi-head, sharded files
    (_gemma2, False),  # Gemma 2: GQA, local/global layers, softcaps, post-norms
], ids=['gemma_mqa', 'gemma_mha_sharded', 'gemma2'])
def test_logits_match_transformers(tmp_path, make_model, sharded):
  torch.manual_seed(0)
  model = make_model().float().eval()
  folder = _saved(model, tmp_path, **({'max_shard_size': '20KB'} if sharded else {}))
  assert (folder / 'model.safetensors.index.json').exists() == sharded

  config, params = models.load_hf_checkpoint(folder)  # the public entry point

  logits = np.asarray(jax.jit(models.Transformer(config).apply)({'params': params}, _TOKENS))
  np.testing.assert_allclose(logits, _torch_logits(model), atol=1e-4, rtol=1e-4)


def test_gemma2_config_mapping(tmp_path):
  config, _ = hf_import.load_hf_checkpoint(_saved(_gemma2(), tmp_path))
  assert config.attention_types == (LOCAL, GLOBAL)
  assert config.layer_attention_types == (LOCAL, GLOBAL, LOCAL)
  assert (config.sliding_window, config.query_pre_attn_scalar) == (3, 12)
  assert (config.attn_logits_softcap, config.final_logits_softcap) == (4.0, 3.0)
  assert config.use_post_attn_norm and config.use_post_ffw_norm
  assert config.param_dtype == 'float32'


def test_bfloat16_checkpoint_loads_exactly(tmp_path):
  model = _gemma(num_kv_heads=2).to(torch.bfloat16)
  config, params = hf_import.load_hf_checkpoint(_saved(model, tmp_path))
  assert config.param_dtype == config.dtype == 'bfloat16'
  q_proj = model.model.layers[1].self_attn.q_proj.weight.detach().float().numpy()
  q = params['layer_1']['attn']['q']
  assert q.dtype == ml_dtypes.bfloat16
  np.testing.assert_array_equal(q.astype(np.float32), q_proj.T.reshape(32, 4, 8))

  _, params32 = hf_import.load_hf_checkpoint(tmp_path, dtype='float32')
  assert params32['final_norm']['scale'].dtype == np.float32


# The config.json files of google/gemma-2b and google/gemma-2-2b on the Hub (abridged).
_HUB_GEMMA_2B = {
    'model_type': 'gemma', 'vocab_size': 256000, 'hidden_size': 2048, 'intermediate_size': 16384,
    'num_hidden_layers': 18, 'num_attention_heads': 8, 'num_key_value_heads': 1, 'head_dim': 256,
    'hidden_act': 'gelu', 'rope_theta': 10000.0, 'rms_norm_eps': 1e-06, 'rope_scaling': None}
_HUB_GEMMA2_2B = {
    'model_type': 'gemma2', 'vocab_size': 256000, 'hidden_size': 2304, 'intermediate_size': 9216,
    'num_hidden_layers': 26, 'num_attention_heads': 8, 'num_key_value_heads': 4, 'head_dim': 256,
    'hidden_act': 'gelu_pytorch_tanh', 'hidden_activation': 'gelu_pytorch_tanh',
    'rope_theta': 10000.0, 'rms_norm_eps': 1e-06, 'query_pre_attn_scalar': 256,
    'sliding_window': 4096, 'attn_logit_softcapping': 50.0, 'final_logit_softcapping': 30.0,
    'cache_implementation': 'hybrid'}


@pytest.mark.parametrize('hub_config, preset', [
    (_HUB_GEMMA_2B, 'gemma_2b'), (_HUB_GEMMA2_2B, 'gemma2_2b')])
def test_hub_configs_map_to_the_presets(hub_config, preset):
  assert hf_import.config_from_hf(hub_config) == models.get_config(preset)


def _write_config(folder, **overrides):
  model = _gemma(num_kv_heads=1)
  model.save_pretrained(folder)
  hf = json.loads((folder / 'config.json').read_text())
  hf.update(overrides)
  (folder / 'config.json').write_text(json.dumps(hf))
  return folder


def test_unsupported_model_type_names_the_supported_ones(tmp_path):
  with pytest.raises(hf_import.UnsupportedModelError, match="'llama'.*gemma, gemma2"):
    hf_import.load_hf_checkpoint(_write_config(tmp_path, model_type='llama'))


@pytest.mark.parametrize('override, message', [
    ({'hidden_act': 'relu'}, 'activation'),
    ({'attention_bias': True}, 'attention_bias'),
    ({'rope_parameters': {'rope_type': 'linear', 'factor': 2.0, 'rope_theta': 1e4}}, 'RoPE type'),
])
def test_unsupported_options_are_named(tmp_path, override, message):
  with pytest.raises(hf_import.UnsupportedModelError, match=message):
    hf_import.load_hf_checkpoint(_write_config(tmp_path, **override))


def test_misshapen_missing_and_extra_tensors_are_named():
  model = _gemma(num_kv_heads=1)
  tensors = {name: t.detach().numpy() for name, t in model.state_dict().items()}
  config = hf_import.config_from_hf(model.config.to_dict())

  wrong = dict(tensors)
  wrong['model.layers.1.mlp.up_proj.weight'] = np.zeros((40, 32), np.float32)
  with pytest.raises(hf_import.CheckpointFormatError,
                     match=r"'model.layers.1.mlp.up_proj.weight' has shape \(40, 32\), but"
                           r' config.json implies \(48, 32\)'):
    hf_import.convert_hf_params(wrong, config, 'gemma')

  missing = {k: v for k, v in tensors.items() if k != 'model.norm.weight'}
  with pytest.raises(hf_import.CheckpointFormatError, match="no tensor 'model.norm.weight'"):
    hf_import.convert_hf_params(missing, config, 'gemma')

  extra = dict(tensors, **{'model.layers.0.self_attn.q_proj.bias': np.zeros(32, np.float32)})
  with pytest.raises(hf_import.CheckpointFormatError, match='q_proj.bias'):
    hf_import.convert_hf_params(extra, config, 'gemma')

  untied = dict(tensors, **{'lm_head.weight': np.ones((64, 32), np.float32)})
  with pytest.raises(hf_import.UnsupportedModelError, match='untied'):
    hf_import.convert_hf_params(untied, config, 'gemma')


def test_missing_files_raise(tmp_path):
  with pytest.raises(FileNotFoundError, match='No config.json'):
    hf_import.load_hf_checkpoint(tmp_path)
  (tmp_path / 'config.json').write_text(json.dumps({'model_type': 'gemma'}))
  with pytest.raises(FileNotFoundError, match='No \\*.safetensors'):
    hf_import.load_hf_checkpoint(tmp_path)
