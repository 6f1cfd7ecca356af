"""TFDS builder for the synthetic arithmetic word problems of ``bonjax.data.arith``."""

from __future__ import annotations

import dataclasses

import tensorflow_datasets as tfds

from bonjax.data import arith
from bonjax.data.builders import _common


@dataclasses.dataclass(eq=False)
class ArithConfig(tfds.core.BuilderConfig):
  """One difficulty and size of the task.

  Custom configs (e.g. small ones for tests) need a name of their own: prepared data is stored
  under ``<data_dir>/bonjax_arith/<name>/<version>``.

  Attributes:
    difficulty: a name in ``arith.DIFFICULTIES`` or an ``arith.Difficulty``.
    seed: the seed every example is drawn from.
    num_train: examples in the train split.
    num_test: examples in the test split (never repeated in train).
  """

  difficulty: str | arith.Difficulty = "easy"
  seed: int = 0
  num_train: int = 20_000
  num_test: int = 500


class BonjaxArith(_common.BonjaxBuilder):
  """Multi-step integer arithmetic word problems with step-by-step solutions."""

  name = "bonjax_arith"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      ArithConfig(name=name, description=f"{name} problems: {difficulty}", difficulty=name)
      for name, difficulty in arith.DIFFICULTIES.items()
  ]
  DEFAULT_CONFIG_NAME = "easy"

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=arith.__doc__,
        features=_common.text_features("question", "solution", "answer"),
        supervised_keys=("question", "solution"),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download: every example is generated.
    config = self.builder_config
    # Test first, so that train skips every test question.
    splits = arith.generate_splits(config.seed, config.difficulty,
                                   {"test": config.num_test, "train": config.num_train})
    return {name: self._generate_examples(examples) for name, examples in splits.items()}

  def _generate_examples(self, examples):
    yield from examples
