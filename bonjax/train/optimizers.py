"""The optimizer of every training job: an optax optimizer by name, behind global-norm clipping.

    optimizer('adamw', learning_rate=@optax.warmup_cosine_decay_schedule(), clip_norm=1.0,
              weight_decay=0.01)

`learning_rate` is a float or any optax schedule (`step -> rate`); the remaining keyword arguments
go to the optax constructor, so every optax optimizer and its options are available by name.
"""

from __future__ import annotations

import inspect
from typing import Any

import optax


def optimizer(name: str = 'adamw', learning_rate: float | optax.Schedule = 1e-3, *,
              clip_norm: float | None = 1.0, **kwargs: Any) -> optax.GradientTransformation:
  """`optax.<name>(learning_rate, **kwargs)`, after clipping gradients to `clip_norm` (None: off)."""
  constructor = getattr(optax, name, None)
  if name.startswith('_') or not callable(constructor) or (
      'learning_rate' not in inspect.signature(constructor).parameters):
    raise ValueError(f'unknown optimizer {name!r}: expected an optax optimizer that takes a '
                     f'learning_rate, e.g. adamw, adam, sgd, adafactor, lion')
  if clip_norm is not None and clip_norm <= 0:
    raise ValueError(f'clip_norm must be positive or None, got {clip_norm}')
  try:
    tx = constructor(learning_rate, **kwargs)
  except TypeError as error:
    raise TypeError(f'optax.{name}: {error}') from None
  if clip_norm is None:
    return tx
  return optax.chain(optax.clip_by_global_norm(clip_norm), tx)
