"""`evaluate`: pass@N, BoN@N, maj@N and max@N of a policy over a grid of N and temperature T.

    problems of a split --chunks of batch_size--> draws.dispatch (all temperatures, one program)
      --decode, verifier s, task reward R--> one record per (T, problem), saved per (T, chunk)
      --stats.problem_metrics (unbiased, M >= max N)--> [T, K, N] per metric
      --bootstrap over problems--> means and CIs;  --coscaling--> a(T), b(T), T*(N)

Resumable: with an out_dir, each (temperature, chunk) is written to <out_dir>/samples/ as soon as
it is scored, and a restarted evaluation samples only what is missing (its keys depend only on
(problem, temperature): the resumed numbers are those of an uninterrupted run, up to verifiers
that are themselves random, such as `noisy`). The files are also the raw samples, with their
completions, scores and rewards, for anyone who wants to recompute a number.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import tqdm
from jax.sharding import Mesh

from bonjax import data, models, sampling, sharding, verifiers
from bonjax.evaluation import coscaling, draws, stats
from bonjax.evaluation.results import EvalResults, check_grid
from bonjax.train import checkpoint as checkpoint_lib
from bonjax.train import rollout as rollout_lib

PyTree = Any
SAMPLES_DIR = 'samples'
_SPEC_FILE = 'spec.json'
BUCKET_FIELDS = ('level', 'difficulty', 'bucket')  # what 'auto' looks for, in this order


def restore_run_params(run_dir: str, model: models.Transformer, mesh: Mesh,
                       rules: sharding.LogicalRules = sharding.DEFAULT_RULES,
                       step: int | None = None) -> tuple[PyTree, int]:
  """The params of a run's checkpoint (the latest, or `step`) on `mesh`, and its step."""
  if not os.path.isdir(run_dir):
    raise FileNotFoundError(f'no run directory {run_dir!r}')
  checkpoints = os.path.join(run_dir, 'checkpoints')
  if not os.path.isdir(checkpoints):
    raise FileNotFoundError(f'{run_dir!r} holds no checkpoints/: it is not a bonjax run '
                            f'directory, or it was never trained (`bonjax train`)')
  shardings = models.param_shardings(model, mesh, rules)
  like = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                      models.abstract_params(model), shardings)
  with checkpoint_lib.Checkpointer(checkpoints) as ckpt:
    restored = ckpt.restore(step, target={'params': like})
  return restored['params'], int(restored['step'])


def latest_step(run_dir: str) -> int | None:
  """The newest committed checkpoint step of a run (None: none), without opening orbax."""
  directory = os.path.join(run_dir, 'checkpoints')
  steps = [int(d) for d in os.listdir(directory) if d.isdigit()] if os.path.isdir(directory) else []
  return max(steps, default=None)


def run_tokenizer(run_dir: str, task: data.Task) -> data.Tokenizer:
  """The tokenizer a run trained with: the task's own file, else <run_dir>/tokenizer.model."""
  if task.tokenizer is not None:
    return data.Tokenizer.load(task.tokenizer)
  path = os.path.join(run_dir, data.task.TOKENIZER_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f'the run {run_dir!r} has no {data.task.TOKENIZER_FILE}')
  return data.Tokenizer.load(path)


def _check_fields(example: dict[str, Any], task: data.Task, scorers: dict[str, Any]) -> None:
  """One clear error when the dataset lacks what the prompt format or a scorer reads."""
  try:
    data.batching.format_text(task.text_format.prompt, example)
  except KeyError as e:
    raise ValueError(f'the {task.dataset} examples cannot fill the prompt format: {e}') from None
  for role, scorer in scorers.items():
    needed = tuple(getattr(scorer, 'required_keys', ()))
    missing = [key for key in needed if key not in example]
    if missing:
      name = getattr(scorer, 'name', type(scorer).__name__)
      raise ValueError(f'the {task.dataset} examples have no {missing} field, which the {role} '
                       f'{name!r} needs (it reads {list(needed)}; the examples have '
                       f'{sorted(example)})')


class _Store:
  """The (temperature, chunk) records: in <out_dir>/samples/ (resumable), or in memory."""

  def __init__(self, out_dir: str | None, spec: dict[str, Any]):
    self.dir = None if out_dir is None else os.path.join(out_dir, SAMPLES_DIR)
    self.memory: dict[str, list[dict]] = {}
    if self.dir is None:
      return
    os.makedirs(self.dir, exist_ok=True)
    spec_path = os.path.join(self.dir, _SPEC_FILE)
    if os.path.exists(spec_path):
      with open(spec_path, encoding='utf-8') as f:
        saved = json.load(f)
      changed = sorted(k for k in set(saved) | set(spec) if saved.get(k) != spec.get(k))
      if changed:
        raise ValueError(f'{self.dir} holds the samples of another evaluation (it differs in '
                         f'{changed}): evaluate into another out_dir, or delete that one')
    else:
      with open(spec_path, 'w', encoding='utf-8') as f:
        json.dump(spec, f, indent=2)

  @staticmethod
  def name(temperature: float, lo: int, hi: int) -> str:
    return f't{draws.temperature_code(temperature)}_{lo:07d}-{hi:07d}.jsonl'

  def has(self, name: str) -> bool:
    if self.dir is None:
      return name in self.memory
    return os.path.exists(os.path.join(self.dir, name))

  def put(self, name: str, records: list[dict]) -> None:
    if self.dir is None:
      self.memory[name] = records
      return
    path = os.path.join(self.dir, name)
    with open(path + '.tmp', 'w', encoding='utf-8') as f:
      f.writelines(json.dumps(r) + '\n' for r in records)
    os.replace(path + '.tmp', path)  # a killed evaluation never leaves half a chunk

  def get(self, name: str) -> list[dict]:
    if self.dir is None:
      return self.memory[name]
    with open(os.path.join(self.dir, name), encoding='utf-8') as f:
      return [json.loads(line) for line in f]


def load_samples(out_dir: str) -> list[dict[str, Any]]:
  """Every saved (temperature, problem) record of an evaluation, sorted by (T, index)."""
  directory = os.path.join(out_dir, SAMPLES_DIR)
  records = []
  for name in sorted(os.listdir(directory)):
    if name.endswith('.jsonl'):
      with open(os.path.join(directory, name), encoding='utf-8') as f:
        records += [json.loads(line) for line in f]
  return sorted(records, key=lambda r: (r['temperature'], r['index']))


def _one_device() -> Mesh:
  return sharding.make_mesh('data:1', jax.devices()[:1])


def _bucket_field(bucket_field: str | None, example: dict[str, Any]) -> str | None:
  if bucket_field == 'auto':
    return next((f for f in BUCKET_FIELDS if f in example), None)
  if bucket_field is not None and bucket_field not in example:
    raise ValueError(f'bucket_field {bucket_field!r} is not a field of the examples '
                     f'({sorted(example)})')
  return bucket_field


def _name(scorer) -> str | None:
  return None if scorer is None else getattr(scorer, 'name', type(scorer).__name__)


def evaluate(params_or_run: PyTree | str, *, model: models.Transformer, task: data.Task,
             ns: Sequence[int], temperatures: Sequence[float],
             verifier: verifiers.VerifierProtocol | None = None,
             reward: verifiers.VerifierProtocol | None = None, num_samples: int | None = None,
             tokenizer: data.Tokenizer | None = None, split: str | None = None,
             num_problems: int | None = None, max_new_tokens: int | None = None,
             sampler: sampling.Sampler = sampling.Temperature(1.0), batch_size: int = 16,
             seed: int = 0, out_dir: str | None = None, step: int | None = None,
             mesh: Mesh | str | None = 'data:-1',
             rules: sharding.LogicalRules = sharding.DEFAULT_RULES,
             bucket_field: str | None = 'auto', confidence: float = 0.95,
             num_bootstrap: int = 1000, progress: bool = True) -> EvalResults:
  """Evaluates a policy on the first `num_problems` problems of `split` at every (N, T).

  Args:
    params_or_run: the model's params, or a run directory (its latest checkpoint, or `step`;
      its tokenizer; its prepared data).
    model: the policy.
    task: the dataset, its formats (and tokenizer, if it names one).
    ns: the Ns of pass@N, BoN@N, maj@N, max@N.
    temperatures: the temperatures, all sampled by one `generate` call per chunk.
    verifier: the scores s that BoN@N selects by (None: the task reward, an oracle verifier).
    reward: the task reward R that pass@N, BoN@N, maj@N and max@N credit (None: s).
    num_samples: M samples per problem and temperature (default max(ns); at least that).
    tokenizer: needed with params unless the task names one.
    split: the split (default task.eval_split).
    num_problems: the first this many problems (default all).
    max_new_tokens: the most tokens per sample (default task.max_target_len).
    sampler: the law whose temperature is swept (TopP(0.95) keeps its p at every T).
    batch_size: problems per `generate` call (each sampled at every T: T x batch_size x M rows).
    seed: seeds the samples (and the bootstrap).
    out_dir: where samples are saved as they are scored (resumable); None keeps them in memory.
    step: the checkpoint step of a run (default the latest).
    mesh: a mesh or mesh spec for generation ('data:-1': all devices); None: the default device.
    rules: logical axis rules.
    bucket_field: the example field whose values are difficulty buckets ('auto': level,
      difficulty or bucket when the dataset has one; None: no buckets).
    confidence: the level of the bootstrap intervals.
    num_bootstrap: bootstrap resamples of the problems.
    progress: show a progress bar (with ETA).
  """
  start_time = time.time()
  ns, temperatures, num_samples = check_grid(ns, temperatures, num_samples)
  if verifier is None and reward is None:
    raise ValueError('evaluate needs a verifier or a task reward (or both) to score samples')
  if not isinstance(batch_size, int) or batch_size < 1:
    raise ValueError(f'batch_size must be a positive int, got {batch_size!r}')
  if num_problems is not None and (not isinstance(num_problems, int) or num_problems < 1):
    raise ValueError(f'num_problems must be a positive int, got {num_problems!r}')
  if isinstance(mesh, str):
    mesh = sharding.make_mesh(mesh)
  params, step, tokenizer, run_dir = _policy(params_or_run, model, task, tokenizer, mesh, rules,
                                             step)
  data_root = run_dir or out_dir
  if task.data_dir is None and data_root is None:
    raise ValueError('the task has no data_dir: evaluate a run directory, or give out_dir (the '
                     'data is prepared under it) or Task.data_dir')
  split = split or task.eval_split
  source = task.source(split, data_root or '')
  count = len(source) if num_problems is None else min(num_problems, len(source))
  if count == 0:
    raise ValueError(f'the {task.dataset} split {split!r} has no problems')
  examples = [data.batching.decode_example(source[i]) for i in range(count)]
  scorers = {k: v for k, v in (('verifier', verifier), ('reward', reward)) if v is not None}
  _check_fields(examples[0], task, scorers)
  bucket_field = _bucket_field(bucket_field, examples[0])
  max_new_tokens = max_new_tokens or task.max_target_len

  grid = draws.Grid(model=model, tokenizer=tokenizer, num_samples=num_samples,
                    max_new_tokens=max_new_tokens, max_prompt_len=task.max_prompt_len,
                    prompt_format=task.text_format.prompt, sampler=sampler, seed=seed, mesh=mesh,
                    rules=rules)
  spec = {'split': split, 'step': step, 'num_samples': num_samples,
          'max_new_tokens': max_new_tokens, 'max_prompt_len': task.max_prompt_len,
          'prompt_format': task.text_format.prompt, 'seed': seed,
          'sampler': repr(sampler), 'verifier': _name(verifier),
          'reward': _name(reward), 'batch_size': batch_size}
  store = _Store(out_dir, spec)
  chunks = [(lo, min(lo + batch_size, count)) for lo in range(0, count, batch_size)]
  _sample_missing(grid, params, store, examples, chunks, temperatures,
                  rollout_lib.Scorer(verifier, reward), progress)

  records = {(r['temperature'], r['index']): r for lo, hi in chunks for t in temperatures
             for r in store.get(store.name(t, lo, hi))}
  # maj@N votes on final answers: tasks whose problems have one (not code).
  per_problem = _per_problem(records, temperatures, count, ns, 'answer' in examples[0])
  interval_kwargs = dict(confidence=confidence, num_bootstrap=num_bootstrap, seed=seed)
  summary = stats.summarize(per_problem, **interval_kwargs)
  buckets = {} if bucket_field is None else _buckets(
      per_problem, [str(e[bucket_field]) for e in examples], ns, temperatures, interval_kwargs)
  info = {'dataset': task.dataset, 'split': split, 'step': step, 'run_dir': run_dir,
          'out_dir': out_dir, 'verifier': _name(verifier), 'reward': _name(reward),
          'sampler': repr(sampler), 'max_new_tokens': max_new_tokens, 'seed': seed,
          'confidence': confidence, 'num_bootstrap': num_bootstrap, 'bucket_field': bucket_field,
          'truncated_fraction': float(np.mean([np.mean(r['truncated'])
                                               for r in records.values()])),
          'seconds': time.time() - start_time}
  return EvalResults(ns=ns, temperatures=temperatures, num_samples=num_samples,
                     problem_indices=np.arange(count), per_problem=per_problem, summary=summary,
                     coscaling=coscaling.fit_coscaling(ns, temperatures, summary['pass']['mean']),
                     buckets=buckets, info=info)


def _policy(params_or_run, model, task, tokenizer, mesh, rules, step):
  """(params, checkpoint step, tokenizer, run directory or None) of what is evaluated."""
  if isinstance(params_or_run, (str, os.PathLike)):
    run_dir = os.fspath(params_or_run)
    params, step = restore_run_params(run_dir, model, mesh or _one_device(), rules, step)
    return params, step, tokenizer or run_tokenizer(run_dir, task), run_dir
  if tokenizer is None:
    if task.tokenizer is None:
      raise ValueError('evaluating params needs a tokenizer (or a task that names one)')
    tokenizer = data.Tokenizer.load(task.tokenizer)
  return params_or_run, step, tokenizer, None


def _buckets(per_problem, labels, ns, temperatures, interval_kwargs) -> dict[str, dict]:
  """The summary and the co-scaling fit of each difficulty bucket's problems."""
  labels = np.array(labels)
  out = {}
  for label in sorted(set(labels)):
    chosen = labels == label
    summary = stats.summarize({k: v[:, chosen] for k, v in per_problem.items()},
                              **interval_kwargs)
    out[label] = {'num_problems': int(chosen.sum()), 'summary': summary,
                  'coscaling': coscaling.fit_coscaling(ns, temperatures, summary['pass']['mean'])}
  return out


def _sample_missing(grid: draws.Grid, params: PyTree, store: _Store, examples, chunks,
                    temperatures, scorer: rollout_lib.Scorer, progress: bool) -> None:
  """Samples and scores every (temperature, chunk) the store lacks.

  The next chunk's generation is dispatched before the current one is decoded and scored, so
  the device samples while the host verifies.
  """
  todo = [(lo, hi, [t for t in temperatures if not store.has(store.name(t, lo, hi))])
          for lo, hi in chunks]
  todo = [(lo, hi, ts) for lo, hi, ts in todo if ts]
  total = len(examples) * len(temperatures)
  remaining = sum((hi - lo) * len(ts) for lo, hi, ts in todo)
  bar = tqdm.tqdm(total=total, initial=total - remaining, disable=not progress, unit='problem',
                  desc=f'eval {len(temperatures)} T x {grid.num_samples} samples',
                  dynamic_ncols=True)

  def finish(pending: draws.Pending, lo: int, hi: int, ts: list[float]) -> None:
    records = draws.collect(grid, pending, scorer, hi - lo)
    for i, t in enumerate(ts):
      store.put(store.name(t, lo, hi), records[i * (hi - lo):(i + 1) * (hi - lo)])
    bar.update((hi - lo) * len(ts))

  try:
    previous = None
    pad_to = chunks[0][1] - chunks[0][0]
    for lo, hi, ts in todo:
      pending = draws.dispatch(grid, params, examples[lo:hi], range(lo, hi), ts, pad_to=pad_to)
      if previous is not None:
        finish(*previous)
      previous = (pending, lo, hi, ts)
    if previous is not None:
      finish(*previous)
  finally:
    bar.close()
    scorer.close()


def _per_problem(records: dict, temperatures, count: int, ns,
                 answer_task: bool) -> dict[str, np.ndarray]:
  """{metric: [T, K, N]} from the (temperature, index) records (maj@N on answer tasks only)."""
  per_t = []
  for t in temperatures:
    rows = [records[(t, i)] for i in range(count)]
    answers = stats.answer_ids([r['answers'] for r in rows]) if answer_task else None
    per_t.append(stats.problem_metrics(np.array([r['scores'] for r in rows]),
                                       np.array([r['rewards'] for r in rows]), ns, answers))
  return {name: np.stack([m[name] for m in per_t]) for name in per_t[0]}
