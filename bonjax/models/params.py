"""Building a model's parameters, or only their shapes: the one place that calls `model.init`.

    init_params(model, rng)        -> the unboxed parameter tree (plain arrays)
    abstract_params(model)         -> the same tree of jax.ShapeDtypeStruct (nothing allocated)
    params_logical_axes(model)     -> the same tree of logical PartitionSpecs ('embed', 'heads', ...)
    param_shardings(model, mesh)   -> the same tree of NamedShardings, as `bonjax.sharding`'s rules say
    compare_trees(expected, got)   -> missing, unexpected and misshapen parameters, by path

`model` is a `Transformer`, initialized from int32 tokens [1, 1], or any flax module that names
the inputs it is initialized from with an `example_inputs()` method (such as the learned
verifier's reward model, which reads tokens and lengths).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from bonjax import sharding

PyTree = Any


def _example_inputs(model: nn.Module) -> tuple[jax.Array, ...]:
  """What `model` is initialized with: its `example_inputs()`, else one token [1, 1]."""
  if hasattr(model, 'example_inputs'):
    return tuple(model.example_inputs())
  # One token is enough: no parameter shape depends on the sequence length.
  return (jnp.zeros((1, 1), jnp.int32),)


def _boxed(model: nn.Module, rng: jax.Array) -> PyTree:
  return model.init(rng, *_example_inputs(model))['params']


def init_params(model: nn.Module, rng: jax.Array) -> PyTree:
  """Freshly initialized parameters (the value of `variables['params']`, unboxed)."""
  return nn.unbox(_boxed(model, rng))


def abstract_params(model: nn.Module) -> PyTree:
  """The parameters' shapes and dtypes as `jax.ShapeDtypeStruct`s, from `jax.eval_shape`."""
  return nn.unbox(jax.eval_shape(lambda: _boxed(model, jax.random.key(0))))


def params_logical_axes(model: nn.Module) -> PyTree:
  """Each parameter's logical axis names (`PartitionSpec('embed', 'heads', ...)`), from shapes."""
  return nn.get_partition_spec(jax.eval_shape(lambda: _boxed(model, jax.random.key(0))))


def param_shardings(model: nn.Module, mesh: Mesh,
                    rules: sharding.LogicalRules = sharding.DEFAULT_RULES) -> PyTree:
  """NamedShardings of the model's parameters on `mesh`, from shapes alone.

  Dimensions the mesh axes do not divide (one KV head under tensor parallelism, say) are replicated.
  """
  boxed = jax.eval_shape(lambda: _boxed(model, jax.random.key(0)))
  return sharding.logical_to_sharding(nn.get_partition_spec(boxed), mesh, rules, nn.unbox(boxed))


@dataclasses.dataclass(frozen=True)
class TreeDiff:
  """How a parameter tree differs from the one expected: '/'-joined paths, and both shapes."""

  missing: list[str]
  unexpected: list[str]
  misshapen: list[tuple[str, tuple[int, ...], tuple[int, ...]]]  # (path, expected, actual)

  def __bool__(self) -> bool:
    return bool(self.missing or self.unexpected or self.misshapen)


def path_name(path: tuple[Any, ...]) -> str:
  """'/'-joined names of a pytree key path (dict keys, attributes, sequence indices)."""
  parts = []
  for key in path:
    for attribute in ('key', 'name', 'idx'):
      if hasattr(key, attribute):
        parts.append(str(getattr(key, attribute)))
        break
    else:
      parts.append(str(key))
  return '/'.join(parts)


def compare_trees(expected: PyTree, actual: PyTree) -> TreeDiff:
  """The paths in one tree and not the other, and the leaves whose shapes differ.

  Leaves are anything with a shape (arrays, ShapeDtypeStructs, orbax metadata); a leaf without
  one is compared by path only.
  """
  def shapes(tree):
    return {path_name(path): tuple(leaf.shape) if hasattr(leaf, 'shape') else None
            for path, leaf in jax.tree_util.tree_flatten_with_path(nn.unbox(tree))[0]}

  want, got = shapes(expected), shapes(actual)
  return TreeDiff(
      missing=sorted(set(want) - set(got)), unexpected=sorted(set(got) - set(want)),
      misshapen=[(p, want[p], got[p]) for p in sorted(set(want) & set(got))
                 if None not in (want[p], got[p]) and want[p] != got[p]])
