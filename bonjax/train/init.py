"""Where a run's initial policy comes from: fresh weights, a warm start, or existing weights.

    None                      fresh parameters from the run's seed
    WarmStart(method=Sft())   first train the policy with another method (SFT, typically) in
                              <workdir>/warm_start, through the same loop, then start from it
    InitFrom(run_dir)         the params of another bonjax run's latest checkpoint (and its
                              tokenizer, so that the token ids mean the same)
    HfCheckpoint(path)        a Hugging Face checkpoint folder (`bonjax.models.load_hf_checkpoint`)

Each is deterministic, so a resumed run re-derives the same initial policy (the KL reference).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import flax.linen as nn
import jax
import optax

from bonjax import data, models
from bonjax.train import checkpoint as checkpoint_lib
from bonjax.train.methods import Method, Sft

PyTree = Any
CHECKPOINT_DIR = 'checkpoints'


@dataclasses.dataclass(frozen=True)
class WarmStart:
  """Train the initial policy first: `method` for `num_steps` steps of `batch_size` examples."""

  method: Method = Sft()
  optimizer: optax.GradientTransformation | None = None
  num_steps: int = 300
  batch_size: int = 32
  name: str = 'warm_start'

  def run_dir(self, workdir: str) -> str:
    return os.path.join(workdir, self.name)


@dataclasses.dataclass(frozen=True)
class InitFrom:
  """The params of an existing bonjax run directory (its latest checkpoint, or `step`)."""

  run_dir: str
  step: int | None = None


@dataclasses.dataclass(frozen=True)
class HfCheckpoint:
  """A Hugging Face checkpoint folder (config.json + safetensors) of the run's model config."""

  path: str


def run_tokenizer(workdir: str, task: data.Task, init) -> data.Tokenizer:
  """The run's tokenizer: the initial policy's run's, if it came from one, else the task's."""
  source_dir = None
  if isinstance(init, WarmStart):
    source_dir = init.run_dir(workdir)
  elif isinstance(init, InitFrom):
    source_dir = init.run_dir
  if source_dir is not None and task.tokenizer is None:
    path = os.path.join(source_dir, data.task.TOKENIZER_FILE)
    if not os.path.exists(path):
      raise FileNotFoundError(f'the initial policy\'s run {source_dir!r} has no '
                              f'{data.task.TOKENIZER_FILE}')
    tokenizer = data.Tokenizer.load(path)
    if jax.process_index() == 0:
      tokenizer.save(os.path.join(workdir, data.task.TOKENIZER_FILE))
    return tokenizer
  return task.tokenizer_for(workdir)


def restore_params(run_dir: str, like: PyTree, step: int | None = None) -> PyTree:
  """The params of a run directory's checkpoint (latest, or `step`) into `like`'s shardings."""
  if not os.path.isdir(os.path.join(run_dir, CHECKPOINT_DIR)):
    raise FileNotFoundError(f'{run_dir!r} is not a bonjax run directory with checkpoints (no '
                            f'{CHECKPOINT_DIR}/); train it first with `bonjax train`')
  with checkpoint_lib.Checkpointer(os.path.join(run_dir, CHECKPOINT_DIR)) as ckpt:
    return ckpt.restore(step, target={'params': like})['params']


def initial_params(workdir, init, model, like, seed, mesh, rules) -> PyTree:
  """The initial policy's params on the mesh (the run's starting point and its KL reference)."""
  if init is None:
    with jax.set_mesh(mesh), nn.logical_axis_rules(tuple(tuple(r) for r in rules)):
      return jax.jit(lambda key: models.init_params(model, key),
                     out_shardings=jax.tree.map(lambda x: x.sharding, like))(jax.random.key(seed))
  if isinstance(init, WarmStart):
    return restore_params(init.run_dir(workdir), like)
  if isinstance(init, InitFrom):
    return restore_params(init.run_dir, like, init.step)
  if isinstance(init, HfCheckpoint):
    config, params = models.load_hf_checkpoint(init.path, dtype=model.config.param_dtype)
    if config.vocab_size != model.config.vocab_size or config.num_layers != model.config.num_layers:
      raise ValueError(f'the checkpoint at {init.path!r} is a different model than configured')
    checkpoint_lib.check_compatible('params', params, like)
    return jax.device_put(params, jax.tree.map(lambda x: x.sharding, like))
  raise TypeError(f'train.init must be a WarmStart, InitFrom or HfCheckpoint, got '
                  f'{type(init).__name__}')
