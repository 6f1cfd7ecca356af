"""The one train step: (state, batch) -> (state, metrics), for every method, sharded on a mesh.

    train_step:      method.loss --jax.value_and_grad (summed over microbatches)--> grads
                     --optax update--> new state, metrics
    make_train_step: train_step jitted with explicit in/out shardings and the state donated,
                     traced under the logical axis rules so the model's activation constraints bind;
                     its `accumulate` and `apply` are the same step in pieces, for a batch that
                     arrives in chunks (a rollout's, as each chunk is verified)

`summed_gradients` is the only function in bonjax that computes gradients and `apply_gradients`
the only one that applies an update; `train_step` is the two in one. SFT, BoN-SFT, DCO and every
policy-gradient estimator reach them through their `Method` (`bonjax.train.methods`). Per-sample
weights are computed inside, on the device, from the scores and rewards of the batch, and are
constants of the gradient (docs/bon_math.md §5).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from bonjax import sampling, sharding
from bonjax.train.methods import Method, Policy, PolicyGradient
from bonjax.train.state import TrainState, state_shardings

Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]
PyTree = Any


def _microbatches(batch: Batch, num: int) -> Batch:
  """[B, ...] -> [num, B / num, ...] for every array of the batch."""
  def split(x):
    if x.shape[0] % num:
      raise ValueError(f'the batch of {x.shape[0]} rows does not split into {num} microbatches')
    return x.reshape((num, x.shape[0] // num) + x.shape[1:])
  return jax.tree.map(split, dict(batch))


def summed_gradients(policy: Policy, method: Method, params: PyTree, batch: Batch,
                     ref_params: PyTree | None = None, *, microbatches: int = 1
                     ) -> tuple[tuple[jax.Array, Metrics], PyTree]:
  """((loss, metrics), grads) of `batch`, each summed over its `microbatches` (one at a time)."""

  def loss_fn(params, micro):
    return method.loss(policy, params, micro, ref_params)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  if microbatches == 1:
    return grad_fn(params, batch)
  micro = _microbatches(batch, microbatches)
  shapes = jax.eval_shape(grad_fn, params, jax.tree.map(lambda x: x[0], micro))
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

  def accumulate(total, one_micro):
    return jax.tree.map(jnp.add, total, grad_fn(params, one_micro)), None

  return jax.lax.scan(accumulate, zeros, micro)[0]


def apply_gradients(tx: optax.GradientTransformation, state: TrainState,
                    summed: tuple[tuple[jax.Array, Metrics], PyTree], count: int
                    ) -> tuple[TrainState, Metrics]:
  """The optimizer update on the mean of `count` microbatches' summed ((loss, metrics), grads)."""
  (loss, metrics), grads = summed if count == 1 else jax.tree.map(lambda x: x / count, summed)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads),
                 update_norm=optax.tree.norm(updates), param_norm=optax.tree.norm(params))
  return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics


def train_step(policy: Policy, tx: optax.GradientTransformation, method: Method,
               state: TrainState, batch: Batch, ref_params: PyTree | None = None, *,
               microbatches: int = 1) -> tuple[TrainState, Metrics]:
  """One optimizer update on `batch` (see `bonjax.train.methods` for the batch layouts).

  Args:
    policy: the model and the sampler its rollouts were drawn with.
    tx: the optax optimizer (clipping and schedules included, e.g. `bonjax.train.optimizer`).
    method: the training method, which turns a batch into a loss.
    state: the train state.
    batch: the method's batch, every array with the batch as its leading axis.
    ref_params: the initial policy's params (for the KL metric and penalty), or None.
    microbatches: the batch is split into this many microbatches whose gradients are averaged
      (gradient accumulation: the same update, less activation memory).

  Returns:
    The new state and scalar metrics: loss, grad_norm, update_norm, param_norm and the method's.
  """
  summed = summed_gradients(policy, method, state.params, batch, ref_params,
                            microbatches=microbatches)
  return apply_gradients(tx, state, summed, microbatches)


def batch_shardings(batch: Batch, mesh: Mesh,
                    rules: sharding.LogicalRules = sharding.DEFAULT_RULES) -> dict[str, Any]:
  """Every batch array split over the batch mesh axes on its leading axis; scalars replicated."""
  batched = sharding.batch_sharding(mesh, rules)
  size = sharding.batch_shard_count(mesh, rules)
  out = {}
  for name, value in batch.items():
    if not value.shape:
      out[name] = sharding.replicated(mesh)
    elif value.shape[0] % size:
      raise ValueError(f'batch array {name!r} has {value.shape[0]} rows, which the mesh\'s '
                       f'{size} data-parallel shards do not divide: make the batch size a '
                       f'multiple of {size}')
    else:
      out[name] = batched
  return out


def make_train_step(policy: Policy, tx: optax.GradientTransformation, method: Method, *,
                    mesh: Mesh, rules: sharding.LogicalRules = sharding.DEFAULT_RULES,
                    microbatches: int = 1, with_reference: bool = False
                    ) -> Callable[..., tuple[TrainState, Metrics]]:
  """`train_step` jitted for `mesh`: `step(state, batch[, ref_params]) -> (state, metrics)`.

  The state's shardings are fixed (params and optimizer state as the logical rules say, see
  `bonjax.train.state`) and it is donated; the batch is split over the batch mesh axes; metrics
  are replicated. The step is traced under `rules` and `mesh`, so the `nn.with_logical_constraint`
  annotations inside the model shard the activations. The same function serves `plan` (lowering
  it ahead of time on an abstract state).
  """
  rules = tuple(tuple(rule) for rule in rules)
  shardings = state_shardings(policy.model, tx, mesh, rules)
  ref_shardings = shardings.params if with_reference else None
  replicated = sharding.replicated(mesh)
  step_fn = functools.partial(train_step, policy, tx, method, microbatches=microbatches)

  def traced(state, batch, ref_params=None):
    with nn.logical_axis_rules(rules):
      return step_fn(state, batch, ref_params)

  cache: dict[tuple[str, ...], Callable] = {}

  def jitted(batch: Batch) -> Callable:
    key = tuple(sorted(batch))
    if key not in cache:
      in_shardings = (shardings, batch_shardings(batch, mesh, rules))
      if with_reference:
        in_shardings += (ref_shardings,)
      cache[key] = jax.jit(traced, in_shardings=in_shardings, out_shardings=(shardings, replicated),
                           donate_argnums=0)
    return cache[key]

  def reference(ref_params):
    if (ref_params is not None) != with_reference:
      raise ValueError(f'this step was made with with_reference={with_reference}; pass '
                       f'ref_params {"" if with_reference else "not "}accordingly')
    return (ref_params,) if with_reference else ()

  def arguments(state, batch, ref_params):
    return (state, dict(batch)) + reference(ref_params)

  def step(state: TrainState, batch: Batch, ref_params: PyTree | None = None):
    with jax.set_mesh(mesh):
      return jitted(batch)(*arguments(state, batch, ref_params))

  def lower(state: TrainState, batch: Batch, ref_params: PyTree | None = None):
    """The step lowered for these arguments (arrays or ShapeDtypeStructs): ahead-of-time."""
    with jax.set_mesh(mesh):
      return jitted(batch).lower(*arguments(state, batch, ref_params))

  # The step in pieces: `accumulate` each chunk of a batch as it arrives, then `apply` once. With
  # the batch's microbatches split evenly over its chunks (chunk c holding microbatches
  # c * k .. c * k + k - 1), the sums are the microbatched step's, in the same order.
  def summed(params, batch, ref_params, count):
    with nn.logical_axis_rules(rules):
      return summed_gradients(policy, method, params, batch, ref_params, microbatches=count)

  pieces: dict[tuple[Any, ...], Any] = {}

  def accumulate_fns(params, batch, ref_params, count):
    key = (tuple(sorted(batch)), count)
    if key not in pieces:
      ref_spec = (ref_shardings,) if with_reference else ()
      shapes = jax.eval_shape(functools.partial(summed, count=count), params, dict(batch),
                              ref_params)
      total_shardings = (jax.tree.map(lambda _: replicated, shapes[0]), shardings.params)
      zeros = jax.jit(lambda: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes),
                      out_shardings=total_shardings)
      add = jax.jit(lambda params, total, batch, *ref: jax.tree.map(
                        jnp.add, total, summed(params, batch, ref[0] if ref else None, count)),
                    in_shardings=(shardings.params, total_shardings,
                                  batch_shardings(batch, mesh, rules)) + ref_spec,
                    out_shardings=total_shardings, donate_argnums=1)
      pieces[key] = zeros, add
    return pieces[key]

  def accumulate(params: PyTree, total: Any, batch: Batch, ref_params: PyTree | None = None, *,
                 microbatches: int = 1) -> Any:
    """total + ((loss, metrics), grads) of `batch` summed over its microbatches (total None:
    the first chunk). Dispatched asynchronously; `total` is donated."""
    ref = reference(ref_params)
    with jax.set_mesh(mesh):
      zeros, add = accumulate_fns(params, batch, ref_params, microbatches)
      if total is None:
        total = zeros()
      return add(params, total, dict(batch), *ref)

  def apply(state: TrainState, total: Any, count: int) -> tuple[TrainState, Metrics]:
    """The update on the mean of the `count` microbatches accumulated into `total`."""
    key = ('apply', count, jax.tree.structure(total))
    if key not in pieces:
      total_shardings = jax.tree.map(lambda x: x.sharding, total)
      pieces[key] = jax.jit(lambda state, total: apply_gradients(tx, state, total, count),
                            in_shardings=(shardings, total_shardings),
                            out_shardings=(shardings, replicated), donate_argnums=0)
    with jax.set_mesh(mesh):
      return pieces[key](state, total)

  step.lower = lower
  step.shardings = shardings
  step.accumulate, step.apply, step.microbatches = accumulate, apply, microbatches
  return step


def train_step_for(model: nn.Module, tx: optax.GradientTransformation, method: Method, *,
                   mesh: Mesh, rules: sharding.LogicalRules = sharding.DEFAULT_RULES,
                   sampler: sampling.Sampler | None = None, microbatches: int = 1,
                   track_kl: bool = True) -> Callable[..., tuple[TrainState, Metrics]]:
  """The step `train` runs for this configuration (and `plan` compiles): `make_train_step` of
  the policy that samples with `sampler`, with the initial policy's params as a third argument
  when the method's KL is tracked or penalized.

  The step carries `.policy` and `.with_reference` (whether it takes ref_params).
  """
  policy = Policy(model, sampler) if sampler is not None else Policy(model)
  with_reference = isinstance(method, PolicyGradient) and (track_kl or method.kl_coef > 0)
  step = make_train_step(policy, tx, method, mesh=mesh, rules=rules, microbatches=microbatches,
                         with_reference=with_reference)
  step.policy, step.with_reference = policy, with_reference
  return step
