"""The train state, its shardings, and creating it (or only its shapes) directly on a mesh.

    state_shardings(model, tx, mesh)   TrainState of NamedShardings (params by the logical rules,
                                       optimizer state following its params, scalars replicated)
    abstract_state(model, tx, mesh)    TrainState of ShapeDtypeStructs carrying those shardings:
                                       what a restore reads into, and what `plan` compiles against
    create_state(model, tx, rng, mesh) a fresh state, initialized by one jitted program whose
                                       outputs are already sharded: no full copy on one host
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.sharding import Mesh

from bonjax import models, sharding

PyTree = Any


@struct.dataclass
class TrainState:
  """Everything a step updates: a pytree, so it jits, shards and checkpoints as one."""

  step: jax.Array
  params: PyTree
  opt_state: PyTree

  @classmethod
  def create(cls, params: PyTree, tx: optax.GradientTransformation) -> 'TrainState':
    """A state at step 0 around existing params (on whatever devices they are)."""
    return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def state_shardings(model: nn.Module, tx: optax.GradientTransformation, mesh: Mesh,
                    rules: sharding.LogicalRules = sharding.DEFAULT_RULES) -> TrainState:
  """The shardings of every leaf of the model's `TrainState` under `tx`."""
  params = models.param_shardings(model, mesh, rules)
  opt_state = sharding.opt_state_shardings(tx, models.abstract_params(model), params, mesh)
  return TrainState(step=sharding.replicated(mesh), params=params, opt_state=opt_state)


def abstract_state(model: nn.Module, tx: optax.GradientTransformation, mesh: Mesh,
                   rules: sharding.LogicalRules = sharding.DEFAULT_RULES) -> TrainState:
  """The state's shapes and dtypes, each leaf carrying its sharding; nothing is allocated."""
  shapes = jax.eval_shape(lambda p: TrainState.create(p, tx), models.abstract_params(model))
  return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                      shapes, state_shardings(model, tx, mesh, rules))


def create_state(model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array, mesh: Mesh,
                 rules: sharding.LogicalRules = sharding.DEFAULT_RULES, *,
                 params: PyTree | None = None) -> TrainState:
  """A step-0 state on `mesh`: fresh params from `rng`, or the given `params` (a warm start)."""
  shardings = state_shardings(model, tx, mesh, rules)
  with jax.set_mesh(mesh), nn.logical_axis_rules(tuple(tuple(r) for r in rules)):
    if params is None:
      init = lambda key: TrainState.create(models.init_params(model, key), tx)
      return jax.jit(init, out_shardings=shardings)(rng)
    init = lambda p: TrainState.create(p, tx)
    return jax.jit(init, in_shardings=(shardings.params,), out_shardings=shardings)(params)
