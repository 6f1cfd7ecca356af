"""The one train step: it learns, accumulates microbatches exactly, and shards as the rules say."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bonjax import sampling, sharding
from bonjax.train import methods, state as state_lib, steps
from tests import helpers

MODEL = helpers.tiny_model()
POLICY = methods.Policy(MODEL, sampling.Temperature(1.0))


def _one_device_mesh():
  return sharding.make_mesh('data:1', jax.devices()[:1])


def _rollout_batch(batch=8, m=4, length=5, seed=0):
  rng = np.random.default_rng(seed)
  vocab = MODEL.config.vocab_size
  return {'prompts': rng.integers(4, vocab, (batch, 6)).astype(np.int32),
          'prompt_lengths': rng.integers(2, 7, (batch,)).astype(np.int32),
          'tokens': rng.integers(4, vocab, (batch, m, length)).astype(np.int32),
          'lengths': rng.integers(1, length + 1, (batch, m)).astype(np.int32),
          'logprobs': -rng.random((batch, m, length)).astype(np.float32),
          'scores': rng.random((batch, m)).astype(np.float32),
          'rewards': (rng.random((batch, m)) > 0.5).astype(np.float32)}


def _state(mesh, tx, model=MODEL):
  return state_lib.create_state(model, tx, jax.random.key(0), mesh,
                                params=jax.device_put(helpers.tiny_params(model)))


def test_sft_step_fits_a_repeated_batch():
  tokens = jax.random.randint(jax.random.key(1), (4, 9), 4, MODEL.config.vocab_size)
  batch = {'inputs': tokens[:, :-1], 'targets': tokens[:, 1:],
           'positions': jnp.broadcast_to(jnp.arange(8), (4, 8)),
           'input_mask': jnp.ones((4, 8), bool),
           'loss_mask': jnp.ones((4, 8), jnp.float32).at[:, :2].set(0.0)}
  tx = optax.adam(1e-2)
  mesh = _one_device_mesh()
  state = _state(mesh, tx)
  step = steps.make_train_step(POLICY, tx, methods.Sft(), mesh=mesh)
  state, first = step(state, batch)
  for _ in range(30):
    state, metrics = step(state, batch)
  assert int(state.step) == 31
  assert float(metrics['loss']) < 0.2 * float(first['loss'])
  assert {'grad_norm', 'update_norm', 'param_norm', 'token_accuracy'} <= set(metrics)


def test_microbatches_accumulate_to_the_full_batch_update():
  tx = optax.sgd(1.0)
  mesh = _one_device_mesh()
  batch = _rollout_batch()
  method = methods.PolicyGradient('bon_rl_s', bon_n=2)
  whole, whole_metrics = steps.make_train_step(POLICY, tx, method, mesh=mesh)(
      _state(mesh, tx), batch)
  split, split_metrics = steps.make_train_step(POLICY, tx, method, mesh=mesh, microbatches=4)(
      _state(mesh, tx), batch)
  chex.assert_trees_all_close(split.params, whole.params, atol=1e-6, rtol=1e-5)
  np.testing.assert_allclose(split_metrics['loss'], whole_metrics['loss'], rtol=1e-5)
  with pytest.raises(ValueError, match='does not split into 3 microbatches'):
    steps.make_train_step(POLICY, tx, method, mesh=mesh, microbatches=3)(_state(mesh, tx), batch)


@pytest.mark.parametrize('mesh_spec', ['data:1', 'data:2,fsdp:2'])
def test_accumulating_chunks_as_they_arrive_is_the_microbatched_step(mesh_spec):
  """A rollout's chunks, accumulated one by one and then applied: the microbatched update."""
  tx = optax.adam(1e-2)
  mesh = sharding.make_mesh(mesh_spec, jax.devices()[:4 if ',' in mesh_spec else 1])
  batch = _rollout_batch()
  method = methods.PolicyGradient('bon_rl_s', bon_n=2)
  step = steps.make_train_step(POLICY, tx, method, mesh=mesh, microbatches=4,
                               with_reference=True)
  ref = _state(mesh, tx).params
  whole, whole_metrics = step(_state(mesh, tx), batch, ref)
  total = None
  for lo in (0, 4):  # two chunks of 4 prompts, each 2 of the 4 microbatches
    chunk = {k: v[lo:lo + 4] for k, v in batch.items()}
    total = step.accumulate(ref, total, chunk, ref, microbatches=2)
  pieces, pieces_metrics = step.apply(_state(mesh, tx), total, 4)
  assert int(pieces.step) == 1
  # The same sums in the same order, compiled as other programs: float32 rounding apart (Adam's
  # g / sqrt(v) turns 1e-8 in a tiny gradient into 1e-6 in an update).
  chex.assert_trees_all_close(pieces.params, whole.params, atol=1e-5, rtol=1e-5)
  chex.assert_trees_all_close(pieces_metrics, whole_metrics, atol=1e-6, rtol=1e-5)
  with pytest.raises(ValueError, match='with_reference=True; pass ref_params'):
    step.accumulate(ref, None, batch)


def _losses(mesh, num_steps=3, model=MODEL):
  tx = optax.adam(1e-3)
  step = steps.make_train_step(methods.Policy(model, sampling.Temperature(1.0)), tx,
                               methods.PolicyGradient('bon_rl_v', bon_n=2), mesh=mesh,
                               with_reference=True)
  state = _state(mesh, tx, model)
  ref = jax.device_put(helpers.tiny_params(model), step.shardings.params)
  losses = []
  for i in range(num_steps):
    state, metrics = step(state, _rollout_batch(seed=i), ref)
    losses.append(float(metrics['loss']))
  return losses, step, state


def test_one_and_eight_devices_give_the_same_losses_and_the_step_is_sharded():
  single, _, _ = _losses(_one_device_mesh())
  mesh = sharding.make_mesh('data:4,fsdp:2')
  sharded, step, state = _losses(mesh)
  np.testing.assert_allclose(sharded, single, rtol=1e-4, atol=1e-4)
  # The state lives on the mesh as the rules say: embeddings split over fsdp.
  embedding = state.params['embedder']['embedding']
  assert embedding.sharding.spec[1] == 'fsdp'
  assert len(embedding.addressable_shards) == 8
  # The lowered program carries the activation constraints of the logical rules.
  batch = _rollout_batch()
  abstract_ref = state_lib.abstract_state(MODEL, optax.adam(1e-3), mesh).params
  lowered = step.lower(state_lib.abstract_state(MODEL, optax.adam(1e-3), mesh), batch,
                       abstract_ref)
  text = lowered.as_text()
  assert text.count('sharding_constraint') + text.count('@Sharding') >= MODEL.config.num_layers
  assert '"fsdp"' in text or 'fsdp' in text


def test_a_scanned_remat_stack_on_eight_devices_trains_as_the_unrolled_one_on_one():
  remat = helpers.tiny_model(remat=True, num_layers=4)
  assert remat.scans and not remat.clone(scan_layers=False).scans
  unrolled, _, _ = _losses(_one_device_mesh(), model=remat.clone(scan_layers=False))
  scanned, _, _ = _losses(sharding.make_mesh('data:4,fsdp:2'), model=remat)
  np.testing.assert_allclose(scanned, unrolled, rtol=1e-4, atol=1e-4)


def test_a_batch_the_mesh_does_not_divide_is_named():
  mesh = sharding.make_mesh('data:4,fsdp:2')
  with pytest.raises(ValueError, match="batch array 'prompts' has 6 rows.*multiple of 8"):
    steps.batch_shardings(_rollout_batch(batch=6), mesh)
