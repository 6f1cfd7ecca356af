"""What many tests share: tiny models and params, a tokenizer, tiny tasks and scripted verifiers.

    from tests import helpers
    model, params = helpers.tiny_model(), helpers.tiny_params(model)
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Sequence

import gin
import jax
import numpy as np
import pytest

from bonjax import data, models, verifiers

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Tiny-run overrides for every experiments/arith/*.gin: a one-layer model, 2 steps of everything,
# short samples, a small generated dataset. Training still runs every real component.
TINY_ARITH_BINDINGS = (
    "ArithConfig.name = 'tiny_test'",
    'ArithConfig.num_train = 96',
    'ArithConfig.num_test = 8',
    'Task.max_prompt_len = 40',
    'Task.max_target_len = 24',
    'model.num_layers = 1',
    'model.embed_dim = 32',
    'model.num_heads = 2',
    'model.num_kv_heads = 1',
    'model.head_dim = 16',
    'model.mlp_dim = 64',
    'Rollout.num_samples = 4',
    'Rollout.max_new_tokens = 8',
    'train.num_steps = 2',
    'train.batch_size = 8',
    'train.eval_every = 0',
    'train.progress = False',
)
TINY_WARM_START_BINDINGS = ('WarmStart.num_steps = 2', 'WarmStart.batch_size = 8')


def tiny_config(**overrides) -> models.TransformerConfig:
  return dataclasses.replace(models.get_config('tiny'), **overrides)


def tiny_model(**overrides) -> models.Transformer:
  return models.Transformer(tiny_config(**overrides))


def tiny_params(model: models.Transformer, seed: int = 0, scale: float = 0.5):
  """Random params drawn with numpy (no init compile: seconds saved per test on a CPU)."""
  rng = np.random.default_rng(seed)
  shapes = models.abstract_params(model)
  return jax.tree.map(
      lambda s: (rng.standard_normal(s.shape) * scale / np.sqrt(max(s.shape[0], 1))).astype(
          s.dtype), shapes)


@pytest.fixture(autouse=True)
def gin_cleared_at_repo_root(monkeypatch):
  """An autouse fixture for modules that import it: no gin config leaks between tests, and gin
  includes resolve as they do from the repository root."""
  monkeypatch.chdir(REPO_ROOT)
  gin.clear_config()
  yield
  gin.clear_config()


ARITH_TEXTS = [f'Tom has {i} apples. He buys {j} more. How many apples does Tom have now?\n'
               f'He buys {j} more: {i} + {j} = {i + j}.\nThe answer is {i + j}.'
               for i in range(1, 30) for j in range(1, 12)]


@functools.lru_cache(maxsize=None)
def arith_tokenizer(vocab_size: int = 320) -> data.Tokenizer:
  return data.Tokenizer.train(ARITH_TEXTS, vocab_size=vocab_size)


class Scripted(verifiers.Verifier):
  """Scores each completion with `fn(prompt, completion, metadata)` (a test's own verifier)."""

  name = 'scripted'

  def __init__(self, fn: Callable[[str, str, dict], float]):
    self.fn = fn

  def score_one(self, prompt, completion, metadata) -> float:
    return float(self.fn(prompt, completion, metadata))


def constant_scores(values: Sequence[float]) -> Scripted:
  """A verifier that gives sample j of every prompt the score values[j % len(values)]."""
  counter = iter(range(10**9))
  return Scripted(lambda p, c, m: values[next(counter) % len(values)])
