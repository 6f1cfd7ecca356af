"""Every gin configurable of bonjax, registered here and nowhere else.

Library modules define plain functions and classes with keyword arguments and no gin decorators,
so they stay importable and testable without gin. This module makes them configurable under
stable names, which are what the files under ``experiments/`` refer to::

    train.method = @PolicyGradient()
    PolicyGradient.weights = 'bon_rl_s'
    train.model = @model()
    model.preset = 'tiny'
    train.optimizer = @optimizer()
    optimizer.learning_rate = @optax.warmup_cosine_decay_schedule()

The lists come from the libraries themselves: every verifier of ``bonjax.verifiers.REGISTRY``,
every method of ``bonjax.train.METHODS``, every sampler of ``bonjax.sampling``, every dataset
builder config class, every model preset (``@gemma_2b()`` is ``@model()`` with that preset) and
every optax schedule (``@optax.<name>()``); optimizers are named by their optax name
(``optimizer.name = 'adamw'``). Each name is also reachable with its module prefix
(``bonjax.train.train``). Bindings apply only to calls made through gin. To add a configurable,
register it below, and add a test that a config using it parses.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
from collections.abc import Sequence
from typing import Any

import gin
import optax

from bonjax import data, demo, evaluation, models, sampling, sharding, verifiers
from bonjax import study as study_lib
from bonjax import train as train_lib
from bonjax.evaluation import draws
from bonjax.evaluation.results import check_temperatures
from bonjax.train import plan as plan_lib
from bonjax.train import reward_model


def _register(fn_or_cls: Any, name: str, module: str) -> Any:
  return gin.external_configurable(fn_or_cls, name=name, module=module)


def build_model(preset: str = 'tiny', **overrides: Any) -> models.Transformer:
  """A `Transformer` of preset `preset` with any config fields overridden (vocab_size=384, ...)."""
  config = models.get_config(preset)
  unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(config)})
  if unknown:
    raise ValueError(f'model: unknown config fields {unknown}; valid: '
                     f'{[f.name for f in dataclasses.fields(config)]}')
  return models.Transformer(dataclasses.replace(config, **overrides))


# Models (layer 1): `@model()` takes a preset name; each preset is also a configurable of its own.
model = _register(build_model, 'model', 'bonjax.models')


def _preset_builder(preset: str):
  def build(**overrides: Any) -> models.Transformer:
    return build_model(preset, **overrides)
  build.__name__ = preset
  build.__doc__ = f'`model(preset={preset!r}, **overrides)`.'
  return build


PRESETS = {name: _register(_preset_builder(name), name, 'bonjax.models')
           for name in models.PRESET_NAMES}

# Data (layer 1): the task, and the builder configs of the datasets that have config classes.
task = _register(data.Task, 'Task', 'bonjax.data')
ArithConfig = _register(data.ArithConfig, 'ArithConfig', 'bonjax.data')  # pylint: disable=invalid-name
StrategiesConfig = _register(data.StrategiesConfig, 'StrategiesConfig', 'bonjax.data')  # pylint: disable=invalid-name

# Verifiers (layer 1), under the names `bonjax.verifiers.get` knows them by.
VERIFIERS = {name: _register(cls, name, 'bonjax.verifiers')
             for name, cls in verifiers.REGISTRY.items()}
# A trained reward model, read from its run directory when it first scores.
learned_verifier = _register(reward_model.RewardModelVerifier, 'learned_verifier',
                             'bonjax.verifiers')

# Samplers (layer 2): Temperature, TopK, TopP, MinP, Greedy.
SAMPLERS = {name: _register(getattr(sampling, name), name, 'bonjax.sampling')
            for name in sampling.__all__
            if inspect.isclass(getattr(sampling, name))
            and issubclass(getattr(sampling, name), sampling.Sampler)
            and getattr(sampling, name) is not sampling.Sampler}

# Optimizers and schedules.
optimizer = _register(train_lib.optimizer, 'optimizer', 'bonjax.train')
SCHEDULES = {name: _register(getattr(optax.schedules, name), name, 'optax')
             for name in dir(optax.schedules)
             if name.endswith(('_schedule', '_decay')) and callable(getattr(optax.schedules, name))}

# Training (layer 3): methods, rollouts, initial policies, the loop.
METHODS = {name: _register(cls, name, 'bonjax.train') for name, cls in train_lib.METHODS.items()}
Rollout = _register(train_lib.Rollout, 'Rollout', 'bonjax.train')  # pylint: disable=invalid-name
WarmStart = _register(train_lib.WarmStart, 'WarmStart', 'bonjax.train')  # pylint: disable=invalid-name
InitFrom = _register(train_lib.InitFrom, 'InitFrom', 'bonjax.train')  # pylint: disable=invalid-name
HfCheckpoint = _register(train_lib.HfCheckpoint, 'HfCheckpoint', 'bonjax.train')  # pylint: disable=invalid-name
_train = _register(train_lib.train, 'train', 'bonjax.train')

# Reward model training (layer 3).
train_reward_model = _register(reward_model.train_reward_model, 'train_reward_model',
                               'bonjax.train')
policy_triples = _register(reward_model.policy_triples, 'policy_triples', 'bonjax.train')
read_triples = _register(reward_model.read_triples, 'read_triples', 'bonjax.train')

# Evaluation (layer 3) and the ahead-of-time plan of a config: `evaluate.batch_size = 32`,
# `plan.full_depth = True`.
_evaluate = _register(evaluation.evaluate, 'evaluate', 'bonjax.evaluation')
_plan = _register(plan_lib.plan, 'plan', 'bonjax.train')

# Studies (layer 4): arms trained and evaluated side by side; the main job is one.
Arm = _register(study_lib.Arm, 'Arm', 'bonjax.study')  # pylint: disable=invalid-name
_run_study = _register(study_lib.run_study, 'run_study', 'bonjax.study')
_run_demo = _register(demo.run_demo, 'run_demo', 'bonjax.demo')


def train(workdir: str, **kwargs: Any) -> dict[str, Any]:
  """`bonjax train`: the loop with every argument gin binds (`train.num_steps = ...`)."""
  return _train(workdir, **kwargs)


def run_demo(workdir: str) -> dict[str, Any]:
  """`bonjax demo`: the main job, with whatever objects gin binds (`run_demo.arms = ...`)."""
  return _run_demo(workdir=workdir)


def run_study(workdir: str) -> dict[str, Any]:
  """`bonjax study`: the bound arms trained, evaluated and compared (`run_study.arms = ...`)."""
  return _run_study(workdir=workdir)


def _run_objects(workdir: str, gin_files: Sequence[str], bindings: Sequence[str]
                 ) -> dict[str, Any]:
  """The objects a run was trained with: its saved gin config parsed again, then the overrides.

  Returns the arguments gin binds for `train` (model, task, verifier, reward, rollout, ...).
  """
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f'no run directory {workdir!r}')
  run_file = os.path.join(workdir, train_lib.loop.RUN_FILE)
  if not os.path.exists(run_file):
    raise FileNotFoundError(f'{workdir!r} is not a bonjax run directory (no '
                            f'{train_lib.loop.RUN_FILE}); train one with `bonjax train`')
  with open(run_file, encoding='utf-8') as f:
    saved = json.load(f)
  gin.clear_config()
  gin.parse_config(saved['gin_config'])
  parse_config(gin_files, bindings)
  return gin.get_bindings('bonjax.train.train')


def _scorers(objects: dict[str, Any], verifier: str | None) -> dict[str, Any]:
  """The run's verifier (or the one named, built through gin so its bindings apply) and reward."""
  if verifier is not None and verifier not in VERIFIERS:
    raise verifiers.UnknownVerifierError(f'unknown verifier {verifier!r}; valid names: '
                                         f'{", ".join(VERIFIERS)}')
  return {'verifier': VERIFIERS[verifier]() if verifier else objects.get('verifier'),
          'reward': objects.get('reward')}


def _run_defaults(objects: dict[str, Any]) -> dict[str, Any]:
  """What evaluation takes from the run (sample length, sampler), unless bound for evaluate."""
  bound = gin.get_bindings('bonjax.evaluation.evaluate')
  rollout = objects.get('eval_rollout') or objects.get('rollout')
  defaults = {'max_new_tokens': rollout.max_new_tokens, 'sampler': rollout.sampler} \
      if rollout is not None else {}
  return {k: v for k, v in defaults.items() if k not in bound}


def evaluate_run(workdir: str, *, ns: Sequence[int], temperatures: Sequence[float],
                 gin_files: Sequence[str] = (), bindings: Sequence[str] = (),
                 split: str | None = None, num_problems: int | None = None,
                 verifier: str | None = None, out_dir: str | None = None
                 ) -> evaluation.EvalResults:
  """`bonjax eval`: the run's latest checkpoint over (N, T), written to <run>/eval/<split>-<step>.

  The run's model, task, verifier and reward (from its saved gin config, `gin_files` and
  `bindings` overriding it; `verifier` names another verifier); knobs of `evaluate` by gin.
  """
  objects = _run_objects(workdir, gin_files, bindings)
  task = objects['task']
  split = split or task.eval_split
  step = evaluation.latest_step(workdir)
  if step is None:
    raise FileNotFoundError(f'the run {workdir!r} has no checkpoint yet: train it first')
  out_dir = out_dir or os.path.join(workdir, 'eval', f'{split}-step{step}'.replace('/', '_'))
  results = _evaluate(workdir, model=objects['model'], task=task, ns=list(ns),
                      temperatures=list(temperatures), split=split, num_problems=num_problems,
                      out_dir=out_dir, **_scorers(objects, verifier), **_run_defaults(objects))
  evaluation.write_report(results, out_dir)
  return results


def sample_run(workdir: str, *, prompts: str, n: int, temperatures: Sequence[float],
               gin_files: Sequence[str] = (), bindings: Sequence[str] = (),
               verifier: str | None = None, out: str | None = None) -> str:
  """`bonjax sample`: n samples of each prompt of a JSONL file, with their scores, as JSONL.

  Each line of `prompts` is an example of the run's task (the fields its prompt format reads,
  e.g. {"question": ...}) or {"prompt": text}, used as is. Samples are scored by the verifier and
  the reward when every line has the fields they need. Writes <run>/samples/<file>.jsonl (or
  `out`), one line per sample; returns its path.
  """
  objects = _run_objects(workdir, gin_files, bindings)
  task, model = objects['task'], objects['model']
  examples, prompt_format = draws.read_prompts(prompts, task.text_format.prompt)
  scorers = {role: s for role, s in _scorers(objects, verifier).items()
             if s is not None and all(k in e for e in examples
                                      for k in getattr(s, 'required_keys', ()))}
  options = dict(_run_defaults(objects), **gin.get_bindings('bonjax.evaluation.evaluate'))
  mesh = sharding.make_mesh(options.get('mesh') or 'data:-1')
  params, _ = evaluation.restore_run_params(workdir, model, mesh)
  grid = draws.Grid(model=model, tokenizer=evaluation.run_tokenizer(workdir, task),
                    num_samples=n, max_new_tokens=options.get('max_new_tokens',
                                                              task.max_target_len),
                    max_prompt_len=task.max_prompt_len,
                    prompt_format=prompt_format,
                    sampler=options.get('sampler', sampling.Temperature(1.0)),
                    seed=options.get('seed', 0), mesh=mesh)
  scorer = train_lib.Scorer(scorers.get('verifier'), scorers.get('reward')) if scorers else None
  try:
    records = draws.sample(grid, params, examples, check_temperatures(temperatures),
                           scorer, batch_size=options.get('batch_size', 16))
  finally:
    if scorer is not None:
      scorer.close()
  out = out or os.path.join(workdir, 'samples',
                            os.path.splitext(os.path.basename(prompts))[0] + '.jsonl')
  draws.write_samples(out, records, examples, prompt_format)
  print(f'wrote {len(records) * n} samples of {len(examples)} prompts to {out}'
        + ('' if scorers else ' (unscored: the prompts lack the fields the verifier needs)'))
  return out


def plan(**kwargs: Any) -> dict[str, Any]:
  """`bonjax plan`: the bound config's train step and generation compiled for candidate meshes."""
  objects = gin.get_bindings('bonjax.train.train')
  return _plan(objects, **kwargs)


def parse_config(gin_files: Sequence[str] = (), bindings: Sequence[str] = ()) -> None:
  """Parses config files, then extra bindings (later ones win), and finalizes the config.

  Paths, and the ``include`` lines of config files, are relative to the working directory (the
  repository root for ``experiments/``). Raises FileNotFoundError naming a missing config file,
  and ValueError naming an unknown configurable or parameter (with its file and line).
  """
  # Checked here because gin, not finding a relative path, looks it up as a Python package and
  # fails with a TypeError on namespace packages such as `experiments`.
  missing = [path for path in gin_files if not os.path.isfile(path)]
  if missing:
    raise FileNotFoundError(f'gin config file(s) not found: {missing} (paths are relative to '
                            f'the working directory {os.getcwd()})')
  gin.parse_config_files_and_bindings(list(gin_files), list(bindings))
