"""Training checkpoints: asynchronous orbax saves that restore onto any mesh.

A checkpoint step holds up to four items, each in its own sub-directory:

- ``params``      the model parameters (a pytree of arrays),
- ``opt_state``   the optimizer state (a pytree of arrays),
- ``data_state``  the data iterator's position (a JSON-able dict),
- ``config``      the gin config text the run was started with.

The step number itself is the checkpoint's name, so a resumed run continues from
``latest_step() + 1``.

Crash safety comes from orbax's commit protocol: every save writes into
``<step>.orbax-checkpoint-tmp*`` and renames it to ``<step>`` only once all its
files are written. A process killed mid-save leaves a tmp directory that
``latest_step()`` never reports and that the next ``Checkpointer`` opened on the
directory deletes.

Restoring onto a different mesh: pass ``target`` trees whose leaves carry the new
shardings (``jax.ShapeDtypeStruct(shape, dtype, sharding=...)`` or arrays already
placed on the new mesh); each process then reads only the shards it owns.
"""

from __future__ import annotations

import os
import types
from collections.abc import Mapping
from typing import Any

import jax
import orbax.checkpoint as ocp

from bonjax import models

PyTree = Any

ARRAY_ITEMS = ('params', 'opt_state')
_DATA_STATE = 'data_state'
_CONFIG = 'config'
_CONFIG_KEY = 'gin_config'


class CheckpointMismatchError(ValueError):
  """A checkpoint's arrays do not fit the tree they are restored into."""


def _as_abstract(tree: PyTree) -> PyTree:
  """Replaces arrays by ShapeDtypeStructs that keep their sharding."""

  def leaf_to_abstract(leaf):
    if isinstance(leaf, jax.Array):
      return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding)
    return leaf

  return jax.tree.map(leaf_to_abstract, tree)


def check_compatible(
    item: str, saved: PyTree, target: PyTree, *, step: int | None = None
) -> None:
  """Raises CheckpointMismatchError if `target` cannot hold the saved tree.

  Args:
    item: the item's name, for the message (e.g. 'params').
    saved: the saved tree (arrays or orbax array metadata, anything with .shape).
    target: the tree to restore into (arrays or ShapeDtypeStructs).
    step: the checkpoint step, for the message.
  """
  diff = models.compare_trees(target, saved)
  problems = []
  if diff.missing:
    problems.append(f'in the target but not in the checkpoint: {diff.missing}')
  if diff.unexpected:
    problems.append(f'in the checkpoint but not in the target: {diff.unexpected}')
  problems += [f'{path!r} has shape {saved_shape} in the checkpoint but {target_shape} in the '
               f'target' for path, target_shape, saved_shape in diff.misshapen]
  if problems:
    where = f'step {step} ' if step is not None else ''
    raise CheckpointMismatchError(
        f'Checkpoint {where}item {item!r} does not match the config it is'
        ' restored into (was it saved from a different model config?): '
        + '; '.join(problems)
    )


def _handler_registry() -> ocp.handlers.DefaultCheckpointHandlerRegistry:
  registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
  for item in ARRAY_ITEMS:
    registry.add(item, ocp.args.StandardSave)
    registry.add(item, ocp.args.StandardRestore)
  for item in (_DATA_STATE, _CONFIG):
    registry.add(item, ocp.args.JsonSave)
    registry.add(item, ocp.args.JsonRestore)
  return registry


class Checkpointer:
  """Saves and restores training state as a series of numbered steps.

  Example::

    with Checkpointer(workdir / 'checkpoints', max_to_keep=3) as ckpt:
      start = 0
      if ckpt.latest_step() is not None:
        restored = ckpt.restore(target={'params': abstract_params,
                                        'opt_state': abstract_opt_state})
        params, opt_state = restored['params'], restored['opt_state']
        start = restored['step'] + 1
      for step in range(start, num_steps):
        ...
        ckpt.save(step, params=params, opt_state=opt_state,
                  data_state=it.get_state(), config_text=gin.config_str())

  Saves are asynchronous: `save` returns once the arrays are copied off the
  devices and the files are written in the background; `wait()` blocks until
  they are committed. Must be called from every process of a multi-host job.
  """

  def __init__(
      self,
      directory: str | os.PathLike[str],
      *,
      max_to_keep: int | None = 3,
      save_interval_steps: int = 1,
      async_save: bool = True,
  ):
    """Opens (creating if needed) a checkpoint directory.

    Args:
      directory: where the step directories live.
      max_to_keep: how many of the latest steps to keep; None keeps all.
      save_interval_steps: `save` writes only steps divisible by this (unless
        forced).
      async_save: write in a background thread (True) or block in `save`.
    """
    if max_to_keep is not None and max_to_keep < 1:
      raise ValueError(f'max_to_keep must be None or >= 1, got {max_to_keep}.')
    if save_interval_steps < 1:
      raise ValueError(
          f'save_interval_steps must be >= 1, got {save_interval_steps}.'
      )
    options = ocp.CheckpointManagerOptions(
        save_decision_policy=ocp.checkpoint_managers.FixedIntervalPolicy(
            save_interval_steps
        ),
        preservation_policy=ocp.checkpoint_managers.LatestN(max_to_keep),
        # Deletes what a crashed save left behind, before anything else runs.
        cleanup_tmp_directories=True,
        enable_async_checkpointing=async_save,
        create=True,
    )
    self._manager = ocp.CheckpointManager(
        os.fspath(directory),
        options=options,
        handler_registry=_handler_registry(),
    )

  @property
  def directory(self) -> str:
    return os.fspath(self._manager.directory)

  def latest_step(self) -> int | None:
    """The newest fully committed step, or None if there is none."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """All fully committed steps, oldest first."""
    return sorted(self._manager.all_steps())

  def save(
      self,
      step: int,
      *,
      params: PyTree,
      opt_state: PyTree | None = None,
      data_state: Mapping[str, Any] | None = None,
      config_text: str | None = None,
      force: bool = False,
  ) -> bool:
    """Starts saving one step; returns whether a save was started.

    Args:
      step: the training step; must be after `latest_step()`.
      params: parameter pytree of arrays (unboxed: no flax Partitioned leaves).
      opt_state: optimizer state pytree, if any.
      data_state: JSON-able dict describing the data iterator's position.
      config_text: the gin config string of the run.
      force: save even if `step` is not a multiple of `save_interval_steps`.
    """
    latest = self.latest_step()
    if latest is not None and step <= latest:
      raise ValueError(
          f'Cannot save step {step}: {self.directory} already holds step'
          f' {latest}. A resumed run continues from latest_step() + 1.'
      )
    items = {'params': ocp.args.StandardSave(params)}
    if opt_state is not None:
      items['opt_state'] = ocp.args.StandardSave(opt_state)
    if data_state is not None:
      items[_DATA_STATE] = ocp.args.JsonSave(dict(data_state))
    if config_text is not None:
      items[_CONFIG] = ocp.args.JsonSave({_CONFIG_KEY: config_text})
    return self._manager.save(
        step, args=ocp.args.Composite(**items), force=force
    )

  def restore(
      self,
      step: int | None = None,
      *,
      target: Mapping[str, PyTree] | None = None,
  ) -> dict[str, Any]:
    """Restores one step (the latest by default).

    Args:
      step: which step; None for `latest_step()`.
      target: optional {'params': tree, 'opt_state': tree} giving, per array
        item, the structure, shapes, dtypes and shardings to restore into. Leaves
        are jax.ShapeDtypeStruct (with `sharding` set) or arrays already placed
        on the target mesh. When given, only the items it names are restored;
        when None, every saved item is restored with its saved shardings (which
        needs the same devices as at save time).

    Returns:
      {'step', 'params', 'opt_state', 'data_state', 'config_text'}; items not
      saved (or not requested) are None.

    Raises:
      FileNotFoundError: no committed checkpoint (or not `step`) in the directory.
      CheckpointMismatchError: `target` does not match the saved arrays; the
        message names every mismatching parameter path and both shapes.
    """
    step = self._resolve_step(step)
    saved = self._manager.item_metadata(step)
    if target is not None:
      unknown = sorted(set(target) - set(ARRAY_ITEMS))
      if unknown:
        raise ValueError(
            f'target keys must be among {ARRAY_ITEMS}, got unknown {unknown}.'
        )
      absent = sorted(set(target) - set(saved.keys()))
      if absent:
        raise CheckpointMismatchError(
            f'Checkpoint step {step} in {self.directory} has no {absent};'
            f' it holds {sorted(saved.keys())}.'
        )
      requested = {name: _as_abstract(tree) for name, tree in target.items()}
    else:
      requested = {name: None for name in ARRAY_ITEMS if name in saved.keys()}

    args = {}
    for name, abstract in requested.items():
      if abstract is not None:
        check_compatible(name, saved[name].tree, abstract, step=step)
      args[name] = ocp.args.StandardRestore(abstract)
    for name in (_DATA_STATE, _CONFIG):
      if name in saved.keys():
        args[name] = ocp.args.JsonRestore()
    restored = self._manager.restore(step, args=ocp.args.Composite(**args))

    config = restored[_CONFIG] if _CONFIG in args else None
    return {
        'step': step,
        'params': restored['params'] if 'params' in args else None,
        'opt_state': restored['opt_state'] if 'opt_state' in args else None,
        'data_state': restored[_DATA_STATE] if _DATA_STATE in args else None,
        'config_text': config[_CONFIG_KEY] if config is not None else None,
    }

  def _resolve_step(self, step: int | None) -> int:
    steps = self.all_steps()
    if not steps:
      raise FileNotFoundError(
          f'No checkpoint in {self.directory}: it holds no committed step'
          ' directory. Train first, or point at the directory a run saved to.'
      )
    if step is None:
      return steps[-1]
    if step not in steps:
      raise FileNotFoundError(
          f'No checkpoint for step {step} in {self.directory}; available'
          f' steps: {steps}.'
      )
    return step

  def wait(self) -> None:
    """Blocks until every started save is committed (re-raising its errors)."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases orbax's background threads."""
    self._manager.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(
      self,
      exc_type: type[BaseException] | None,
      exc: BaseException | None,
      traceback: types.TracebackType | None,
  ) -> None:
    self.close()
