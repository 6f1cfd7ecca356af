"""Tests for bonjax/models/hf_import.py, against the transformers implementation itself."""

import json

import jax
import ml_dtypes
import numpy as np
import pytest

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

from jax.sharding import PartitionSpec as P  # noqa: E402  (after the optional-dependency checks)

from bonjax import models, sharding  # noqa: E402
from bonjax.models import hf_import, layers  # noqa: E402
from bonjax.models.config import GLOBAL, LOCAL, RopeScaling  # noqa: E402
from bonjax.sampling import Greedy, generate  # noqa: E402

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


def _randomize_norms_and_biases(model, seed=0):
  """Norm gains and biases start at 0 or 1 in transformers; random ones make a mixed-up norm
  (or a dropped bias) change the logits. Gemma's post-norm gains get 4 more (a gain of about
  5): otherwise the sqrt(D)-scaled tied embedding of the last token dominates the residual
  stream and greedy decoding soon repeats one token, which would test little."""
  generator = torch.Generator().manual_seed(seed)
  gemma = model.config.model_type.startswith('gemma')
  with torch.no_grad():
    for name, param in model.named_parameters():
      if 'norm' in name or name.endswith('bias'):
        offset = 0.0 if gemma or 'norm' not in name else 1.0
        offset += 4.0 if gemma and '.post_' in name else 0.0
        param.copy_(offset + 0.3 * torch.randn(param.shape, generator=generator))
  return model


def _gemma3(**overrides):
  # 5 local : 1 global as released, a window (3) shorter than the sequences, RoPE bases and the
  # linear scaling of the global layers as in Gemma 3 4B+.
  config = transformers.Gemma3TextConfig(
      num_hidden_layers=6, num_key_value_heads=2, query_pre_attn_scalar=12, sliding_window=3,
      layer_types=['sliding_attention'] * 5 + ['full_attention'],
      rope_parameters={'full_attention': {'rope_type': 'linear', 'factor': 8.0,
                                          'rope_theta': 1e6},
                       'sliding_attention': {'rope_type': 'default', 'rope_theta': 1e4}},
      **_COMMON, **overrides)
  return _randomize_norms_and_biases(transformers.Gemma3ForCausalLM(config))


def _qwen3():
  # Untied output head, and (as Qwen2 had, and Qwen3's config allows) attention biases.
  config = transformers.Qwen3Config(num_hidden_layers=2, num_key_value_heads=2,
                                    tie_word_embeddings=False, attention_bias=True,
                                    rope_parameters={'rope_type': 'default', 'rope_theta': 1e6},
                                    **_COMMON)
  return _randomize_norms_and_biases(transformers.Qwen3ForCausalLM(config))


def _llama3():
  # GQA, tied head as in Llama 3.2, llama3 RoPE scaling whose ramp the head_dim-8 frequencies
  # (wavelengths 6, 167, 4443 and 118k) cover on all three of its pieces.
  config = transformers.LlamaConfig(
      num_hidden_layers=2, num_key_value_heads=1, tie_word_embeddings=True, rms_norm_eps=1e-5,
      max_position_embeddings=131_072,
      rope_parameters={'rope_type': 'llama3', 'rope_theta': 5e5, 'factor': 32.0,
                       'low_freq_factor': 1.0, 'high_freq_factor': 4.0,
                       'original_max_position_embeddings': 8192},
      **_COMMON)
  return _randomize_norms_and_biases(transformers.LlamaForCausalLM(config))


_NEW_FAMILIES = {'gemma3': _gemma3, 'qwen3': _qwen3, 'llama3': _llama3}
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
    (_gemma3, True),  # Gemma 3: + query/key norms, RoPE per layer type, no softcaps
    (_qwen3, False),  # Qwen3: SwiGLU, plain norms, query/key norms, untied head, biases
    (_llama3, True),  # Llama 3: SwiGLU, plain norms, llama3 RoPE scaling, MQA
], ids=['gemma_mqa', 'gemma_mha_sharded', 'gemma2', 'gemma3_sharded', 'qwen3',
        'llama3_sharded'])
def test_logits_match_transformers(tmp_path, make_model, sharded):
  torch.manual_seed(0)
  model = make_model().float().eval()
  folder = _saved(model, tmp_path, **({'max_shard_size': '20KB'} if sharded else {}))
  assert (folder / 'model.safetensors.index.json').exists() == sharded

  config, params = models.load_hf_checkpoint(folder)  # the public entry point

  logits = np.asarray(jax.jit(models.Transformer(config).apply)({'params': params}, _TOKENS))
  np.testing.assert_allclose(logits, _torch_logits(model), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('family', sorted(_NEW_FAMILIES))
def test_greedy_generate_matches_transformers_token_for_token(tmp_path, family):
  """bonjax's sampler (prefill once, prefix-shared cache, right-padded prompts of different
  lengths) against transformers' greedy generate on each prompt alone, over 32 new tokens."""
  torch.manual_seed(0)
  model = _NEW_FAMILIES[family]().float().eval()
  config, params = models.load_hf_checkpoint(_saved(model, tmp_path))
  prompts = [[5, 17, 33, 2, 41], [9, 60, 23]]
  new_tokens = 32
  expected = []
  for prompt in prompts:
    with torch.no_grad():
      out = model.generate(torch.tensor([prompt]), max_new_tokens=new_tokens, do_sample=False,
                           eos_token_id=None, pad_token_id=0)
    expected.append(out[0, len(prompt):].numpy())
  # An id neither greedy continuation emits, so that bonjax's samples also run all 32 steps.
  eos_id = min(set(range(64)) - set(np.concatenate(expected).tolist()))

  padded = np.zeros((len(prompts), 5), np.int32)
  for row, prompt in enumerate(prompts):
    padded[row, :len(prompt)] = prompt
  samples = generate(models.Transformer(config), params, padded,
                     np.array([len(p) for p in prompts], np.int32), num_samples=1,
                     max_new_tokens=new_tokens, rng=jax.random.key(0), sampler=Greedy(),
                     eos_id=eos_id, pad_id=0)
  np.testing.assert_array_equal(np.asarray(samples.tokens[:, 0]), np.stack(expected))


def test_a_checkpoint_loads_onto_a_mesh_sharded(tmp_path):
  torch.manual_seed(0)
  model = _qwen3().float().eval()
  mesh = sharding.make_mesh('data:2,fsdp:2,tensor:2')
  config, params = models.load_hf_checkpoint(_saved(model, tmp_path), mesh=mesh)
  assert params['embedder']['unembedding'].sharding.spec == P('tensor', 'fsdp')
  assert params['layer_0']['attn']['q_bias'].sharding.spec == P('tensor', None)
  assert params['layer_0']['attn']['k_norm']['scale'].sharding.spec == P(None)
  logits = jax.jit(models.Transformer(config).apply)({'params': params}, _TOKENS)
  np.testing.assert_allclose(np.asarray(logits), _torch_logits(model), atol=1e-4, rtol=1e-4)


def test_multimodal_gemma3_loads_its_language_model(tmp_path):
  """Gemma 3 4B and up are released as Gemma3ForConditionalGeneration: the text model is read
  from under its prefix, the vision tower and projector are left out."""
  torch.manual_seed(0)
  text = _gemma3().config
  vision = transformers.SiglipVisionConfig(hidden_size=16, intermediate_size=32,
                                           num_hidden_layers=1, num_attention_heads=2,
                                           image_size=28, patch_size=14)
  config = transformers.Gemma3Config(text_config=text, vision_config=vision,
                                     mm_tokens_per_image=4, boi_token_index=60,
                                     eoi_token_index=61, image_token_index=62)
  model = _randomize_norms_and_biases(
      transformers.Gemma3ForConditionalGeneration(config)).float().eval()
  bonjax_config, params = models.load_hf_checkpoint(_saved(model, tmp_path))
  assert bonjax_config.qk_norm and bonjax_config.rope_scaling == RopeScaling('linear', 8.0)
  logits = jax.jit(models.Transformer(bonjax_config).apply)({'params': params}, _TOKENS)
  np.testing.assert_allclose(np.asarray(logits), _torch_logits(model), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('rope', [
    {'rope_type': 'llama3', 'rope_theta': 5e5, 'factor': 8.0, 'low_freq_factor': 1.0,
     'high_freq_factor': 4.0, 'original_max_position_embeddings': 8192},
    {'rope_type': 'linear', 'rope_theta': 1e6, 'factor': 8.0},
], ids=['llama3', 'linear'])
def test_rope_frequencies_match_transformers_at_full_size(rope):
  from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
  hf = transformers.LlamaConfig(head_dim=128, rope_parameters=rope,
                                max_position_embeddings=131_072)
  expected, _ = ROPE_INIT_FUNCTIONS[rope['rope_type']](hf)
  base, scaling = hf_import.config_from_hf(hf.to_dict()).rope(GLOBAL)
  np.testing.assert_allclose(layers.rope_inv_freq(128, base, scaling), expected.numpy(),
                             rtol=1e-6)


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


def _write_config(folder, **overrides):
  model = _gemma(num_kv_heads=1)
  model.save_pretrained(folder)
  hf = json.loads((folder / 'config.json').read_text())
  hf.update(overrides)
  (folder / 'config.json').write_text(json.dumps(hf))
  return folder


def test_unsupported_model_type_names_the_supported_ones(tmp_path):
  with pytest.raises(hf_import.UnsupportedModelError,
                     match="'mistral'.*gemma, gemma2, gemma3_text, gemma3, qwen3, llama"):
    hf_import.load_hf_checkpoint(_write_config(tmp_path, model_type='mistral'))


@pytest.mark.parametrize('override, message', [
    ({'hidden_act': 'relu'}, 'activation'),
    ({'attention_bias': True}, 'attention_bias'),
    ({'rope_parameters': {'rope_type': 'yarn', 'factor': 2.0, 'rope_theta': 1e4}}, 'RoPE type'),
    ({'tie_word_embeddings': False}, 'tie_word_embeddings=False'),
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
  with pytest.raises(hf_import.UnsupportedModelError, match='differs from the embedding table'):
    hf_import.convert_hf_params(untied, config, 'gemma')


def test_missing_family_tensors_are_named():
  model = _qwen3()
  tensors = {name: t.detach().numpy() for name, t in model.state_dict().items()}
  config = hf_import.config_from_hf(model.config.to_dict())
  for name in ('model.layers.1.self_attn.k_norm.weight', 'model.layers.0.self_attn.o_proj.bias',
               'lm_head.weight'):
    with pytest.raises(hf_import.CheckpointFormatError, match=f"no tensor '{name}'"):
      hf_import.convert_hf_params({k: v for k, v in tensors.items() if k != name}, config,
                                  'qwen3')


def test_missing_files_raise(tmp_path):
  with pytest.raises(FileNotFoundError, match='No config.json'):
    hf_import.load_hf_checkpoint(tmp_path)
  (tmp_path / 'config.json').write_text(json.dumps({'model_type': 'gemma'}))
  with pytest.raises(FileNotFoundError, match='No \\*.safetensors'):
    hf_import.load_hf_checkpoint(tmp_path)
