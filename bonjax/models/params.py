"""Building a model's parameters, or only their shapes: the one place that calls `model.init`.

    init_params(model, rng)        -> the unboxed parameter tree (plain arrays)
    abstract_params(model)         -> the same tree of jax.ShapeDtypeStruct (nothing allocated)
    params_logical_axes(model)     -> the same tree of logical PartitionSpecs ('embed', 'heads', ...)
    param_shardings(model, mesh)   -> the same tree of NamedShardings, as `bonjax.sharding`'s rules say

`model` is anything flax-initializable from int32 tokens [B, L] (a `Transformer`, or a module that
wraps one, such as the learned verifier's reward model, given `example_inputs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from bonjax import sharding

PyTree = Any


def _example_inputs(example_inputs: Sequence[jax.Array] | None) -> tuple[jax.Array, ...]:
  # One token is enough: no parameter shape depends on the sequence length.
  return (jnp.zeros((1, 1), jnp.int32),) if example_inputs is None else tuple(example_inputs)


def _boxed(model: nn.Module, rng: jax.Array, example_inputs) -> PyTree:
  return model.init(rng, *_example_inputs(example_inputs))['params']


def init_params(model: nn.Module, rng: jax.Array, *,
                example_inputs: Sequence[jax.Array] | None = None) -> PyTree:
  """Freshly initialized parameters (the value of `variables['params']`, unboxed)."""
  return nn.unbox(_boxed(model, rng, example_inputs))


def abstract_params(model: nn.Module, *,
                    example_inputs: Sequence[jax.Array] | None = None) -> PyTree:
  """The parameters' shapes and dtypes as `jax.ShapeDtypeStruct`s, from `jax.eval_shape`."""
  return nn.unbox(jax.eval_shape(lambda: _boxed(model, jax.random.key(0), example_inputs)))


def params_logical_axes(model: nn.Module, *,
                        example_inputs: Sequence[jax.Array] | None = None) -> PyTree:
  """Each parameter's logical axis names (`PartitionSpec('embed', 'heads', ...)`), from shapes."""
  boxed = jax.eval_shape(lambda: _boxed(model, jax.random.key(0), example_inputs))
  return nn.get_partition_spec(boxed)


def param_shardings(model: nn.Module, mesh: Mesh,
                    rules: sharding.LogicalRules = sharding.DEFAULT_RULES, *,
                    example_inputs: Sequence[jax.Array] | None = None) -> PyTree:
  """NamedShardings of the model's parameters on `mesh`, from shapes alone.

  Dimensions the mesh axes do not divide (one KV head under tensor parallelism, say) are replicated.
  """
  boxed = jax.eval_shape(lambda: _boxed(model, jax.random.key(0), example_inputs))
  return sharding.logical_to_sharding(nn.get_partition_spec(boxed), mesh, rules, nn.unbox(boxed))
