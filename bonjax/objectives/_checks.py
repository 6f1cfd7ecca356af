"""Argument validation shared by the public functions (private).

Everything here runs on static information (shapes, dtypes, Python ints), so a bad call fails with
one clear error while `jax.jit` traces it, never with a silent NaN at run time.
"""

from __future__ import annotations

import numbers
from typing import Optional

import jax.numpy as jnp
import numpy as np


def compute_dtype(*arrays: jnp.ndarray) -> jnp.dtype:
  """The float dtype to compute in: at least float32 (bf16/f16/int/bool inputs are promoted).

  float64 inputs stay float64 when x64 is enabled, which the exactness tests rely on.
  """
  return jnp.promote_types(jnp.result_type(*arrays), jnp.float32)


def group_array(x, name: str) -> jnp.ndarray:
  """`x` as an array of per-prompt groups `[..., M]` (at least one axis)."""
  x = jnp.asarray(x)
  if x.ndim < 1:
    raise ValueError(f"{name} must have shape [batch, M] (samples on the last axis); got a scalar.")
  return x


def same_shape(reference_name: str, reference: jnp.ndarray, **others: Optional[jnp.ndarray]) -> None:
  """Raises ValueError unless every non-None array in `others` has `reference`'s shape."""
  for name, value in others.items():
    if value is not None and tuple(value.shape) != tuple(reference.shape):
      raise ValueError(
          f"{name} must have the same shape as {reference_name} {tuple(reference.shape)}; "
          f"got {tuple(value.shape)}.")


def group_mask(mask, shape: tuple[int, ...], name: str = "mask") -> jnp.ndarray:
  """A boolean mask of `shape` (all True when `mask` is None)."""
  if mask is None:
    return jnp.ones(shape, dtype=bool)
  mask = jnp.asarray(mask)
  if tuple(mask.shape) != tuple(shape):
    raise ValueError(f"{name} must have shape {tuple(shape)} (one entry per sample); "
                     f"got {tuple(mask.shape)}.")
  return mask.astype(bool)


def static_int(value, name: str, *, low: int, high: Optional[int] = None,
               high_name: str = "M (samples per prompt)") -> int:
  """`value` as a Python int in [low, high]; it must be static (not a traced array)."""
  if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
    raise TypeError(f"{name} must be a static Python int (mark it static under jit); "
                    f"got {type(value).__name__}.")
  value = int(value)
  if value < low or (high is not None and value > high):
    bound = f"{low} <= {name}" + (f" <= {high_name} = {high}" if high is not None else "")
    raise ValueError(f"{name} must satisfy {bound}; got {name}={value}.")
  return value


def static_ints(value, name: str, *, low: int, high: int) -> tuple[tuple[int, ...], bool]:
  """One static int or a sequence of them; returns (ints, was_sequence)."""
  if isinstance(value, (list, tuple, np.ndarray)):
    values = tuple(static_int(v, name, low=low, high=high) for v in np.asarray(value).ravel())
    if not values:
      raise ValueError(f"{name} must be an int or a non-empty sequence of ints; got an empty one.")
    return values, True
  return (static_int(value, name, low=low, high=high),), False


def choice(value: str, name: str, allowed: tuple[str, ...]) -> str:
  if value not in allowed:
    raise ValueError(f"{name} must be one of {allowed}; got {value!r}.")
  return value
