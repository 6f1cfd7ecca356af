"""Tests of bonjax.sharding: meshes, rules, param/optimizer/batch shardings, sharded training."""

import dataclasses

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from bonjax import models, sharding


def test_make_mesh_from_spec():
  mesh = sharding.make_mesh('data:4,tensor:2')
  assert dict(mesh.shape) == {'data': 4, 'fsdp': 1, 'tensor': 2}
  mesh = sharding.make_mesh('data:-1, fsdp:2')
  assert dict(mesh.shape) == {'data': 4, 'fsdp': 2, 'tensor': 1}
  assert dict(sharding.make_mesh('fsdp:2', jax.devices()[:2]).shape)['fsdp'] == 2


@pytest.mark.parametrize('spec, message', [
    ('data:3,tensor:2', r"'data:3,tensor:2' has 6 devices in all but there are 8 devices"),
    ('data:4,model:2', r"at 'model:2'.*axes from \('data', 'fsdp', 'tensor'\)"),
    ('data:four', "size 'four' of 'data' is not an integer"),
    ('data:-1,tensor:-1', 'only one axis may be -1'),
    ('data:-1,tensor:3', '8 devices are not divisible by the product 3'),
    ('data:2,data:4', "axis 'data' given twice"),
    ('', 'empty mesh spec'),
])
def test_bad_mesh_specs_raise_clear_errors(spec, message):
  with pytest.raises(ValueError, match=message):
    sharding.make_mesh(spec)


def test_indivisible_dimensions_fall_back_to_replicated():
  mesh = sharding.make_mesh('data:4,tensor:2')
  specs = {'mqa_k': P('embed', 'kv_heads', 'head_dim'), 'act': ('batch', 'length', 'embed')}
  shapes = {'mqa_k': jax.ShapeDtypeStruct((64, 1, 16), jnp.float32),
            'act': jax.ShapeDtypeStruct((8, 5, 64), jnp.float32)}
  result = sharding.logical_to_sharding(specs, mesh, sharding.DEFAULT_RULES, shapes)
  # 1 KV head cannot split over tensor=2 (fsdp has size 1 here, so it divides anything).
  assert result['mqa_k'].spec == P('fsdp', None, None)
  assert result['act'].spec == P(('data', 'fsdp'), None, None)
  # The KV cache shards over the batch (and KV heads where they divide).
  cache = jax.eval_shape(lambda: models.init_cache(models.get_config('tiny'), 8, 16))
  cache_sh = sharding.logical_to_sharding(models.cache_logical_axes(cache), mesh, shapes=cache)
  assert cache_sh['layers'][0]['k'].spec == P(('data', 'fsdp'), 'tensor', None, None)
  assert cache_sh['index'].spec == P()
  unchecked = sharding.logical_to_sharding(specs, mesh)
  assert unchecked['mqa_k'].spec == P('fsdp', 'tensor', None)


def test_batch_sharding_and_distributed_noop():
  mesh = sharding.make_mesh('data:2,fsdp:2,tensor:2')
  assert sharding.batch_sharding(mesh).spec == P(('data', 'fsdp'))
  assert not sharding.is_multiprocess_environment({'SLURM_NTASKS': '1'})
  assert sharding.is_multiprocess_environment({'TPU_WORKER_HOSTNAMES': 'a,b'})
  assert sharding.initialize_distributed() is False  # one process: nothing to do, twice
  assert sharding.initialize_distributed() is False


def test_host_rows_make_the_global_batch_and_come_back():
  mesh = sharding.make_mesh('data:4,fsdp:2')
  assert sharding.batch_shard_count(mesh) == 8
  assert sharding.batch_shard_count(sharding.make_mesh('data:2,tensor:4')) == 2
  rows = np.arange(16 * 3, dtype=np.int32).reshape(16, 3)
  batch = sharding.host_rows_to_global(rows, mesh)
  assert batch.shape == (16, 3) and batch.sharding.spec == P(('data', 'fsdp'))
  assert {shard.data.shape for shard in batch.addressable_shards} == {(2, 3)}  # split, not copied
  np.testing.assert_array_equal(sharding.global_to_host_rows(batch, mesh), rows)
  with pytest.raises(ValueError, match="prompts has 6 rows over all processes, which the "
                                       "mesh's 8 data-parallel shards do not divide"):
    sharding.host_rows_to_global(rows[:6], mesh, name='prompts')


def _random_params(shapes, seed=0):
  # numpy draws: compiling model.init would cost seconds per mesh on a CPU.
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda x: np.asarray(rng.normal(0.0, 0.2, x.shape), x.dtype), shapes)


def _train_setup(mesh, cfg):
  model = models.Transformer(cfg)
  rules = sharding.DEFAULT_RULES
  tx = optax.adam(1e-2)
  param_sh = models.param_shardings(model, mesh, rules)
  abstract_params = nn.unbox(jax.eval_shape(model.init, jax.random.key(0),
                                            jnp.zeros((1, 1), jnp.int32))['params'])
  opt_sh = sharding.opt_state_shardings(tx, abstract_params, param_sh, mesh)
  batch_sh = sharding.batch_sharding(mesh, rules)

  def loss_fn(params, tokens, mask):
    # Next-token cross-entropy on the real (mask=True) targets: an SFT step.
    logits = model.apply({'params': params}, tokens[:, :-1], input_mask=mask[:, :-1])
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:])
    weights = mask[:, 1:].astype(jnp.float32)
    return jnp.sum(losses * weights) / jnp.sum(weights)

  def train_step(params, opt_state, tokens, mask):
    with nn.logical_axis_rules(rules):
      loss, grads = jax.value_and_grad(loss_fn)(params, tokens, mask)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  step = jax.jit(train_step, in_shardings=(param_sh, opt_sh, batch_sh, batch_sh),
                 out_shardings=(param_sh, opt_sh, sharding.replicated(mesh)), donate_argnums=(0, 1))
  params = sharding.shard_params(_random_params(abstract_params), param_sh)
  opt_state = jax.jit(tx.init, out_shardings=opt_sh)(params)
  return params, opt_state, step


def _run_steps(mesh, cfg, tokens, mask, num_steps=2):
  with jax.set_mesh(mesh):
    params, opt_state, step = _train_setup(mesh, cfg)
    losses = []
    for _ in range(num_steps):
      params, opt_state, loss = step(params, opt_state, tokens, mask)
      losses.append(float(loss))
  return params, opt_state, losses


def test_train_step_same_loss_on_one_and_eight_devices_with_params_sharded():
  cfg = dataclasses.replace(models.get_config('tiny'), num_kv_heads=1)  # MQA: 1 KV head
  tokens = jax.random.randint(jax.random.key(1), (8, 9), 0, cfg.vocab_size, dtype=jnp.int32)
  mask = jnp.arange(9)[None] < jnp.array([9, 7, 9, 5, 8, 9, 6, 9])[:, None]

  _, _, single_losses = _run_steps(sharding.make_mesh('data:1', jax.devices()[:1]), cfg,
                                   tokens, mask)
  mesh = sharding.make_mesh('data:4,tensor:2')
  params, opt_state, losses = _run_steps(mesh, cfg, tokens, mask)

  np.testing.assert_allclose(losses, single_losses, rtol=1e-5, atol=1e-5)
  assert losses[1] < losses[0]  # the step trains

  embedding = params['embedder']['embedding']
  assert embedding.sharding.spec == P('tensor', 'fsdp')
  assert embedding.addressable_shards[0].data.shape == (cfg.vocab_size // 2, cfg.embed_dim)
  gate = params['layer_0']['mlp']['gate']
  assert gate.addressable_shards[0].data.shape == (cfg.embed_dim, cfg.mlp_dim // 2)
  assert params['layer_0']['attn']['q'].sharding.spec == P('fsdp', 'tensor', None)
  # One KV head cannot be split over tensor=2: replicated rather than an error.
  assert params['layer_0']['attn']['k'].sharding.spec == P('fsdp', None, None)
  # Adam's moments follow their params; its step count is replicated.
  adam_state = opt_state[0]
  assert adam_state.mu['embedder']['embedding'].sharding.spec == P('tensor', 'fsdp')
  assert adam_state.count.sharding.spec == P()


def test_fsdp_shards_params_over_the_embed_axis():
  cfg = models.get_config('tiny')
  mesh = sharding.make_mesh('fsdp:4,tensor:2')
  shardings = models.param_shardings(models.Transformer(cfg), mesh)
  assert shardings['layer_0']['mlp']['down'].spec == P('tensor', 'fsdp')
  assert shardings['layer_0']['attn']['o'].spec == P('tensor', None, 'fsdp')
  assert shardings['final_norm']['scale'].spec == P('fsdp')
  abstract = jax.eval_shape(models.Transformer(cfg).init, jax.random.key(0),
                            jnp.zeros((1, 1), jnp.int32))
  params = sharding.shard_params(_random_params(nn.unbox(abstract['params'])), shardings)
  chex.assert_shape(params['layer_0']['mlp']['down'].addressable_shards[0].data,
                    (cfg.mlp_dim // 2, cfg.embed_dim // 4))


@pytest.mark.slow  # Two train-step compilations, one of them 8-device SPMD.
def test_the_newer_families_parameters_shard_and_train_alike_on_one_and_eight_devices():
  # Every option of Gemma 3 / Qwen3 / Llama 3 at once: an untied head, attention biases,
  # query/key norms, SwiGLU, plain norm gains, per-layer-type RoPE with scaling.
  cfg = dataclasses.replace(
      models.get_config('tiny'), tie_embeddings=False, attention_bias=True, qk_norm=True,
      activation='silu', norm_unit_offset=False, scale_embeddings=False,
      attention_types=('local', 'global'), sliding_window=4, local_rope_base=1e4,
      rope_base=1e6, rope_scaling=models.RopeScaling('linear', 8.0))
  mesh = sharding.make_mesh('data:4,tensor:2')
  shardings = models.param_shardings(models.Transformer(cfg), mesh)
  assert shardings['embedder']['unembedding'].spec == P('tensor', 'fsdp')
  attn = shardings['layer_0']['attn']
  assert (attn['q_bias'].spec, attn['k_bias'].spec) == (P('tensor', None), P('tensor', None))
  assert attn['o_bias'].spec == P('fsdp') and attn['q_norm']['scale'].spec == P(None)

  tokens = jax.random.randint(jax.random.key(1), (8, 9), 0, cfg.vocab_size, dtype=jnp.int32)
  mask = jnp.arange(9)[None] < jnp.array([9, 7, 9, 5, 8, 9, 6, 9])[:, None]
  _, _, single_losses = _run_steps(sharding.make_mesh('data:1', jax.devices()[:1]), cfg,
                                   tokens, mask)
  _, _, losses = _run_steps(mesh, cfg, tokens, mask)
  np.testing.assert_allclose(losses, single_losses, rtol=1e-5, atol=1e-5)
  assert losses[1] < losses[0]
