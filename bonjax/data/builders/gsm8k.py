"""TFDS builder for GSM8K (Cobbe et al., 2021), read from the official JSONL files."""

from __future__ import annotations

import json

import tensorflow_datasets as tfds

from bonjax.data.builders import _common

SPLITS = ("train", "test")


def split_answer(answer_text: str) -> tuple[str, str]:
  """Splits an official GSM8K answer into ``(solution, final answer)`` at its ``####`` line."""
  solution, sep, final = answer_text.rpartition("####")
  if not sep:
    raise ValueError(f"A GSM8K answer must end in '#### <number>', got {answer_text[-80:]!r}.")
  return solution.strip(), final.strip().replace(",", "")


class Gsm8k(_common.ManualDataBuilder):
  """Grade-school math word problems with worked solutions and integer answers."""

  name = "gsm8k"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_FILES = tuple(f"{split}.jsonl" for split in SPLITS)
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download GSM8K's official files train.jsonl and test.jsonl (github.com/openai/grade-school-math,
  folder grade_school_math/data/) and put them directly in the manual directory:
    <manual_dir>/train.jsonl
    <manual_dir>/test.jsonl
  Each line is a JSON object with keys "question" and "answer" (ending in "#### <number>").
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="GSM8K: question, solution (the worked answer) and answer (the number).",
        features=_common.text_features("question", "solution", "answer"),
        homepage="https://github.com/openai/grade-school-math",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = self._manual_root(dl_manager)
    return {split: self._generate_examples(root / f"{split}.jsonl") for split in SPLITS}

  def _generate_examples(self, path):
    with path.open() as f:
      for line_number, line in enumerate(f):
        if not line.strip():
          continue
        record = json.loads(line)
        solution, answer = split_answer(record["answer"])
        yield line_number, {"question": record["question"], "solution": solution,
                            "answer": answer}
