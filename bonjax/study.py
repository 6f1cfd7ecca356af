"""A study: several policies trained on one task, each evaluated over (N, T), compared with CIs.

    arms = {'sft': Arm(Sft(), ...), 'rl': Arm(PolicyGradient('rloo'), start='sft', ...),
            'bon_rl': Arm(PolicyGradient('bon_rl_s', bon_n=4), start='sft', ...)}
    for seed in seeds:
      for arm in arms, each after the arm it starts from:
        `bonjax.train.train`           -> <workdir>/seed_<s>/<arm>/          (a resumable run)
        `bonjax.evaluation.evaluate`   -> <workdir>/seed_<s>/<arm>/eval/     (eval.json, samples)
    compare: each arm's metric@N with its interval; each (a, b) of `comparisons` as a difference,
      paired over the problems (`bonjax.evaluation.paired_difference`)
    -> <workdir>/<report_name>.json, .md (the tables), .png (pass@N, BoN@N), _differences.png
       (report_name: 'study' unless given)

A study is a composition of the training loop and the evaluation, nothing more: every arm is an
ordinary run directory, and a killed study resumes where it stopped (finished runs and
evaluations are read back, not redone). `bonjax demo` is one (bonjax/demo.py); the reproduction
study of docs/reproduction.md is others (experiments/arith/reproduce/).

Uncertainty. With one seed, an interval is the bootstrap over the evaluation problems
(`bonjax.evaluation.stats`): it says how well the K problems pin down that policy's value. With
several seeds (each retrains every arm: its initialization, data order and rollouts), the
interval is Student's t over the seeds' values, which also covers the training noise; the seeds'
own values are in study.json, and a difference reports in how many seeds its paired interval
excludes 0.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import optax

from bonjax import data, evaluation, models, sampling, verifiers
from bonjax import train as train_lib
from bonjax.evaluation.stats import METRICS
from bonjax.train.metrics import read_metrics

_T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
          9: 2.262, 10: 2.228}  # Student's t quantiles, two-sided 95%, by degrees of freedom


@dataclasses.dataclass(frozen=True)
class Arm:
  """One policy of a study: `method` trained for `num_steps` steps of `batch_size`.

  Attributes:
    method: what it optimizes (`bonjax.train.methods`).
    num_steps: optimizer steps.
    batch_size: examples (SFT) or prompts (rollouts) per step.
    optimizer: an optax optimizer (default: `train`'s).
    start: the arm whose final policy it starts from (None: a fresh initialization).
    rollout: how its prompts are sampled (default: the study's rollout).
    verifier: the scores its BoN selection reads in training (default: the study's verifier),
      e.g. a noisy verifier for RL-V against BoN-RL-V.
    label: its name in the tables and plots (default: the arm's key).
  """

  method: train_lib.Method
  num_steps: int
  batch_size: int
  optimizer: optax.GradientTransformation | None = None
  start: str | None = None
  rollout: train_lib.Rollout | None = None
  verifier: verifiers.VerifierProtocol | None = None
  label: str | None = None


def training_order(arms: Mapping[str, Arm]) -> list[str]:
  """The arms' names, each after the arm it starts from; a clear error on a bad `start`."""
  order: list[str] = []
  for name in arms:
    chain = [name]
    while arms[chain[-1]].start is not None:
      start = arms[chain[-1]].start
      if start not in arms:
        raise ValueError(f'arm {chain[-1]!r} starts from {start!r}, which is not an arm of the '
                         f'study; the arms are {sorted(arms)}')
      if start in chain:
        raise ValueError(f'arms start from each other in a cycle: {" <- ".join(chain + [start])}')
      chain.append(start)
    order += [arm for arm in reversed(chain) if arm not in order]
  return order


def _check(arms, comparisons, seeds, ns, eval_samples) -> None:
  if not arms:
    raise ValueError('a study needs at least one arm')
  training_order(arms)
  for pair in comparisons:
    if len(pair) != 2 or any(arm not in arms for arm in pair):
      raise ValueError(f'a comparison is a pair of arm names, got {pair!r}; the arms are '
                       f'{sorted(arms)}')
  if not seeds or len(set(seeds)) != len(seeds):
    raise ValueError(f'seeds must be distinct and at least one, got {list(seeds)}')
  evaluation.results.check_grid(ns, [1.0], eval_samples)


def run_study(workdir: str, *, model: models.Transformer, task: data.Task,
              arms: Mapping[str, Arm], reward: verifiers.VerifierProtocol,
              verifier: verifiers.VerifierProtocol | None = None,
              rollout: train_lib.Rollout | None = None,
              comparisons: Sequence[Sequence[str]] = (), seeds: Sequence[int] = (0,),
              ns: Sequence[int] = (1, 2, 4, 8, 16, 32), temperatures: Sequence[float] = (1.0,),
              report_temperature: float | None = None,
              eval_samples: int | None = None, eval_problems: int | None = 128,
              eval_verifier: verifiers.VerifierProtocol | None = None,
              eval_batch_size: int = 32, checkpoint_every: int = 100,
              report_name: str = 'study', dry_run: bool = False, progress: bool = True,
              log: Callable[[str], None] = print) -> dict[str, Any]:
  """Trains and evaluates every arm for every seed; returns (and writes) the comparison.

  Args:
    workdir: where the runs, their evaluations and the report go (resumed when it holds them).
    model: the policy architecture every arm trains.
    task: the dataset, its formats and tokenizer.
    arms: name -> `Arm`.
    reward: the task reward R that training learns from and evaluation credits.
    verifier: the scores s that BoN selection reads in training (default: R, an oracle).
    rollout: how prompts are sampled in training (arms that need rollouts).
    comparisons: (a, b) pairs of arm names: a minus b is reported with a paired interval.
    seeds: one full study per seed (the training seed; evaluation samples with it too).
    ns: the Ns of pass@N and BoN@N.
    temperatures: evaluation temperatures (more than one adds the co-scaling of T with N to
      the report: each arm's best temperature T*(N) and the fit of pass@N(T)).
    report_temperature: the temperature of the tables and plots (default: the only one, or 1.0).
    eval_samples: M samples per problem and temperature (default max(ns)).
    eval_problems: the first this many problems of the eval split (None: all).
    eval_verifier: the scores BoN@N selects by at evaluation (default: `verifier`).
    eval_batch_size: problems per `generate` call in evaluation.
    checkpoint_every: each training run saves every this many steps.
    report_name: the report's files are <report_name>.json, .md, .png and _differences.png
      (studies that share a workdir, and so their common arms, give each a name).
    dry_run: check the study and return its plan ({'order', 'run_dirs'}), training nothing.
    progress: progress bars.
    log: where progress lines go.
  """
  arms, ns, seeds = dict(arms), tuple(ns), tuple(seeds)
  comparisons = [tuple(pair) for pair in comparisons]
  _check(arms, comparisons, seeds, ns, eval_samples)
  temperatures = tuple(sorted(evaluation.results.check_temperatures(temperatures)))
  if report_temperature is None:
    report_temperature = temperatures[0] if len(temperatures) == 1 else 1.0
  if not any(math.isclose(report_temperature, t) for t in temperatures):
    raise ValueError(f'report_temperature {report_temperature} is not one of the evaluation '
                     f'temperatures {list(temperatures)}')
  verifier = verifier if verifier is not None else reward
  eval_verifier = eval_verifier if eval_verifier is not None else verifier
  order = training_order(arms)
  run_dirs = [os.path.join(workdir, f'seed_{seed}', name) for seed in seeds for name in order]
  if dry_run:
    return {'order': order, 'run_dirs': run_dirs, 'temperatures': list(temperatures)}
  if task.data_dir is None:  # every arm reads the one copy of the prepared data
    task = dataclasses.replace(task, data_dir=os.path.join(workdir, 'data'))
  start = time.time()
  results: dict[int, dict[str, evaluation.EvalResults]] = {}
  diversity: dict[int, dict[str, dict[str, float]]] = {}
  for seed in seeds:
    results[seed], diversity[seed] = {}, {}
    for name in order:
      arm = arms[name]
      run_dir = os.path.join(workdir, f'seed_{seed}', name)
      began = time.time()
      train_lib.train(
          run_dir, model=model, method=arm.method, optimizer=arm.optimizer, task=task,
          num_steps=arm.num_steps, batch_size=arm.batch_size,
          rollout=arm.rollout or rollout,
          verifier=arm.verifier or verifier, reward=reward, seed=seed,
          init=(train_lib.InitFrom(os.path.join(workdir, f'seed_{seed}', arm.start))
                if arm.start else None),
          checkpoint_every=checkpoint_every, progress=progress)
      results[seed][name] = _evaluate(run_dir, model, task, ns, temperatures, eval_samples,
                                      eval_problems, eval_verifier, reward, eval_batch_size,
                                      seed, progress)
      diversity[seed][name] = _diversity(run_dir, report_temperature)
      log(f'seed {seed} {name}: {arm.num_steps} steps, '
          f'pass@{ns[-1]} {results[seed][name].mean("pass", ns[-1], report_temperature):.3f} '
          f'({time.time() - began:.0f} s)')
  report = _report(arms, results, diversity, comparisons, ns, temperatures, report_temperature)
  report['seconds'] = time.time() - start
  _write(workdir, report_name, report, log)
  return report


def _evaluate(run_dir, model, task, ns, temperatures, eval_samples, eval_problems, verifier,
              reward, batch_size, seed, progress) -> evaluation.EvalResults:
  out_dir = os.path.join(run_dir, 'eval')
  saved = os.path.join(out_dir, evaluation.results.RESULTS_FILE)
  if os.path.exists(saved):
    results = evaluation.EvalResults.load(saved)
    if results.ns == ns and results.temperatures == tuple(temperatures):
      return results
  results = evaluation.evaluate(
      run_dir, model=model, task=task, ns=ns, temperatures=temperatures, verifier=verifier,
      reward=reward, num_samples=eval_samples, num_problems=eval_problems,
      batch_size=batch_size, seed=seed, out_dir=out_dir, mesh=None, progress=progress)
  results.save(out_dir)
  return results


def _diversity(run_dir: str, temperature: float) -> dict[str, float]:
  """Distinct final answers per problem among the evaluation's samples; the policy's entropy
  per token on its last training rollout (rollout arms)."""
  samples = [r for r in evaluation.load_samples(os.path.join(run_dir, 'eval'))
             if math.isclose(r['temperature'], temperature)]
  distinct = [len({a for a in r['answers'] if a is not None}) for r in samples if 'answers' in r]
  out = {'distinct_answers': float(np.mean(distinct)) if distinct else float('nan')}
  logged = [m for m in read_metrics(run_dir) if 'entropy_per_token' in m]
  if logged:
    out['train_entropy'] = float(logged[-1]['entropy_per_token'])
  return out


def _over_seeds(values: Sequence[float]) -> dict[str, float]:
  """Mean and 95% interval: Student's t over seeds (one seed: no interval from this)."""
  values = np.asarray(values, np.float64)
  mean = float(values.mean())
  if len(values) < 2:
    return {'mean': mean}
  half = _T_975.get(len(values) - 1, 1.96) * values.std(ddof=1) / math.sqrt(len(values))
  return {'mean': mean, 'ci_low': mean - half, 'ci_high': mean + half}


def _report(arms, results, diversity, comparisons, ns, temperatures, t0) -> dict[str, Any]:
  seeds = list(results)
  metrics = [m for m in ('pass', 'bon') if m in next(iter(results[seeds[0]].values())).metrics]
  table: dict[str, Any] = {}
  for name, arm in arms.items():
    row = {'label': arm.label or name, 'method': repr(arm.method), 'num_steps': arm.num_steps}
    for metric in metrics:
      cells = []
      for n in ns:
        per_seed = [results[s][name].mean(metric, n, t0) for s in seeds]
        cell = _over_seeds(per_seed)
        if len(seeds) == 1:
          cell['ci_low'], cell['ci_high'] = results[seeds[0]][name].interval(metric, n, t0)
        cells.append(dict(cell, n=n, seeds=per_seed))
      row[metric] = cells
    row['diversity'] = {key: _over_seeds([diversity[s][name][key] for s in seeds])
                        for key in diversity[seeds[0]][name]}
    if len(temperatures) > 1:
      row['coscaling'] = [results[s][name].coscaling for s in seeds]
    table[name] = row
  differences = []
  for a, b in comparisons:
    for metric in metrics:
      for n in ns:
        paired = [evaluation.paired_difference(results[s][a], results[s][b], metric, n, t0,
                                               seed=s) for s in seeds]
        cell = _over_seeds([p['difference'] for p in paired])
        if len(seeds) == 1:
          cell['ci_low'], cell['ci_high'] = paired[0]['ci_low'], paired[0]['ci_high']
        excludes = sum((p['ci_low'] > 0) or (p['ci_high'] < 0) for p in paired)
        differences.append(dict(cell, a=a, b=b, metric=metric, n=n, per_seed=paired,
                                seeds_excluding_zero=int(excludes)))
  return {'seeds': seeds, 'ns': list(ns), 'temperatures': list(temperatures), 'temperature': t0,
          'num_problems': len(results[seeds[0]][next(iter(arms))].problem_indices),
          'num_samples': results[seeds[0]][next(iter(arms))].num_samples,
          'metrics': metrics, 'arms': table, 'differences': differences}


def _cell(cell: dict[str, float], signed: bool = False) -> str:
  spec = '+.3f' if signed else '.3f'
  if 'ci_low' not in cell:
    return format(cell['mean'], spec)
  return f'{cell["mean"]:{spec}} [{cell["ci_low"]:.2f}, {cell["ci_high"]:.2f}]'


def tables(report: dict[str, Any]) -> str:
  """The report's tables in Markdown: each metric by arm and N, then each difference."""
  ns, seeds = report['ns'], report['seeds']
  how = ('95% bootstrap interval over the problems' if len(seeds) == 1 else
         f'mean over {len(seeds)} seeds, 95% t-interval over the seeds')
  lines = [f'{report["num_problems"]} test problems, {report["num_samples"]} samples each at '
           f'T = {report["temperature"]:g}; {how}.', '']
  head = '| policy | ' + ' | '.join(f'N = {n}' for n in ns) + ' |'
  rule = '|---' * (len(ns) + 1) + '|'
  for metric in report['metrics']:
    lines += [f'**{METRICS[metric]}**', '', head, rule]
    for row in report['arms'].values():
      lines.append(f'| {row["label"]} | ' + ' | '.join(_cell(c) for c in row[metric]) + ' |')
    lines.append('')
  if report['differences']:
    lines += ['**Differences** (paired over the problems'
              + (', then over the seeds' if len(seeds) > 1 else '') + ')', '', head, rule]
    labels = {name: row['label'] for name, row in report['arms'].items()}
    keys = sorted({(d['a'], d['b'], d['metric']) for d in report['differences']},
                  key=[(d['a'], d['b'], d['metric']) for d in report['differences']].index)
    for a, b, metric in keys:
      cells = [d for d in report['differences'] if (d['a'], d['b'], d['metric']) == (a, b, metric)]
      lines.append(f'| {METRICS[metric]}: {labels[a]} - {labels[b]} | '
                   + ' | '.join(_cell(c, signed=True) for c in cells) + ' |')
    lines.append('')
  lines += _coscaling_lines(report)
  diversity = [(row['label'], row['diversity']) for row in report['arms'].values()]
  keys = list(dict.fromkeys(k for _, values in diversity for k in values))
  if keys:
    lines += ['**Diversity** (distinct final answers among the samples of a problem; the '
              'entropy of the policy on its last training rollout, per token)', '',
              '| policy | ' + ' | '.join(keys) + ' |', '|---' * (len(keys) + 1) + '|']
    for label, values in diversity:
      lines.append(f'| {label} | ' + ' | '.join(
          _cell(values[k]) if k in values else '' for k in keys) + ' |')
    lines.append('')
  return '\n'.join(lines)


def _coscaling_lines(report: dict[str, Any]) -> list[str]:
  """T*(N) per arm (each seed's), and how well exp(a(T) N^b(T)) fits pass@N at each T."""
  rows = [row for row in report['arms'].values() if 'coscaling' in row]
  if not rows:
    return []
  ns, temperatures = report['ns'], report['temperatures']
  fmt = lambda values: ', '.join('-' if v is None else f'{v:g}' for v in values)
  lines = ['**Co-scaling**: the best temperature T*(N) for pass@N, measured (fitted), one value '
           'per seed', '', '| policy | ' + ' | '.join(f'N = {n}' for n in ns) + ' |',
           '|---' * (len(ns) + 1) + '|']
  for row in rows:
    cells = [f'{fmt([c["t_star"]["measured"][i] for c in row["coscaling"]])} '
             f'({fmt([c["t_star"]["fitted"][i] for c in row["coscaling"]])})'
             for i in range(len(ns))]
    lines.append(f'| {row["label"]} | ' + ' | '.join(cells) + ' |')
  lines += ['', '**Fit of pass@N = exp(a N^b)** at each temperature: b, and the largest '
            '|fitted - measured| pass@N (mean over seeds)', '',
            '| policy | ' + ' | '.join(f'T = {t:g}' for t in temperatures) + ' |',
            '|---' * (len(temperatures) + 1) + '|']
  for row in rows:
    cells = []
    for ti in range(len(temperatures)):
      fits = [c['fits'][ti] for c in row['coscaling'] if c['fits'][ti]['b'] is not None]
      cells.append('-' if not fits else
                   f'b = {np.mean([f["b"] for f in fits]):.2f}, '
                   f'err {np.mean([f["max_abs_error"] for f in fits]):.3f}')
    lines.append(f'| {row["label"]} | ' + ' | '.join(cells) + ' |')
  return lines + ['']


def _write(workdir: str, name: str, report: dict[str, Any], log: Callable[[str], None]) -> None:
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, f'{name}.json'), 'w', encoding='utf-8') as f:
    json.dump(report, f, indent=2)
  text = tables(report)
  with open(os.path.join(workdir, f'{name}.md'), 'w', encoding='utf-8') as f:
    f.write(text + '\n')
  from bonjax import study_plots  # pylint: disable=g-import-not-at-top  (matplotlib is optional)
  paths = study_plots.plot(report, workdir, name)
  log('\n' + text)
  log(f'wrote {name}.json, {name}.md and {", ".join(os.path.basename(p) for p in paths)} to '
      f'{workdir} ({report["seconds"]:.0f} s)')
