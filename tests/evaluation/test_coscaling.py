"""The co-scaling fit recovers known a(T), b(T) and picks the best temperature per N."""

import numpy as np
import pytest

from bonjax.evaluation import coscaling

NS = [1, 2, 4, 8, 16, 32, 64]
# (T, a, b): at low T pass@1 is higher but grows slowly with N; at high T the reverse.
TRUTH = [(0.3, -1.0, -0.15), (0.7, -1.5, -0.35), (1.0, -2.2, -0.55)]


def test_exact_curves_are_recovered_exactly():
  for _, a, b in TRUTH:
    fit = coscaling.fit_power_law(NS, coscaling.power_law(a, b, NS))
    assert fit['a'] == pytest.approx(a, rel=1e-9) and fit['b'] == pytest.approx(b, rel=1e-9)
    assert fit['rms_residual'] < 1e-9 and fit['num_points'] == len(NS)


def test_noisy_curves_are_recovered_within_5_percent():
  rng = np.random.default_rng(0)
  curves = np.array([coscaling.power_law(a, b, NS) for _, a, b in TRUTH])
  noisy = np.clip(curves * (1 + 0.01 * rng.standard_normal(curves.shape)), 1e-6, 1 - 1e-6)
  result = coscaling.fit_coscaling(NS, [t for t, _, _ in TRUTH], noisy)
  for fit, (t, a, b) in zip(result['fits'], TRUTH):
    assert fit['temperature'] == t
    assert fit['a'] == pytest.approx(a, rel=0.05) and fit['b'] == pytest.approx(b, rel=0.05)
    assert fit['rms_residual'] > 0


def test_the_best_temperature_rises_with_n():
  curves = np.array([coscaling.power_law(a, b, NS) for _, a, b in TRUTH])
  t_star = coscaling.fit_coscaling(NS, [t for t, _, _ in TRUTH], curves)['t_star']
  assert t_star['n'] == NS
  assert t_star['measured'] == t_star['fitted']
  assert t_star['measured'][0] == 0.3 and t_star['measured'][-1] == 1.0
  assert t_star['measured'] == sorted(t_star['measured'])


def test_saturated_curves_have_no_fit_and_say_why():
  fit = coscaling.fit_power_law([1, 2, 4], [1.0, 1.0, 0.5])
  assert fit['a'] is None and 'a fit needs 2' in fit['reason']
  with pytest.raises(ValueError, match='must be'):
    coscaling.fit_coscaling([1, 2], [0.5], np.zeros((2, 2)))
