"""Tests of the config presets and their validation."""

import dataclasses
import json

import jax.numpy as jnp
import pytest

from bonjax import models


@pytest.mark.parametrize('name', models.PRESET_NAMES)
def test_every_preset_builds_a_valid_config(name):
  cfg = models.get_config(name)
  assert isinstance(cfg, models.TransformerConfig)
  assert len(cfg.layer_attention_types) == cfg.num_layers
  with pytest.raises(dataclasses.FrozenInstanceError):
    cfg.num_layers = 1  # type: ignore[misc]


def test_unknown_preset_lists_the_valid_names():
  with pytest.raises(ValueError, match=r"unknown model preset 'gemma_3b'.*tiny.*gemma2_9b"):
    models.get_config('gemma_3b')


def test_gemma2_alternates_local_and_global_starting_local():
  cfg = models.get_config('gemma2_2b')
  assert cfg.layer_attention_types[:4] == ('local', 'global', 'local', 'global')
  assert cfg.sliding_window == 4096 and cfg.final_logits_softcap == 30.0
  assert cfg.query_scale == 256 ** -0.5


def test_dtypes_are_normalized_to_names():
  cfg = dataclasses.replace(models.get_config('tiny'), dtype=jnp.bfloat16, param_dtype='float32')
  assert (cfg.dtype, cfg.param_dtype) == ('bfloat16', 'float32')
  assert cfg == dataclasses.replace(cfg, dtype='bfloat16')


@pytest.mark.parametrize('change, message', [
    (dict(num_heads=4, num_kv_heads=3), 'multiple of num_kv_heads'),
    (dict(num_layers=0), 'num_layers must be a positive integer'),
    (dict(head_dim=15), 'head_dim must be even'),
    (dict(attention_types=('local',), sliding_window=None), 'sliding_window'),
    (dict(attention_types=('sliding',)), r"unknown attention types \['sliding'\]"),
    (dict(final_logits_softcap=-1.0), 'final_logits_softcap must be positive'),
    (dict(activation='relu'), r"unknown activation 'relu'"),
    (dict(local_rope_base=0.0), 'local_rope_base must be positive'),
    (dict(rope_scaling={'kind': 'yarn', 'factor': 2.0}), r"unknown RoPE scaling 'yarn'"),
    (dict(rope_scaling={'kind': 'linear', 'factor': 0.0}), 'factor must be positive'),
    (dict(rope_scaling={'kind': 'llama3', 'factor': 8.0, 'low_freq_factor': 4.0,
                        'high_freq_factor': 1.0}), 'low_freq_factor < high_freq_factor'),
])
def test_bad_configs_raise_clear_errors(change, message):
  with pytest.raises(ValueError, match=message):
    dataclasses.replace(models.get_config('tiny'), **change)


def test_rope_scaling_of_the_wrong_type_raises_type_error():
  with pytest.raises(TypeError, match='rope_scaling must be a RopeScaling'):
    dataclasses.replace(models.get_config('tiny'), rope_scaling=8.0)


def test_configs_round_trip_through_json():
  # As the reward model saves its config: dataclasses.asdict -> JSON -> TransformerConfig(**d).
  for name in ('gemma3_4b', 'llama3_1_8b', 'qwen3_8b'):
    cfg = models.get_config(name)
    assert models.TransformerConfig(**json.loads(json.dumps(dataclasses.asdict(cfg)))) == cfg


def test_bad_dtype_raises_type_error():
  with pytest.raises(TypeError, match='not a dtype'):
    dataclasses.replace(models.get_config('tiny'), dtype='float17')
