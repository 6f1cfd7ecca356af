"""Tests for bonjax.data.builders.gsm8k on fixture files in the official JSONL format."""

import json
import sys

import pytest
import tensorflow_datasets as tfds

from bonjax.data.builders import Gsm8k, MissingManualDataError
from bonjax.data.builders.gsm8k import split_answer

RECORDS = {
    "train": [
        {"question": "Natalia sold clips to 48 friends in April, and half as many in May. How "
                     "many clips did she sell in total?",
         "answer": "In May she sold 48/2 = <<48/2=24>>24 clips.\nIn total she sold 48+24 = "
                   "<<48+24=72>>72 clips.\n#### 72"},
        {"question": "A shop has 1,200 pens and sells 150. How many are left?",
         "answer": "1200 - 150 = <<1200-150=1050>>1050\n#### 1,050"},
    ],
    "test": [{"question": "What is 2 + 3?", "answer": "2 + 3 = <<2+3=5>>5\n#### 5"}],
}


def write_official_files(directory):
  directory.mkdir(parents=True, exist_ok=True)
  for split, records in RECORDS.items():
    (directory / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_prepares_from_manual_dir_and_reads_back_without_tensorflow(tmp_path):
  write_official_files(tmp_path / "manual")
  builder = Gsm8k(data_dir=str(tmp_path / "data"), file_format="array_record")
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "manual")))
  train = sorted(builder.as_data_source("train"), key=lambda ex: ex["answer"])
  assert [ex["answer"] for ex in train] == [b"1050", b"72"]
  assert train[1]["solution"].decode().endswith("<<48+24=72>>72 clips.")
  assert train[1]["question"].decode() == RECORDS["train"][0]["question"]
  assert len(builder.as_data_source("test")) == 1
  assert "tensorflow" not in sys.modules


def test_split_answer():
  assert split_answer("a\nb\n#### 1,234") == ("a\nb", "1234")
  with pytest.raises(ValueError, match="####"):
    split_answer("no final line")


def test_missing_files_name_what_to_download(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  (manual / "train.jsonl").write_text("")
  builder = Gsm8k(data_dir=str(tmp_path / "data"), file_format="array_record")
  with pytest.raises(MissingManualDataError, match="test.jsonl") as error:
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  assert "grade-school-math" in str(error.value)
  assert "train.jsonl" not in str(error.value).split("Missing:")[1].split("\n\n")[0]


def test_missing_manual_dir(tmp_path):
  builder = Gsm8k(data_dir=str(tmp_path / "data"), file_format="array_record")
  with pytest.raises(MissingManualDataError, match="downloads/manual"):
    builder.download_and_prepare()
