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

import optax

from bonjax.train.methods import Method, Sft

PyTree = Any


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
