"""`train`: the one training loop, for every method, on any mesh, resumable after preemption.

    restore the latest checkpoint, or create the state (fresh, warm-started or loaded)
    for step in [start, num_steps):
        batch  <- the data iterator (SFT examples, or prompts)
        rollout: generate M samples per prompt, decode, score     (methods that need rollouts)
        state  <- train_step(state, batch)                        (the one jitted, sharded step)
        log metrics; evaluate every eval_every; checkpoint every checkpoint_every
    SIGTERM: checkpoint the current step and return (a preemptible TPU's notice)

A checkpoint holds the params, the optimizer state, the data iterator's position and the gin
config; the rollouts' randomness is a function of (seed, step), so a run killed at any moment
(SIGKILL too, even mid-save: orbax commits a step atomically) and started again with the same
command repeats exactly the steps an uninterrupted run would have taken, bit for bit.

A run directory holds run.json (what was run), tokenizer.model, checkpoints/, metrics.jsonl,
tensorboard/ and data/ (prepared datasets, unless the task names a data_dir).

Several processes (each calls `bonjax.sharding.initialize_distributed`, then `train` with a
workdir they share) train exactly as one process with all their devices: each reads only its
share of every batch and samples, decodes and scores its own prompts; process 0 prepares the
dataset and the tokenizer before the others read them, and alone writes run.json and the metrics;
all save each checkpoint together.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import gin
import jax
import numpy as np
import optax
import tqdm
from jax.experimental import multihost_utils

from bonjax import data, models, sampling, sharding, verifiers
from bonjax.train import checkpoint as checkpoint_lib
from bonjax.train import init as init_lib
from bonjax.train import methods as methods_lib
from bonjax.train import rollout as rollout_lib
from bonjax.train import state as state_lib
from bonjax.train import steps as steps_lib
from bonjax.train.metrics import MetricWriter
from bonjax.train.optimizers import optimizer as make_optimizer

PyTree = Any
RUN_FILE = 'run.json'
CHECKPOINT_DIR = init_lib.CHECKPOINT_DIR
_EVAL_SEED_OFFSET = 1_000_003  # eval samples use their own keys, the same at every evaluation


def _log(message: str) -> None:
  """A line for the person watching (above the progress bar), from process 0."""
  if jax.process_index() == 0:
    tqdm.tqdm.write(message, file=sys.stderr)


class RunDirectoryError(ValueError):
  """The workdir cannot hold this run (foreign files, or another model's run)."""


def _describe(model: models.Transformer, method: methods_lib.Method, task: data.Task) -> dict:
  # Through JSON, so that it compares equal to what run.json reads back (tuples become lists).
  config = json.loads(json.dumps(dataclasses.asdict(model.config)))
  return {'model_config': config, 'method': repr(method), 'task': repr(task)}


def _check_workdir(workdir: str, description: dict) -> None:
  """Refuses a non-empty directory that is not a bonjax run, or another model's run."""
  run_file = os.path.join(workdir, RUN_FILE)
  if os.path.isdir(workdir) and os.listdir(workdir) and not os.path.exists(run_file):
    raise RunDirectoryError(
        f'workdir {workdir!r} is not empty and holds no {RUN_FILE}: it is not a bonjax run '
        f'directory; pass an empty or new directory (or the directory of the run to resume)')
  if os.path.exists(run_file):
    with open(run_file, encoding='utf-8') as f:
      saved = json.load(f)
    if saved.get('model_config') != description['model_config']:
      changed = sorted(k for k, v in description['model_config'].items()
                       if saved.get('model_config', {}).get(k) != v)
      raise RunDirectoryError(
          f'workdir {workdir!r} holds a run of a different model config (differs in {changed}); '
          f'resume it with its own config, or use a new workdir')
  if os.path.exists(workdir) and not os.access(workdir, os.W_OK):
    raise RunDirectoryError(f'workdir {workdir!r} is not writable')


def _validate(method, rollout, verifier, reward, task, model, num_steps, batch_size, *,
              evaluates: bool, eval_rollout) -> None:
  """Every configuration error `train` can detect before it writes anything."""
  if not isinstance(method, methods_lib.Method):
    raise TypeError(f'method must be a bonjax.train Method (Sft, BonSft, Dco, PolicyGradient), '
                    f'got {type(method).__name__}')
  if not isinstance(model, models.Transformer):
    raise TypeError(f'model must be a bonjax.models.Transformer, got {type(model).__name__}')
  if not isinstance(task, data.Task):
    raise TypeError(f'task must be a bonjax.data.Task, got {type(task).__name__}')
  for name, value in (('num_steps', num_steps), ('batch_size', batch_size)):
    if not isinstance(value, int) or value < 1:
      raise ValueError(f'train.{name} must be a positive int, got {value!r}')
  name = type(method).__name__
  if method.needs_rollouts and rollout is None:
    raise ValueError(f'{name} needs rollouts: configure train.rollout = @Rollout()')
  if evaluates and eval_rollout is None:
    raise ValueError('evaluation (train.eval_every > 0) samples the policy: configure '
                     'train.rollout or train.eval_rollout = @Rollout()')
  if rollout is not None and method.n > rollout.num_samples:
    raise ValueError(f'{name} optimizes BoN with n = {method.n}, more than the '
                     f'{rollout.num_samples} samples per prompt it draws (Rollout.num_samples): '
                     f'draw at least n')
  if method.uses_scores and verifier is None:
    raise ValueError(f'{method!r} selects by verifier scores, but no verifier is configured '
                     f'(train.verifier = @answer_match() or another of {verifiers.names()})')
  if method.uses_rewards and reward is None:
    raise ValueError(f'{method!r} learns from the task reward, but none is configured '
                     f'(train.reward = @answer_match() or another of {verifiers.names()})')
  if (method.needs_rollouts or evaluates) and verifier is None and reward is None:
    raise ValueError(f'{name}: rollouts need a verifier or a task reward to score samples')


def _local_to_global(arrays: Mapping[str, np.ndarray], mesh) -> dict[str, jax.Array]:
  """This process's rows of each array -> one global array split over the batch mesh axes."""
  return {name: sharding.host_rows_to_global(value, mesh, name=f'batch array {name!r}')
          for name, value in arrays.items()}


def _process_zero_first(fn: Callable[[], Any]) -> Any:
  """fn() on process 0, then on the others: what process 0 prepares in the shared run directory
  (the dataset, the tokenizer), the others then read, rather than all writing it at once."""
  if jax.process_index() == 0:
    result = fn()
  _sync('process 0 prepared')
  if jax.process_index() != 0:
    result = fn()
  return result


def _sync(name: str) -> None:
  """A barrier of all processes (nothing on one)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f'bonjax.train: {name}')


def _on_all_processes(flag: bool) -> bool:
  """Whether `flag` is set on any process, on every process: so that all take the same branch."""
  if jax.process_count() == 1:
    return flag
  return bool(multihost_utils.process_allgather(np.asarray(flag)).any())


def _step_inputs(batch: Mapping[str, Any], method: methods_lib.Method) -> dict[str, np.ndarray]:
  keys = ('inputs', 'targets', 'loss_mask', 'positions', 'input_mask')
  out = {k: batch[k] for k in keys}
  if getattr(method, 'packing', False):
    out['segment_ids'] = batch['segment_ids']
  return out


class _Preemption:
  """Turns SIGTERM into a flag the loop checks after each step (main thread only)."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _data_iterator(task, method, tokenizer, source, batch_size, seed) -> data.BatchIterator:
  if method.needs_rollouts:
    return data.prompt_batches(source, tokenizer, batch_size=batch_size,
                               max_prompt_len=task.max_prompt_len,
                               prompt_format=task.text_format.prompt, seed=seed)
  return data.sft_batches(source, tokenizer, batch_size=batch_size,
                          max_len=task.max_prompt_len + task.max_target_len,
                          text_format=task.text_format, packing=getattr(method, 'packing', False),
                          seed=seed)


def train(workdir: str, *, model: models.Transformer, method: methods_lib.Method,
          optimizer: optax.GradientTransformation | None = None, task: data.Task,
          num_steps: int, batch_size: int, rollout: rollout_lib.Rollout | None = None,
          verifier: verifiers.VerifierProtocol | None = None,
          reward: verifiers.VerifierProtocol | None = None,
          init: init_lib.WarmStart | init_lib.InitFrom | init_lib.HfCheckpoint | None = None,
          seed: int = 0, mesh: str = 'data:-1',
          rules: sharding.LogicalRules = sharding.DEFAULT_RULES, microbatches: int = 1,
          updates_per_rollout: int = 1, track_kl: bool = True, checkpoint_every: int = 100,
          eval_every: int = 0, eval_prompts: int = 64,
          eval_rollout: rollout_lib.Rollout | None = None, log_every: int = 1, max_to_keep: int = 2,
          progress: bool = True, dry_run: bool = False) -> dict[str, Any]:
  """Trains `model` with `method` on `task`; returns the last logged metrics (and 'step').

  Args:
    workdir: the run directory (created; an existing run there is resumed).
    model: the policy, a `bonjax.models.Transformer` (its vocabulary at least the tokenizer's).
    method: what to optimize (`bonjax.train.methods`).
    optimizer: an optax optimizer (`bonjax.train.optimizer(...)`); default adamw 1e-4, clip 1.
    task: the dataset, its formats and tokenizer.
    num_steps: optimizer steps of the run (a resumed run continues up to it).
    batch_size: examples (SFT) or prompts (rollouts) per step, over all processes.
    rollout: how prompts are sampled (methods that need rollouts, and evaluation).
    verifier: scores s the BoN selection reads (learned, noisy, answer match, code, ...).
    reward: the task reward R the methods learn from.
    init: where the initial policy comes from (`bonjax.train.init`); None: fresh from `seed`.
    seed: seeds the initialization, the data order and the rollouts.
    mesh: a mesh spec such as 'data:4,fsdp:2' over all devices (`bonjax.sharding.make_mesh`).
    rules: logical axis rules.
    microbatches: gradient accumulation steps per update.
    updates_per_rollout: optimizer updates on each rollout (> 1 wants PolicyGradient.clip_eps).
    track_kl: log KL(pi || initial policy) on the samples (an extra forward per step).
    checkpoint_every: save every this many steps (and at the end, and on SIGTERM).
    eval_every: evaluate pass@k / BoN@k on `eval_prompts` eval problems every this many steps.
    eval_prompts: how many problems of the eval split evaluation samples.
    eval_rollout: how evaluation samples (e.g. more samples per problem); default `rollout`.
    log_every: write metrics every this many steps (each costs a device -> host transfer).
    max_to_keep: checkpoints kept.
    progress: show a progress bar.
    dry_run: build everything abstractly (shapes only: no data, no parameters) and return a
      summary, for checking a config.
  """
  optimizer = optimizer if optimizer is not None else make_optimizer('adamw', 1e-4)
  eval_rollout = eval_rollout if eval_rollout is not None else rollout
  _validate(method, rollout, verifier, reward, task, model, num_steps, batch_size,
            evaluates=bool(eval_every), eval_rollout=eval_rollout)
  description = _describe(model, method, task)
  if dry_run:
    return _dry_run(model, optimizer, mesh)
  workdir = os.path.abspath(workdir)
  _check_workdir(workdir, description)
  _sync('checked the workdir')  # before process 0 rewrites the run.json the others read
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, RUN_FILE), 'w', encoding='utf-8') as f:
      json.dump(dict(description, gin_config=gin.config_str(), num_steps=num_steps), f, indent=2)
  if isinstance(init, init_lib.WarmStart):
    # The warm start reads the same prepared data.
    _warm_start(workdir, init, model=model, seed=seed, mesh=mesh, rules=rules, progress=progress,
                task=dataclasses.replace(task, data_dir=task.data_dir_for(workdir)),
                checkpoint_every=checkpoint_every)
  tokenizer = _process_zero_first(lambda: init_lib.run_tokenizer(workdir, task, init))
  if tokenizer.vocab_size > model.config.vocab_size:
    raise ValueError(f'the tokenizer has {tokenizer.vocab_size} tokens but the model only '
                     f'{model.config.vocab_size} embeddings: set the model\'s vocab_size to at '
                     f'least {tokenizer.vocab_size}')

  if tokenizer.vocab_size < model.config.vocab_size:
    # A padded embedding table: never sample an id the tokenizer cannot decode.
    restrict = lambda r: r and dataclasses.replace(
        r, sampler=sampling.ValidTokens(r.sampler, tokenizer.vocab_size))
    rollout, eval_rollout = restrict(rollout), restrict(eval_rollout)
  device_mesh = sharding.make_mesh(mesh)
  step_fn = steps_lib.train_step_for(model, optimizer, method, mesh=device_mesh, rules=rules,
                                     sampler=rollout.sampler if rollout else None,
                                     microbatches=microbatches, track_kl=track_kl)
  policy, with_reference = step_fn.policy, step_fn.with_reference
  source = _process_zero_first(lambda: task.source(task.train_split, workdir))
  batches = _data_iterator(task, method, tokenizer, source, batch_size, seed)
  abstract = state_lib.abstract_state(model, optimizer, device_mesh, rules)

  def initial_params() -> PyTree:
    return init_lib.initial_params(workdir, init, model, abstract.params, seed, device_mesh, rules)

  writer = MetricWriter(workdir)
  scorer = (rollout_lib.Scorer(verifier, reward)
            if rollout is not None or eval_rollout is not None else None)
  with checkpoint_lib.Checkpointer(os.path.join(workdir, CHECKPOINT_DIR),
                                   max_to_keep=max_to_keep) as ckpt, _Preemption() as preempt, \
      contextlib.ExitStack() as cleanup:
    cleanup.callback(writer.close)
    if scorer is not None:
      cleanup.callback(scorer.close)
    if ckpt.latest_step() is not None:
      restored = ckpt.restore(target={'params': abstract.params, 'opt_state': abstract.opt_state})
      state = state_lib.TrainState(step=jax.device_put(np.int32(restored['step']),
                                                       abstract.step.sharding),
                                   params=restored['params'], opt_state=restored['opt_state'])
      batches.set_state(restored['data_state'])
      writer.truncate_after(restored['step'])
      _log(f'resumed {workdir} from step {restored["step"]}')
    else:
      state = state_lib.create_state(model, optimizer, jax.random.key(seed), device_mesh, rules,
                                     params=None if init is None else initial_params())
    ref_params = initial_params() if with_reference else None
    start = int(state.step)
    stream_chunks, why_not = rollout_lib.streamed_chunks(
        rollout, method, batch_size=batch_size, microbatches=microbatches,
        shards=sharding.batch_shard_count(device_mesh, rules), processes=jax.process_count(),
        updates_per_rollout=updates_per_rollout)
    if why_not:
      _log(why_not)
    context = _Context(model=model, policy=policy, method=method, rollout=rollout, task=task,
                       tokenizer=tokenizer, scorer=scorer, mesh=device_mesh, seed=seed,
                       updates_per_rollout=updates_per_rollout, eval_rollout=eval_rollout,
                       stream_chunks=stream_chunks)
    eval_batch = (_eval_batch(task, tokenizer, workdir, eval_prompts)
                  if eval_every and eval_rollout is not None else None)
    last: dict[str, Any] = {}
    bar = tqdm.trange(start, num_steps, initial=start, total=num_steps,
                      disable=not progress or jax.process_index() != 0,
                      desc=f'train {type(method).__name__}', dynamic_ncols=True)
    for step in bar:
      state, metrics = _one_step(context, step_fn, state, next(batches), step, ref_params)
      done = step + 1
      if eval_batch is not None and done % eval_every == 0:
        metrics.update(_evaluate(context, state.params, eval_batch))
      if done % log_every == 0 or done == num_steps:
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        writer.write(done, metrics)
        last = dict(metrics, step=done)
        bar.set_postfix({k: f'{metrics[k]:.3g}' for k in ('loss', 'reward_mean') if k in metrics})
      preempted = _on_all_processes(preempt.requested)  # SIGTERM reaches hosts at different steps
      if done % checkpoint_every == 0 or done == num_steps or preempted:
        ckpt.save(done, params=state.params, opt_state=state.opt_state,
                  data_state=batches.get_state(), config_text=gin.config_str(), force=True)
      if preempted:
        _log(f'SIGTERM: saved step {done} of {workdir}; exiting')
        ckpt.wait()
        last['preempted'] = True
        break
    bar.close()
  return last if last else {'step': start}


@dataclasses.dataclass(frozen=True)
class _Context:
  model: Any
  policy: methods_lib.Policy
  method: methods_lib.Method
  rollout: rollout_lib.Rollout | None
  task: data.Task
  tokenizer: data.Tokenizer
  scorer: rollout_lib.Scorer | None
  mesh: Any
  seed: int
  updates_per_rollout: int
  eval_rollout: rollout_lib.Rollout | None
  stream_chunks: int  # > 1: the update accumulates the rollout's chunks as they are scored


def _one_step(ctx: _Context, step_fn, state, batch, step: int, ref_params) -> tuple[Any, dict]:
  """One step of the loop: the rollout if the method needs one, then the update(s)."""
  timings, host_metrics = {}, {}
  args = () if ref_params is None else (ref_params,)
  total = None  # the streamed update's sums so far
  if ctx.method.needs_rollouts:
    step_key = jax.random.fold_in(jax.random.key(ctx.seed), step)

    def accumulate(chunk):
      nonlocal total
      total = step_fn.accumulate(state.params, total, _local_to_global(chunk, ctx.mesh), *args,
                                 microbatches=step_fn.microbatches // ctx.stream_chunks)
      return total

    arrays, info = ctx.rollout(
        ctx.model, state.params, batch, step_key=step_key, tokenizer=ctx.tokenizer,
        scorer=ctx.scorer, prompt_format=ctx.task.text_format.prompt, mesh=ctx.mesh,
        expert_format=ctx.task.text_format.target if ctx.method.needs_expert else None,
        on_chunk=accumulate if ctx.stream_chunks > 1 else None)
    host_metrics = rollout_lib.rollout_metrics(arrays, info, ks=_powers_of_two(
        ctx.rollout.num_samples))
    timings.update(info['seconds'])
    num_tokens = float(arrays['lengths'].sum())
    host_metrics['sampled_tokens_per_second'] = num_tokens / max(info['seconds']['sampling'], 1e-9)
  else:
    arrays = _step_inputs(batch, ctx.method)
  start = time.perf_counter()
  if total is not None:
    state, metrics = step_fn.apply(state, total, step_fn.microbatches)
  else:
    device_batch = _local_to_global(arrays, ctx.mesh)
    updates = ctx.updates_per_rollout if ctx.method.needs_rollouts else 1
    for _ in range(updates):
      state, metrics = step_fn(state, device_batch, *args)
  jax.block_until_ready(metrics)
  timings['updating'] = time.perf_counter() - start
  metrics = dict(metrics, **host_metrics, **{f'seconds/{k}': v for k, v in timings.items()})
  return state, metrics


def _powers_of_two(m: int) -> list[int]:
  return [k for k in (1, 2, 4, 8, 16, 32, 64, 128, 256) if k <= m]


def _eval_batch(task, tokenizer, workdir, num_prompts) -> dict[str, Any]:
  """The first `num_prompts` eval problems; on several processes, this process's share of them."""
  source = task.source(task.eval_split, workdir)
  count, processes = min(num_prompts, len(source)), jax.process_count()
  if count % processes:
    raise ValueError(f'{count} eval problems (train.eval_prompts) do not split evenly over '
                     f'{processes} processes: make it a multiple of {processes}')
  index = np.arange(count // processes, dtype=np.int64) + jax.process_index() * count // processes
  batch = data.batching.prompt_batch([source[int(i)] for i in index], tokenizer,
                                     max_prompt_len=task.max_prompt_len,
                                     prompt_format=task.text_format.prompt)
  batch['index'] = index
  return batch


def _evaluate(ctx: _Context, params, batch) -> dict[str, float]:
  """pass@k and BoN@k of the current policy on the fixed eval problems (the same keys each time)."""
  key = jax.random.key(ctx.seed + _EVAL_SEED_OFFSET)
  arrays, info = ctx.eval_rollout(ctx.model, params, batch, step_key=key,
                                  tokenizer=ctx.tokenizer, scorer=ctx.scorer,
                                  prompt_format=ctx.task.text_format.prompt, mesh=ctx.mesh)
  metrics = rollout_lib.rollout_metrics(arrays, info,
                                        _powers_of_two(ctx.eval_rollout.num_samples))
  return {f'eval/{k}': v for k, v in metrics.items()}


def _warm_start(workdir, warm: init_lib.WarmStart, **kwargs) -> None:
  """Trains the initial policy in <workdir>/<warm.name> (resumable like any run)."""
  run_dir = warm.run_dir(workdir)
  _log(f'warm start: {type(warm.method).__name__} for {warm.num_steps} steps in {run_dir}')
  train(run_dir, method=warm.method, optimizer=warm.optimizer, num_steps=warm.num_steps,
        batch_size=warm.batch_size, **kwargs)


def _dry_run(model, optimizer, mesh_spec: str) -> dict[str, Any]:
  """Shapes only: the params and optimizer state, never allocated; checks the mesh spec parses."""
  sharding.parse_mesh_spec(mesh_spec)
  params = models.abstract_params(model)
  opt_state = jax.eval_shape(optimizer.init, params)
  count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))
  nbytes = lambda tree: sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(tree))
  return {'param_count': count(params), 'param_bytes': nbytes(params),
          'opt_state_bytes': nbytes(opt_state), 'mesh': mesh_spec}
