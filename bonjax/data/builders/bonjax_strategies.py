"""TFDS builder for the several-strategies problems of ``bonjax.data.strategies``."""

from __future__ import annotations

import dataclasses

import tensorflow_datasets as tfds

from bonjax.data import strategies
from bonjax.data.builders import _common


@dataclasses.dataclass(eq=False)
class StrategiesConfig(tfds.core.BuilderConfig):
  """Sizes and seed of the task (custom configs need a name of their own)."""

  seed: int = 0
  num_train: int = 4000
  num_test: int = 256


class BonjaxStrategies(_common.BonjaxBuilder):
  """Problems whose hidden rule is one of several, each with its own reliability."""

  name = 'bonjax_strategies'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [StrategiesConfig(name='default', description='4000 train, 256 test')]
  DEFAULT_CONFIG_NAME = 'default'

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description=strategies.__doc__,
        features=_common.text_features('question', 'solution', 'answer', 'rule'),
        supervised_keys=('question', 'solution'))

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download: every example is generated.
    config = self.builder_config
    splits = strategies.generate_splits(config.seed, {'test': config.num_test,
                                                      'train': config.num_train})
    return {name: self._generate_examples(examples) for name, examples in splits.items()}

  def _generate_examples(self, examples):
    yield from examples
