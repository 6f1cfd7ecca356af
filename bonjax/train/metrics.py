"""Where training metrics go: `<workdir>/metrics.jsonl` and TensorBoard event files.

One JSON object per logged step (`{"step": 12, "loss": 0.41, ...}`), appended and flushed, so a
killed run loses at most the line being written; on resume the lines after the restored step are
dropped (`truncate_after`), so the file always reads as one uninterrupted run. TensorBoard events
are written by tensorboardX (`tensorboard --logdir <workdir>/tensorboard`). Only process 0 writes.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping

import jax

METRICS_FILE = 'metrics.jsonl'


def _plain(value) -> float | int | str:
  if isinstance(value, (int, str)):
    return value
  value = float(value)
  return value if math.isfinite(value) else str(value)


def read_metrics(workdir: str) -> list[dict]:
  """Every logged step of a run, in order."""
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return []
  with open(path, encoding='utf-8') as f:
    return [json.loads(line) for line in f if line.strip().endswith('}')]


class MetricWriter:
  """Appends step metrics to metrics.jsonl and TensorBoard (process 0 only)."""

  def __init__(self, workdir: str, tensorboard: bool = True):
    self._active = jax.process_index() == 0
    self._path = os.path.join(workdir, METRICS_FILE)
    self._tb = None
    if self._active and tensorboard:
      import tensorboardX  # pylint: disable=g-import-not-at-top  (heavy; only where written)
      self._tb = tensorboardX.SummaryWriter(os.path.join(workdir, 'tensorboard'))

  def truncate_after(self, step: int) -> None:
    """Drops the lines of steps > step (written after the checkpoint a run resumes from)."""
    if not self._active or not os.path.exists(self._path):
      return
    kept = [r for r in read_metrics(os.path.dirname(self._path)) if r['step'] <= step]
    with open(self._path + '.tmp', 'w', encoding='utf-8') as f:
      f.writelines(json.dumps(r) + '\n' for r in kept)
    os.replace(self._path + '.tmp', self._path)

  def write(self, step: int, metrics: Mapping[str, float]) -> None:
    if not self._active:
      return
    record = {'step': int(step), **{k: _plain(v) for k, v in metrics.items()}}
    with open(self._path, 'a', encoding='utf-8') as f:
      f.write(json.dumps(record) + '\n')
    if self._tb is not None:
      for name, value in record.items():
        if name != 'step' and isinstance(value, (int, float)):
          self._tb.add_scalar(name, value, global_step=step)

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
