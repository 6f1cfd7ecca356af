"""TFDS builder for Hendrycks et al.'s MATH (2021), read from the official JSON files."""

from __future__ import annotations

import json

import tensorflow_datasets as tfds

from bonjax.data.boxed import last_boxed
from bonjax.data.builders import _common

SPLITS = ("train", "test")


class HendrycksMath(_common.ManualDataBuilder):
  """Competition mathematics problems with LaTeX solutions; the answer is the last box."""

  name = "hendrycks_math"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_FILES = tuple(f"MATH/{split}/*/*.json" for split in SPLITS)
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download the official MATH dataset of Hendrycks et al. (MATH.tar from
  github.com/hendrycks/math, "Download the MATH dataset") and extract it into the manual
  directory, so that problems lie at:
    <manual_dir>/MATH/train/<subject>/<id>.json
    <manual_dir>/MATH/test/<subject>/<id>.json
  Each file is a JSON object with keys "problem", "level", "type" and "solution".
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=("MATH: problem, level, type, solution, and answer (the last \\boxed{} of "
                     "the solution, empty if it has none)."),
        features=_common.text_features("problem", "level", "type", "solution", "answer"),
        homepage="https://github.com/hendrycks/math",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = self._manual_root(dl_manager)
    return {split: self._generate_examples(root / "MATH" / split) for split in SPLITS}

  def _generate_examples(self, split_dir):
    for path in sorted(split_dir.glob("*/*.json")):
      record = json.loads(path.read_text())
      yield f"{path.parent.name}/{path.stem}", {
          "problem": record["problem"],
          "level": record["level"],
          "type": record["type"],
          "solution": record["solution"],
          "answer": last_boxed(record["solution"]) or "",
      }
