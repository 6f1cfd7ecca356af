"""An evaluation as a person reads it: a printed table, plots, and eval.json.

    curves.png    pass@N and BoN@N against N, one line per temperature, 95% CI bands, and the
                  fitted exp(a N^b) curves dashed
    heatmap.png   pass@N and BoN@N over the T x N grid
    t_star.png    the best temperature T*(N), measured and fitted (per difficulty bucket too)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import numpy as np

from bonjax.evaluation import coscaling
from bonjax.evaluation.results import EvalResults
from bonjax.evaluation.stats import METRICS

PLOTS = ('curves.png', 'heatmap.png', 't_star.png')


def _fmt(value: float | None, spec: str = '.3f') -> str:
  return '-' if value is None or value != value else format(value, spec)


def table(results: EvalResults) -> str:
  """The numbers as text: each metric's mean [CI] per (T, N), the fits and T*(N)."""
  lines = [f'{len(results.problem_indices)} problems, {results.num_samples} samples per problem '
           f'and temperature; {int(results.info.get("confidence", 0.95) * 100)}% bootstrap CIs']
  width = 21
  for metric in results.metrics:
    lines.append('')
    lines.append(f'{METRICS[metric]:>8}' + ''.join(f'{f"N={n}":>{width}}' for n in results.ns))
    stats = results.summary[metric]
    for ti, t in enumerate(results.temperatures):
      cells = [f'{_fmt(stats["mean"][ti, ni])} [{_fmt(stats["ci_low"][ti, ni], ".2f")},'
               f'{_fmt(stats["ci_high"][ti, ni], ".2f")}]' for ni in range(len(results.ns))]
      lines.append(f'{f"T={t:g}":>8}' + ''.join(f'{c:>{width}}' for c in cells))
  lines += ['', 'co-scaling fit pass@N ~ exp(a N^b):',
            f'{"T":>8}{"a":>10}{"b":>10}{"rms resid":>11}{"max |err|":>11}{"points":>8}']
  for fit in results.coscaling['fits']:
    lines.append(f'{fit["temperature"]:>8g}{_fmt(fit["a"], ".4f"):>10}{_fmt(fit["b"], ".4f"):>10}'
                 f'{_fmt(fit["rms_residual"], ".4f"):>11}{_fmt(fit["max_abs_error"], ".4f"):>11}'
                 f'{fit["num_points"]:>8}')
  lines.append(_t_star_line('all', results.coscaling['t_star']))
  for label, bucket in results.buckets.items():
    lines.append(_t_star_line(f'{label} ({bucket["num_problems"]})', bucket['coscaling']['t_star']))
  return '\n'.join(lines)


def _t_star_line(label: str, t_star: dict) -> str:
  pairs = ', '.join(f'N={n}: {_fmt(m, "g")} / {_fmt(f, "g")}'
                    for n, m, f in zip(t_star['n'], t_star['measured'], t_star['fitted']))
  return f'T*(N) measured / fitted, {label}: {pairs}'


def pyplot():
  """matplotlib.pyplot, drawing to files (Agg) except in a notebook, whose inline backend stays."""
  import matplotlib  # pylint: disable=g-import-not-at-top  (optional: only for the figures)
  if 'ipykernel' not in sys.modules:
    matplotlib.use('Agg')  # no window, no display needed: the figures are written to files
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _curves(results: EvalResults, ax, metric: str) -> None:
  ns = np.asarray(results.ns)
  colors = _colors(len(results.temperatures))
  stats = results.summary[metric]
  for ti, t in enumerate(results.temperatures):
    ax.plot(ns, stats['mean'][ti], marker='o', color=colors[ti], label=f'T={t:g}')
    ax.fill_between(ns, stats['ci_low'][ti], stats['ci_high'][ti], color=colors[ti], alpha=0.2)
    fit = results.coscaling['fits'][ti]
    if metric == 'pass' and fit['a'] is not None:
      dense = np.geomspace(ns.min(), ns.max(), 50)
      ax.plot(dense, coscaling.power_law(fit['a'], fit['b'], dense), '--', color=colors[ti],
              alpha=0.7)
  _log2_axis(ax, ns)
  ax.set_ylabel(METRICS[metric])
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)


def _log2_axis(ax, ns) -> None:
  ax.set_xscale('log', base=2)
  ax.set_xticks(list(ns), [str(n) for n in ns])
  ax.set_xlabel('N (samples)')


def _colors(count: int) -> list:
  cmap = pyplot().get_cmap('coolwarm')
  return [cmap(x) for x in np.linspace(0.0, 1.0, max(count, 2))][:count]


def _heatmap(results: EvalResults, ax, metric: str) -> None:
  values = results.summary[metric]['mean']
  image = ax.imshow(values, aspect='auto', origin='lower', cmap='viridis', vmin=0,
                    vmax=max(1.0, float(np.nanmax(values))) if metric != 'max' else None)
  ax.set_xticks(range(len(results.ns)), [str(n) for n in results.ns])
  ax.set_yticks(range(len(results.temperatures)), [f'{t:g}' for t in results.temperatures])
  ax.set_xlabel('N')
  ax.set_ylabel('temperature')
  ax.set_title(METRICS[metric])
  for (ti, ni), value in np.ndenumerate(values):
    ax.text(ni, ti, _fmt(value, '.2f'), ha='center', va='center', fontsize=7, color='white')
  ax.figure.colorbar(image, ax=ax)


def _t_star(results: EvalResults, ax) -> None:
  series = [('all', results.coscaling['t_star'])] + [
      (label, bucket['coscaling']['t_star']) for label, bucket in results.buckets.items()]
  colors = _colors(len(series))
  for (label, t_star), color in zip(series, colors):
    measured = [np.nan if v is None else v for v in t_star['measured']]
    fitted = [np.nan if v is None else v for v in t_star['fitted']]
    ax.plot(t_star['n'], measured, marker='o', color=color, label=f'{label}: measured')
    ax.plot(t_star['n'], fitted, '--', marker='x', color=color, label=f'{label}: fitted')
  _log2_axis(ax, t_star['n'])
  temperatures = results.temperatures
  margin = 0.1 * max(temperatures[-1] - temperatures[0], 0.1)
  ax.set_ylim(temperatures[0] - margin, temperatures[-1] + margin)
  ax.set_yticks(list(temperatures), [f'{t:g}' for t in temperatures])
  ax.set_ylabel('best temperature T*(N) for pass@N')
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)


def plot(results: EvalResults, out_dir: str) -> list[str]:
  """Writes the plots of `PLOTS` into out_dir; returns their paths."""
  plt = pyplot()
  os.makedirs(out_dir, exist_ok=True)
  title = f'{results.info.get("dataset", "")} {results.info.get("split", "")}'.strip()
  figures: list[tuple[str, Callable]] = [
      ('curves.png', lambda axes: [_curves(results, ax, m) for ax, m in zip(axes, ('pass', 'bon'))]),
      ('heatmap.png', lambda axes: [_heatmap(results, ax, m)
                                    for ax, m in zip(axes, ('pass', 'bon'))]),
      ('t_star.png', lambda axes: _t_star(results, axes[0])),
  ]
  paths = []
  for name, draw in figures:
    panels = 1 if name == 't_star.png' else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4), squeeze=False)
    draw(list(axes[0]))
    fig.suptitle(f'{title}: {len(results.problem_indices)} problems, '
                 f'{results.num_samples} samples each')
    fig.tight_layout()
    paths.append(os.path.join(out_dir, name))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
  return paths


def write_report(results: EvalResults, out_dir: str,
                 log: Callable[[str], None] | None = print) -> dict[str, str]:
  """eval.json and the plots in out_dir, and the table through `log`; returns the paths."""
  paths = {'eval.json': results.save(out_dir)}
  paths.update(zip(PLOTS, plot(results, out_dir)))
  if log is not None:
    log(table(results))
    log(f'wrote {", ".join(sorted(paths))} in {out_dir}')
  return paths
