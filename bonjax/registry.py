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
import os
from collections.abc import Sequence
from typing import Any

import gin
import optax

from bonjax import data, demo, models, sampling, verifiers
from bonjax import train as train_lib
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

# The small end-to-end experiment (layer 4). Bind its knobs as `DemoConfig.<field> = ...`.
DemoConfig = _register(demo.DemoConfig, 'DemoConfig', 'bonjax.demo')  # pylint: disable=invalid-name
_run_demo = _register(demo.run_demo, 'run_demo', 'bonjax.demo')


def train(workdir: str, **kwargs: Any) -> dict[str, Any]:
  """`bonjax train`: the loop with every argument gin binds (`train.num_steps = ...`)."""
  return _train(workdir, **kwargs)


def run_demo(workdir: str) -> dict[str, Any]:
  """`bonjax demo`: the experiment with the bound `DemoConfig`."""
  return _run_demo(workdir=workdir, config=DemoConfig())


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
