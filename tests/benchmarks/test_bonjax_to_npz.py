"""The Tunix weight bridge file: what benchmarks/tunix_grpo.py relies on finding in it."""

import json

import chex
import jax
import numpy as np
from flax import traverse_util

from benchmarks import _bonjax_to_npz as bridge
from bonjax import models


def test_npz_holds_config_params_and_logits_of_the_model(tmp_path):
  config = bridge.benchmark_config(vocab_size=64, num_layers=2, embed_dim=32, num_heads=4,
                                   num_kv_heads=2, head_dim=8)
  params = bridge.init_params(config, seed=3)
  prompts = bridge.benchmark_prompts(config, num_prompts=4, prompt_len=16, seed=3)
  path = str(tmp_path / 'model.npz')
  bridge.write_npz(path, config, params, prompts, seed=3)

  with np.load(path) as saved:
    assert models.TransformerConfig(**json.loads(str(saved['config_json']))) == config
    flat = traverse_util.flatten_dict(params, sep='/')
    assert sorted(f'param/{name}' for name in flat) == sorted(
        name for name in saved.files if name.startswith('param/'))
    for name, value in flat.items():
      np.testing.assert_array_equal(saved[f'param/{name}'], value)
    np.testing.assert_array_equal(saved['prompts'], prompts)
    chex.assert_shape(saved['check_tokens'], bridge.CHECK_SHAPE)
    logits = models.Transformer(config).apply({'params': params}, saved['check_tokens'])
    chex.assert_trees_all_close(saved['check_logits'], logits, atol=1e-6)


def test_init_params_draws_norm_scales_so_the_logit_check_covers_them():
  config = bridge.benchmark_config(vocab_size=64, num_layers=1, embed_dim=32, num_heads=2,
                                   num_kv_heads=1, head_dim=8)
  flat = traverse_util.flatten_dict(bridge.init_params(config, seed=0))
  scales = [value for name, value in flat.items() if name[-1] == 'scale']
  assert len(scales) == 3  # pre-attention, pre-ffw and final norm
  assert all(float(jax.numpy.std(scale)) > 0.05 for scale in scales)
