"""Tests for bonjax.data.builders.hendrycks_math on fixture files in the official layout."""

import json
import sys

import pytest
import tensorflow_datasets as tfds

from bonjax.data.builders import HendrycksMath, MissingManualDataError, last_boxed

PROBLEMS = {
    ("train", "algebra", "1"): {
        "problem": "What is $\\frac{1}{2} + \\frac{1}{2}$?", "level": "Level 1",
        "type": "Algebra", "solution": "We add: $\\frac12+\\frac12 = \\boxed{1}$."},
    ("train", "geometry", "12"): {
        "problem": "Find the ratio.", "level": "Level 5", "type": "Geometry",
        "solution": "First $\\boxed{2}$, then the ratio is $\\boxed{\\frac{\\sqrt{3}}{2}}$."},
    ("test", "number_theory", "7"): {
        "problem": "Compute $3^2$.", "level": "Level 2", "type": "Number Theory",
        "solution": "$3^2 = \\boxed 9$."},
}


def write_official_files(manual_dir):
  for (split, subject, problem_id), record in PROBLEMS.items():
    path = manual_dir / "MATH" / split / subject / f"{problem_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


@pytest.mark.parametrize("solution, answer", [
    ("so $\\boxed{42}$.", "42"),
    ("$\\boxed{1}$ and then $\\boxed{\\frac{a}{b^{2}}}$", "\\frac{a}{b^{2}}"),
    ("$\\boxed{\\text{(C)}}$", "\\text{(C)}"),
    ("$\\boxed 5$.", "5"),
    ("\\fbox{x+1}", "x+1"),
    ("no box here", None),
    ("unbalanced \\boxed{1", None),
])
def test_last_boxed(solution, answer):
  assert last_boxed(solution) == answer


def test_prepares_from_manual_dir_and_reads_back_without_tensorflow(tmp_path):
  write_official_files(tmp_path / "manual")
  builder = HendrycksMath(data_dir=str(tmp_path / "data"), file_format="array_record")
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "manual")))
  train = sorted(builder.as_data_source("train"), key=lambda ex: ex["level"])
  assert [ex["answer"].decode() for ex in train] == ["1", "\\frac{\\sqrt{3}}{2}"]
  assert train[1]["type"] == b"Geometry"
  assert train[1]["problem"].decode() == "Find the ratio."
  (test_example,) = builder.as_data_source("test")
  assert test_example["answer"] == b"9"
  assert "tensorflow" not in sys.modules


def test_missing_split_names_expected_path(tmp_path):
  manual = tmp_path / "manual"
  write_official_files(manual)
  for path in (manual / "MATH" / "test").rglob("*.json"):
    path.unlink()
  builder = HendrycksMath(data_dir=str(tmp_path / "data"), file_format="array_record")
  with pytest.raises(MissingManualDataError, match=r"MATH/test/\*/\*\.json") as error:
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  assert "hendrycks/math" in str(error.value)
