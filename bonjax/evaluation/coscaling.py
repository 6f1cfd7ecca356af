"""The co-scaling of temperature with N: pass@N(T) ~ exp(a(T) N^b(T)) and the best T for each N.

Chow et al. (2025) observe that pass@N of a fixed policy follows

    pass@N ~ exp(a N^b),   a < 0, b < 0      (so pass@N -> 1 as N grows)

at each temperature T, and that the best temperature T*(N) rises with N: more samples reward
more diversity. Taking logs twice makes the law a line,

    log(-log pass@N) = log(-a) + b log N,

fitted here by least squares over the Ns where 0 < pass@N < 1 (elsewhere the double log is
infinite). The residual is reported both on that line (RMS) and as the largest error of the fitted
pass@N itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

_EDGE = 1e-9  # pass@N within this of 0 or 1 has no finite double log: left out of the fit


def power_law(a: float, b: float, ns: Sequence[float] | np.ndarray) -> np.ndarray:
  """exp(a N^b) at each N."""
  return np.exp(a * np.asarray(ns, np.float64) ** b)


def fit_power_law(ns: Sequence[int], pass_at_n: Sequence[float]) -> dict[str, Any]:
  """Least-squares fit of log(-log pass@N) = log(-a) + b log N.

  Returns {'a', 'b', 'rms_residual' (on the double-log line), 'max_abs_error' (of the fitted
  pass@N over the points used), 'num_points'}; a, b and the residuals are None (with a 'reason')
  when fewer than two Ns have 0 < pass@N < 1.
  """
  ns = np.asarray(ns, np.float64)
  values = np.asarray(pass_at_n, np.float64)
  if ns.shape != values.shape or ns.ndim != 1:
    raise ValueError(f'ns and pass_at_n must be 1-D of one length, got {ns.shape} and '
                     f'{values.shape}')
  usable = np.isfinite(values) & (values > _EDGE) & (values < 1.0 - _EDGE)
  out: dict[str, Any] = {'num_points': int(usable.sum())}
  if out['num_points'] < 2:
    return dict(out, a=None, b=None, rms_residual=None, max_abs_error=None,
                reason=f'{out["num_points"]} N with 0 < pass@N < 1; a fit needs 2')
  x, y = np.log(ns[usable]), np.log(-np.log(values[usable]))
  slope, intercept = np.polyfit(x, y, 1)
  residual = y - (intercept + slope * x)
  a, b = -float(np.exp(intercept)), float(slope)
  return dict(out, a=a, b=b, rms_residual=float(np.sqrt(np.mean(residual ** 2))),
              max_abs_error=float(np.max(np.abs(power_law(a, b, ns[usable]) - values[usable]))))


def _best(temperatures: Sequence[float], values: np.ndarray) -> list[float | None]:
  """The temperature of the largest value in each column of values [T, N] (None: all NaN)."""
  out = []
  for column in values.T:
    out.append(None if np.all(np.isnan(column)) else float(temperatures[int(np.nanargmax(column))]))
  return out


def fit_coscaling(ns: Sequence[int], temperatures: Sequence[float],
                  pass_at_n: np.ndarray) -> dict[str, Any]:
  """The power-law fit at each temperature, and the best temperature T*(N), measured and fitted.

  Args:
    ns: the Ns [N].
    temperatures: the temperatures [T].
    pass_at_n: mean pass@N [T, N].

  Returns:
    {'fits': [one `fit_power_law` dict per temperature, with its 'temperature'],
     't_star': {'n': ns, 'measured': [T*(N) of the measured pass@N],
                'fitted': [T*(N) of the fitted curves, over the temperatures that have a fit]}}
  """
  pass_at_n = np.asarray(pass_at_n, np.float64)
  if pass_at_n.shape != (len(temperatures), len(ns)):
    raise ValueError(f'pass_at_n must be [temperatures, ns] = {(len(temperatures), len(ns))}, '
                     f'got {pass_at_n.shape}')
  fits = [dict(fit_power_law(ns, row), temperature=float(t))
          for t, row in zip(temperatures, pass_at_n)]
  fitted = np.array([power_law(f['a'], f['b'], ns) if f['a'] is not None
                     else np.full(len(ns), np.nan) for f in fits])
  return {'fits': fits,
          't_star': {'n': [int(n) for n in ns], 'measured': _best(temperatures, pass_at_n),
                     'fitted': _best(temperatures, fitted)}}
