"""Tests for bonjax.data.loading.load."""

import json
import sys

import pytest

from bonjax.data import loading
from bonjax.data.builders import ArithConfig, MissingManualDataError


def test_prepares_missing_data_dir_then_reuses_it(tmp_path):
  data_dir = tmp_path / "not" / "there" / "yet"
  config = ArithConfig(name="tiny", num_train=12, num_test=4)
  source = loading.load("bonjax_arith", "train", data_dir, config=config)
  assert len(source) == 12
  assert (data_dir / "bonjax_arith" / "tiny" / "1.0.0").is_dir()
  assert list(data_dir.rglob("*.array_record*"))
  again = loading.load("bonjax_arith", "train[:5]", data_dir, config=config)
  assert [again[i] for i in range(5)] == [source[i] for i in range(5)]
  assert "tensorflow" not in sys.modules


def test_manual_dataset_from_manual_dir(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  records = [{"question": "1+1?", "answer": "1+1=2\n#### 2"}]
  for split in ("train", "test"):
    (manual / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  source = loading.load("gsm8k", "test", tmp_path / "data", manual_dir=manual)
  assert source[0]["answer"] == b"2"


@pytest.mark.parametrize("manual_dir", [None, "empty"])
def test_missing_manual_files_give_one_clear_error(tmp_path, manual_dir):
  if manual_dir is not None:
    manual_dir = tmp_path / manual_dir
    manual_dir.mkdir()
  with pytest.raises(MissingManualDataError) as error:
    loading.load("hendrycks_math", "test", tmp_path / "data", manual_dir=manual_dir)
  message = str(error.value)
  expected_root = manual_dir or tmp_path / "data" / "downloads" / "manual"
  assert f"{expected_root}/MATH/train/*/*.json" in message
  assert f"{expected_root}/MATH/test/*/*.json" in message
  assert "github.com/hendrycks/math" in message


def test_unknown_dataset_lists_valid_names(tmp_path):
  with pytest.raises(ValueError, match="bonjax_arith.*gsm8k.*hendrycks_math.*humaneval"):
    loading.load("mnist", "train", tmp_path)


def test_bad_config(tmp_path):
  with pytest.raises(ValueError, match="easy"):
    loading.load("bonjax_arith", "train", tmp_path, config="impossible")
  with pytest.raises(ValueError, match="no configs"):
    loading.load("humaneval", "test", tmp_path, config="easy")
