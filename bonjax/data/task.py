"""A task: a dataset as a training or evaluation job reads it, with its text formats and tokenizer.

    task = Task('bonjax_arith', config='easy', vocab_size=384)
    tokenizer = task.tokenizer_for(workdir)          # trained once on the train split, then reloaded
    source = task.source('train', workdir)           # prepared into <workdir>/data unless data_dir
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import tensorflow_datasets as tfds

from bonjax.data import batching, loading
from bonjax.data.tokenizer import Tokenizer

TOKENIZER_FILE = 'tokenizer.model'


@dataclasses.dataclass(frozen=True)
class Task:
  """One dataset and how its examples become prompts and targets.

  Attributes:
    dataset: a name in `bonjax.data.BUILDERS`.
    config: the builder config (a name, e.g. 'easy', or a config object such as an ArithConfig).
    data_dir: where prepared datasets live; None: `<workdir>/data` of the job.
    manual_dir: the official files of manual datasets (MATH, GSM8K).
    train_split, eval_split: tfds split names.
    prompt_format, target_format: `str.format` templates; None: the dataset's defaults
      (`bonjax.data.FORMATS`).
    tokenizer: a sentencepiece model file; None: train one of `vocab_size` on the train split.
    vocab_size: the size of a trained tokenizer.
    max_prompt_len: prompts are left-truncated to this many tokens.
    max_target_len: SFT rows hold prompt + target up to max_prompt_len + max_target_len tokens.
  """

  dataset: str = 'bonjax_arith'
  config: str | tfds.core.BuilderConfig | None = None
  data_dir: str | None = None
  manual_dir: str | None = None
  train_split: str = 'train'
  eval_split: str = 'test'
  prompt_format: str | None = None
  target_format: str | None = None
  tokenizer: str | None = None
  vocab_size: int = 384
  max_prompt_len: int = 64
  max_target_len: int = 64

  def __post_init__(self):
    if self.dataset not in batching.FORMATS:
      raise ValueError(f'unknown dataset {self.dataset!r}; valid: {sorted(batching.FORMATS)}')

  @property
  def text_format(self) -> batching.TextFormat:
    default = batching.FORMATS[self.dataset]
    return batching.TextFormat(prompt=self.prompt_format or default.prompt,
                               target=self.target_format or default.target)

  def data_dir_for(self, workdir: str) -> str:
    return self.data_dir if self.data_dir is not None else os.path.join(workdir, 'data')

  def source(self, split: str, workdir: str) -> Sequence[dict[str, Any]]:
    """The split as a random-access source, preparing the dataset first if needed."""
    return loading.load(self.dataset, split, self.data_dir_for(workdir),
                        manual_dir=self.manual_dir, config=self.config)

  def tokenizer_for(self, workdir: str) -> Tokenizer:
    """The task's tokenizer: `tokenizer` if set, else the one trained for (and kept in) workdir."""
    if self.tokenizer is not None:
      return Tokenizer.load(self.tokenizer)
    path = os.path.join(workdir, TOKENIZER_FILE)
    if os.path.exists(path):
      return Tokenizer.load(path)
    source = self.source(self.train_split, workdir)
    fmt = self.text_format
    examples = (batching.decode_example(source[i]) for i in range(len(source)))
    texts = (text for ex in examples
             for text in (batching.format_text(fmt.prompt, ex), batching.format_text(fmt.target, ex)))
    tokenizer = Tokenizer.train(texts, vocab_size=self.vocab_size)
    os.makedirs(workdir, exist_ok=True)
    tokenizer.save(path + '.tmp')  # a job killed while saving never leaves a partial model
    os.replace(path + '.tmp', path)
    return tokenizer
