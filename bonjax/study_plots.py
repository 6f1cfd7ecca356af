"""The figures of a study (bonjax/study.py): metric@N per arm with intervals, and the differences.

    <name>.png               one panel per metric (pass@N, BoN@N): each arm against N, its
                             interval shaded
    <name>_differences.png   one panel per metric: each comparison a - b against N, its
                             paired interval shaded, the zero line drawn (an interval clear
                             of it is a difference)
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from bonjax.evaluation.report import pyplot
from bonjax.evaluation.stats import METRICS


def _band(ax, ns, cells, label, color) -> None:
  means = np.array([c['mean'] for c in cells])
  ax.plot(ns, means, marker='o', color=color, label=label)
  if 'ci_low' in cells[0]:
    ax.fill_between(ns, [c['ci_low'] for c in cells], [c['ci_high'] for c in cells],
                    color=color, alpha=0.2)


def _axis(ax, ns, ylabel: str) -> None:
  ax.set_xscale('log', base=2)
  ax.set_xticks(ns, [str(n) for n in ns])
  ax.set_xlabel('N (samples)')
  ax.set_ylabel(ylabel)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)


def plot(report: dict[str, Any], out_dir: str, name: str = 'study') -> list[str]:
  """Writes <name>.png (and <name>_differences.png when the report compares arms); returns the
  paths."""
  plt = pyplot()
  ns, metrics = report['ns'], report['metrics']
  colors = plt.get_cmap('tab10').colors
  subtitle = (f'{report["num_problems"]} problems, T = {report["temperature"]:g}, '
              + ('95% CI over problems' if len(report['seeds']) == 1 else
                 f'{len(report["seeds"])} seeds, 95% CI over seeds'))
  fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.8), squeeze=False)
  for ax, metric in zip(axes[0], metrics):
    for i, row in enumerate(report['arms'].values()):
      _band(ax, ns, row[metric], row['label'], colors[i % len(colors)])
    _axis(ax, ns, METRICS[metric])
    ax.set_title(f'{METRICS[metric]}: {subtitle}', fontsize=9)
  fig.tight_layout()
  paths = [os.path.join(out_dir, f'{name}.png')]
  fig.savefig(paths[0], dpi=120)
  plt.close(fig)
  if not report['differences']:
    return paths
  labels = {name: row['label'] for name, row in report['arms'].items()}
  pairs = list(dict.fromkeys((d['a'], d['b']) for d in report['differences']))
  fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.8), squeeze=False)
  for ax, metric in zip(axes[0], metrics):
    for i, (a, b) in enumerate(pairs):
      cells = [d for d in report['differences'] if (d['a'], d['b'], d['metric']) == (a, b, metric)]
      _band(ax, ns, cells, f'{labels[a]} - {labels[b]}', colors[i % len(colors)])
    ax.axhline(0.0, color='black', linewidth=0.8)
    _axis(ax, ns, f'difference in {METRICS[metric]}')
    ax.set_title(f'paired differences: {subtitle}', fontsize=9)
  fig.tight_layout()
  paths.append(os.path.join(out_dir, f'{name}_differences.png'))
  fig.savefig(paths[1], dpi=120)
  plt.close(fig)
  return paths
