"""Device meshes, logical axis rules and the shardings of params, optimizer state and batches.

The model names the axes of its arrays logically ('batch', 'embed', 'heads', ...). This module owns
the only mapping from those names to the physical mesh axes:

    data    pure data parallelism (params replicated)
    fsdp    data parallelism with params, gradients and optimizer state sharded (ZeRO-3 style)
    tensor  tensor (model) parallelism inside each layer

A logical axis whose size does not divide the mesh axes it maps to (one KV head under MQA and
tensor=2, say) is replicated instead of failing, so one set of rules serves every model size.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ('data', 'fsdp', 'tensor')

LogicalRules = Sequence[tuple[str, str | tuple[str, ...] | None]]

# In order of precedence: a mesh axis already used by an earlier dimension of the same array is
# skipped (so activations [batch, length, embed] shard the batch over fsdp, not the embedding).
DEFAULT_RULES: LogicalRules = (
    ('batch', ('data', 'fsdp')),
    ('vocab', 'tensor'),
    ('mlp', 'tensor'),
    ('heads', 'tensor'),
    ('kv_heads', 'tensor'),
    ('embed', 'fsdp'),
    ('length', None),
    ('head_dim', None),
)


def make_mesh(spec: str, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A Mesh with axes (data, fsdp, tensor) from a spec such as 'data:4,fsdp:2,tensor:1'.

  Axes left out have size 1; one axis may be -1, meaning all remaining devices. The product must
  equal the number of devices (default: all of `jax.devices()`).
  """
  devices = list(jax.devices() if devices is None else devices)
  sizes = parse_mesh_spec(spec)
  unknown_sizes = [axis for axis, size in sizes.items() if size == -1]
  known = int(np.prod([size for size in sizes.values() if size != -1]))
  if len(unknown_sizes) > 1:
    raise ValueError(f'mesh spec {spec!r}: only one axis may be -1, got {unknown_sizes}')
  if unknown_sizes:
    if len(devices) % known:
      raise ValueError(f'mesh spec {spec!r}: {len(devices)} devices are not divisible by the '
                       f'product {known} of the other axes')
    sizes[unknown_sizes[0]] = len(devices) // known
  shape = tuple(sizes.get(axis, 1) for axis in MESH_AXES)
  if int(np.prod(shape)) != len(devices):
    raise ValueError(f'mesh spec {spec!r} has {int(np.prod(shape))} devices in all but there are '
                     f'{len(devices)} devices; make the product of the axis sizes {len(devices)}')
  # jax.make_mesh orders the devices by the physical topology, so that the last (tensor) axis gets
  # the fastest links. Auto axes: the compiler propagates shardings from the ones we set.
  return jax.make_mesh(shape, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(shape),
                       devices=devices)


def parse_mesh_spec(spec: str) -> dict[str, int]:
  sizes: dict[str, int] = {}
  usage = f"expected comma-separated 'axis:size' with axes from {MESH_AXES}, e.g. 'data:4,tensor:2'"
  for part in filter(None, (p.strip() for p in spec.split(','))):
    axis, sep, size = part.partition(':')
    axis = axis.strip()
    if not sep or axis not in MESH_AXES:
      raise ValueError(f'bad mesh spec {spec!r} (at {part!r}): {usage}')
    if axis in sizes:
      raise ValueError(f'bad mesh spec {spec!r}: axis {axis!r} given twice')
    try:
      value = int(size)
    except ValueError:
      raise ValueError(f'bad mesh spec {spec!r}: size {size!r} of {axis!r} is not an integer') from None
    if value <= 0 and value != -1:
      raise ValueError(f'bad mesh spec {spec!r}: size of {axis!r} must be positive or -1')
    sizes[axis] = value
  if not sizes:
    raise ValueError(f'empty mesh spec {spec!r}: {usage}')
  return sizes


def _fit_to_shape(spec: PartitionSpec, shape: Sequence[int] | None, mesh: Mesh) -> PartitionSpec:
  """Replicates every dimension of `shape` that its mesh axes do not divide evenly."""
  if shape is None:
    return spec
  fitted = []
  for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    names = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
    size = int(np.prod([mesh.shape[name] for name in names]))
    fitted.append(axes if dim % size == 0 else None)
  return PartitionSpec(*fitted)


def _is_logical_spec(x: Any) -> bool:
  return isinstance(x, PartitionSpec) or (
      isinstance(x, tuple) and all(n is None or isinstance(n, str) for n in x))


def logical_to_sharding(logical_specs: Any, mesh: Mesh, rules: LogicalRules = DEFAULT_RULES,
                        shapes: Any = None) -> Any:
  """Turns a tree of logical specs (PartitionSpecs or tuples of names) into NamedShardings.

  Args:
    logical_specs: tree whose leaves are PartitionSpec('batch', 'embed') or ('batch', 'embed').
    mesh: the device mesh.
    rules: logical name -> mesh axes, in order of precedence.
    shapes: optional tree of the same structure with arrays or ShapeDtypeStructs (anything with a
      `.shape`); dimensions their mesh axes do not divide are then replicated.
  """
  def to_sharding(logical, shape):
    mesh_spec = nn.logical_to_mesh_axes(tuple(logical), rules)
    mesh_spec = PartitionSpec(*[None if axes == () else axes for axes in mesh_spec])
    return NamedSharding(mesh, _fit_to_shape(mesh_spec, shape, mesh))

  if shapes is None:
    return jax.tree.map(lambda s: to_sharding(s, None), logical_specs, is_leaf=_is_logical_spec)
  return jax.tree.map(lambda s, x: to_sharding(s, x.shape), logical_specs, shapes,
                      is_leaf=_is_logical_spec)


def batch_sharding(mesh: Mesh, rules: LogicalRules = DEFAULT_RULES) -> NamedSharding:
  """Sharding of a batch [B, ...]: the leading axis over the 'batch' mesh axes, the rest whole."""
  return logical_to_sharding(PartitionSpec('batch'), mesh, rules)


def batch_shard_count(mesh: Mesh, rules: LogicalRules = DEFAULT_RULES) -> int:
  """How many data-parallel shards a batch splits into (the product of its batch mesh axes)."""
  spec = batch_sharding(mesh, rules).spec
  axes = spec[0] if spec else None
  axes = () if axes is None else (axes,) if isinstance(axes, str) else axes
  return int(np.prod([mesh.shape[axis] for axis in axes]))


def host_rows_to_global(rows: np.ndarray, mesh: Mesh, rules: LogicalRules = DEFAULT_RULES, *,
                        name: str = 'batch') -> jax.Array:
  """This process's rows [b, ...] of a batch -> the global batch [b * process_count, ...].

  Every process passes the same number of rows: its share of the global batch. The global array is
  split over the batch mesh axes, each process's rows on its own devices, so nothing crosses
  hosts; `global_to_host_rows` gives each process its rows back. `name` is for the error.
  """
  rows = np.asarray(rows)
  shape = (rows.shape[0] * jax.process_count(),) + rows.shape[1:]
  shards = batch_shard_count(mesh, rules)
  if shape[0] % shards:
    raise ValueError(f'{name} has {shape[0]} rows over all processes, which the mesh\'s {shards} '
                     f'data-parallel shards do not divide: make it a multiple of {shards}')
  return jax.make_array_from_process_local_data(batch_sharding(mesh, rules), rows, shape)


def global_to_host_rows(array: jax.Array, mesh: Mesh,
                        rules: LogicalRules = DEFAULT_RULES) -> np.ndarray:
  """This process's rows of a global batch [B, ...] (the inverse of `host_rows_to_global`)."""
  spec = batch_sharding(mesh, rules).spec
  return np.asarray(multihost_utils.global_array_to_host_local_array(array, mesh, spec))


def replicated(mesh: Mesh) -> NamedSharding:
  """A sharding that puts a full copy on every device."""
  return NamedSharding(mesh, PartitionSpec())


def shard_params(params: Any, shardings: Any) -> Any:
  """Places params (plain arrays, not boxed) on devices as `shardings` says."""
  return jax.device_put(params, shardings)


def opt_state_shardings(tx: optax.GradientTransformation, params: Any, shardings: Any,
                        mesh: Mesh) -> Any:
  """Shardings of `tx.init(params)`: every param-shaped part follows the params, the rest
  (step counts, scalars) is replicated.

  Args:
    tx: the optax optimizer.
    params: params or their shapes (ShapeDtypeStructs, e.g. from `jax.eval_shape`).
    shardings: the params' shardings, e.g. from `bonjax.models.param_shardings`.
    mesh: the device mesh.
  """
  abstract_state = jax.eval_shape(tx.init, params)
  return optax.tree_map_params(tx, lambda _, sharding: sharding, abstract_state, shardings,
                               transform_non_params=lambda _: replicated(mesh))


# Environment variables that mark one process of a multi-process job, with the jax.distributed
# cluster auto-detection that reads them.
_MULTIPROCESS_ENV: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ('JAX_COORDINATOR_ADDRESS', bool),  # explicit coordinator (jax reads it itself)
    ('JAX_NUM_PROCESSES', lambda v: int(v) > 1),
    ('TPU_WORKER_HOSTNAMES', lambda v: len(v.split(',')) > 1),  # Cloud TPU pod slices
    ('MEGASCALE_COORDINATOR_ADDRESS', bool),  # multi-slice TPU
    ('SLURM_NTASKS', lambda v: int(v) > 1),
    ('OMPI_COMM_WORLD_SIZE', lambda v: int(v) > 1),  # Open MPI
)


def is_multiprocess_environment(environ: dict[str, str] | None = None) -> bool:
  """Whether the environment describes a job of more than one process."""
  environ = os.environ if environ is None else environ
  for name, is_multi in _MULTIPROCESS_ENV:
    value = environ.get(name, '').strip()
    if value:
      try:
        if is_multi(value):
          return True
      except ValueError:
        continue
  return False


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> bool:
  """Connects the processes of a multi-process job (`jax.distributed.initialize`).

  Call it first thing, before any other jax call. With explicit arguments it always initializes;
  otherwise only when the environment describes several processes (a Cloud TPU pod, SLURM, MPI or
  JAX_COORDINATOR_ADDRESS), letting jax auto-detect the cluster. On a single process it does
  nothing. Calling it again once initialized does nothing. Returns whether the distributed runtime
  is initialized.
  """
  if jax.distributed.is_initialized():
    return True
  explicit = any(a is not None for a in (coordinator_address, num_processes, process_id))
  if not explicit and not is_multiprocess_environment():
    return False
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)
  return True
