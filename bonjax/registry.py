"""Every gin configurable of bonjax, registered here and nowhere else.

Library modules define plain functions and classes with keyword arguments and no gin decorators,
so they stay importable and testable without gin. This module makes them configurable under
stable names, which are what the files under ``experiments/`` refer to::

    train_reward_model.num_steps = 500
    train_reward_model.triples = @policy_triples()
    policy_triples.verifier = 'answer_match'

Each name is also reachable with its module prefix (``bonjax.train.train_reward_model``), for the
day two configurables share a short name. Bindings apply only to calls made through gin: a config
file's ``@name()`` references, or the wrappers defined here (``registry.train_reward_model(...)``),
never to direct calls of the original functions. To add a configurable, register it below under a
name that will not change, and add a test that a config using it parses.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import gin

from bonjax import demo, verifiers
from bonjax.train import reward_model


def _register(fn_or_cls: Any, name: str, module: str) -> Any:
  return gin.external_configurable(fn_or_cls, name=name, module=module)


# Verifiers (layer 1), under the names `bonjax.verifiers.get` knows them by.
answer_match = _register(verifiers.AnswerMatch, 'answer_match', 'bonjax.verifiers')
math_answer = _register(verifiers.MathAnswer, 'math_answer', 'bonjax.verifiers')
code_execution = _register(verifiers.CodeExecution, 'code_execution', 'bonjax.verifiers')
noisy = _register(verifiers.Noisy, 'noisy', 'bonjax.verifiers')
learned = _register(verifiers.LearnedVerifier, 'learned', 'bonjax.verifiers')
# A trained reward model, read from its run directory.
learned_verifier = _register(reward_model.load_verifier, 'learned_verifier', 'bonjax.verifiers')

# Reward model training (layer 3).
train_reward_model = _register(reward_model.train_reward_model, 'train_reward_model',
                               'bonjax.train')
policy_triples = _register(reward_model.policy_triples, 'policy_triples', 'bonjax.train')
read_triples = _register(reward_model.read_triples, 'read_triples', 'bonjax.train')

# The small end-to-end experiment (layer 4). Bind its knobs as `DemoConfig.<field> = ...`.
DemoConfig = _register(demo.DemoConfig, 'DemoConfig', 'bonjax.demo')  # pylint: disable=invalid-name
_run_demo = _register(demo.run_demo, 'run_demo', 'bonjax.demo')


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
