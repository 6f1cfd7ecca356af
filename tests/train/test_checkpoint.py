"""Tests for bonjax/train/checkpoint.py."""

import os
import pathlib
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from bonjax.train import checkpoint

_REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def _mesh(data: int, tensor: int) -> Mesh:
  devices = np.array(jax.devices()[: data * tensor]).reshape(data, tensor)
  return Mesh(devices, ('data', 'tensor'))


# Logical layout of the toy model: which mesh axes each parameter is split over.
_SPECS = {
    'embed': P('tensor', 'data'),
    'layer': {'w': P('data', 'tensor'), 'scale': P()},
}


def _params(seed: int = 0) -> dict:
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  return {
      'embed': jax.random.normal(k1, (16, 8)),
      'layer': {
          'w': jax.random.normal(k2, (8, 16)),
          'scale': jax.random.normal(k3, (8,)),
      },
  }


def _shard(tree, mesh: Mesh):
  shardings = jax.tree.map(lambda spec: NamedSharding(mesh, spec), _SPECS)
  return jax.device_put(tree, shardings)


def _abstract(tree, mesh: Mesh):
  return jax.tree.map(
      lambda x, spec: jax.ShapeDtypeStruct(
          x.shape, x.dtype, sharding=NamedSharding(mesh, spec)
      ),
      tree,
      _SPECS,
  )


def _optimizer():
  return optax.adamw(1e-2)


def _abstract_opt_state(params, mesh: Mesh):
  """adamw's moments shard like their parameters; its step count replicates."""
  adam_state, *rest = jax.eval_shape(_optimizer().init, params)
  specs = (adam_state._replace(count=P(), mu=_SPECS, nu=_SPECS), *rest)
  return jax.tree.map(
      lambda x, spec: jax.ShapeDtypeStruct(
          x.shape, x.dtype, sharding=NamedSharding(mesh, spec)
      ),
      (adam_state, *rest),
      specs,
  )


def test_restore_onto_different_mesh_keeps_values_and_uses_new_shardings(
    tmp_path,
):
  save_mesh, restore_mesh = _mesh(4, 2), _mesh(2, 4)
  params = _shard(_params(), save_mesh)
  tx = _optimizer()
  opt_state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  _, opt_state = tx.update(grads, opt_state, params)

  with checkpoint.Checkpointer(tmp_path) as ckpt:
    ckpt.save(
        7,
        params=params,
        opt_state=opt_state,
        data_state={'epoch': 1, 'position': 123},
        config_text='train.steps = 10\n',
    )
    ckpt.wait()

  with checkpoint.Checkpointer(tmp_path) as ckpt:
    restored = ckpt.restore(
        target={
            'params': _abstract(params, restore_mesh),
            'opt_state': _abstract_opt_state(params, restore_mesh),
        }
    )

  assert restored['step'] == 7
  assert restored['data_state'] == {'epoch': 1, 'position': 123}
  assert restored['config_text'] == 'train.steps = 10\n'
  chex.assert_trees_all_equal(restored['params'], params)
  chex.assert_trees_all_equal(restored['opt_state'], opt_state)
  assert jax.tree.structure(restored['opt_state']) == jax.tree.structure(
      opt_state
  )
  for leaf, spec in zip(
      jax.tree.leaves(restored['params']), jax.tree.leaves(_SPECS)
  ):
    assert leaf.sharding == NamedSharding(restore_mesh, spec)
  # A big parameter really is split 2 x 4 on the new mesh.
  w = restored['params']['layer']['w']
  assert {shard.data.shape for shard in w.addressable_shards} == {(4, 4)}
  mu_w = restored['opt_state'][0].mu['layer']['w']
  assert mu_w.sharding == NamedSharding(restore_mesh, _SPECS['layer']['w'])


def test_keeps_last_k_and_resuming_continues_step_count(tmp_path):
  params = _params()
  with checkpoint.Checkpointer(tmp_path, max_to_keep=2) as ckpt:
    for step in range(3):
      ckpt.save(step, params=params, data_state={'position': step})
    ckpt.wait()
    assert ckpt.all_steps() == [1, 2]

  # A new process picks up where the last one stopped.
  with checkpoint.Checkpointer(tmp_path, max_to_keep=2) as ckpt:
    assert ckpt.latest_step() == 2
    resumed = ckpt.restore()
    assert resumed['step'] == 2
    assert resumed['data_state'] == {'position': 2}
    assert resumed['opt_state'] is None and resumed['config_text'] is None
    with pytest.raises(ValueError, match='already holds step 2'):
      ckpt.save(resumed['step'], params=params)
    ckpt.save(resumed['step'] + 1, params=params)
    ckpt.wait()
    assert ckpt.all_steps() == [2, 3]


def test_save_interval_steps_skips_off_interval_steps_unless_forced(tmp_path):
  params = _params()
  with checkpoint.Checkpointer(tmp_path, save_interval_steps=5) as ckpt:
    assert ckpt.save(0, params=params)
    assert not ckpt.save(3, params=params)
    assert ckpt.save(4, params=params, force=True)
    assert ckpt.save(5, params=params)
    ckpt.wait()
    assert ckpt.all_steps() == [0, 4, 5]


def test_crash_mid_save_leaves_previous_step_as_latest(tmp_path):
  directory = tmp_path / 'ckpt'
  num_floats = 8_000_000  # 32 MB: big enough that the kill lands mid-write.
  env = dict(os.environ, PYTHONPATH=str(_REPO_ROOT), JAX_PLATFORMS='cpu')
  env.pop('XLA_FLAGS', None)
  result = subprocess.run(
      [sys.executable, str(pathlib.Path(__file__).with_name('_crash_during_save.py')),
       str(directory), str(num_floats)],
      env=env, capture_output=True, text=True, timeout=120, check=False,
  )
  assert result.returncode == -9, result.stderr[-2000:]
  assert 'committed=False' in result.stdout, result.stdout
  leftovers = [p.name for p in directory.iterdir() if 'tmp' in p.name]
  assert leftovers, 'the killed save should have left its tmp directory'

  with checkpoint.Checkpointer(directory) as ckpt:
    assert ckpt.latest_step() == 1
    restored = ckpt.restore()
    np.testing.assert_array_equal(
        restored['params']['w'], np.full((num_floats,), 1.0, np.float32)
    )
    # The crashed tmp directory must not get in the way of saving step 2 again.
    ckpt.save(2, params={'w': jnp.full((3,), 5.0)})
    ckpt.wait()
    assert ckpt.all_steps() == [1, 2]
    np.testing.assert_array_equal(ckpt.restore(2)['params']['w'], [5.0] * 3)
  assert not [p.name for p in directory.iterdir() if 'tmp' in p.name]


def test_shape_mismatch_names_parameter_path_and_both_shapes(tmp_path):
  params = _params()
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    ckpt.save(0, params=params)
    ckpt.wait()
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    target['layer']['w'] = jax.ShapeDtypeStruct((8, 32), jnp.float32)
    with pytest.raises(
        checkpoint.CheckpointMismatchError,
        match=r"'layer/w' has shape \(8, 16\) in the checkpoint but \(8, 32\)",
    ):
      ckpt.restore(target={'params': target})


def test_structure_mismatch_lists_missing_and_extra_parameters(tmp_path):
  params = _params()
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    ckpt.save(0, params=params)
    ckpt.wait()
    target = {'embed': params['embed'], 'head': params['embed']}
    with pytest.raises(checkpoint.CheckpointMismatchError) as error:
      ckpt.restore(target={'params': target})
  message = str(error.value)
  assert "in the target but not in the checkpoint: ['head']" in message
  assert "in the checkpoint but not in the target: ['layer/scale', 'layer/w']" in message


def test_restore_errors_on_empty_directory_missing_step_and_missing_item(
    tmp_path,
):
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    with pytest.raises(FileNotFoundError, match='No checkpoint in'):
      ckpt.restore()
    ckpt.save(3, params=_params())
    ckpt.wait()
    with pytest.raises(FileNotFoundError, match=r'available steps: \[3\]'):
      ckpt.restore(step=4)
    with pytest.raises(checkpoint.CheckpointMismatchError, match='opt_state'):
      ckpt.restore(target={'opt_state': {}})
    with pytest.raises(ValueError, match='target keys must be among'):
      ckpt.restore(target={'model': {}})


def test_invalid_options_raise(tmp_path):
  with pytest.raises(ValueError, match='max_to_keep'):
    checkpoint.Checkpointer(tmp_path, max_to_keep=0)
  with pytest.raises(ValueError, match='save_interval_steps'):
    checkpoint.Checkpointer(tmp_path, save_interval_steps=0)


def test_restore_target_may_be_arrays_already_on_the_new_mesh(tmp_path):
  params = _shard(_params(), _mesh(4, 2))
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    ckpt.save(0, params=params)
    ckpt.wait()
    placeholder = _shard(jax.tree.map(jnp.zeros_like, _params()), _mesh(2, 4))
    restored = ckpt.restore(target={'params': placeholder})['params']
  chex.assert_trees_all_equal(restored, params)
  chex.assert_trees_all_equal(
      jax.tree.map(lambda x: x.sharding, restored),
      jax.tree.map(lambda x: x.sharding, placeholder),
  )
