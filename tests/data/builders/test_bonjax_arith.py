"""Tests for bonjax.data.builders.bonjax_arith: prepare as ArrayRecord, read back without TF."""

import sys

import numpy as np
import tensorflow_datasets as tfds

from bonjax.data import arith
from bonjax.data.builders import ArithConfig, BonjaxArith


def test_prepares_and_reads_back_without_tensorflow(tmp_path):
  config = ArithConfig(name="tiny_medium", difficulty="medium", seed=7, num_train=40, num_test=8)
  builder = BonjaxArith(config=config, data_dir=str(tmp_path), file_format="array_record")
  builder.download_and_prepare()
  sources = builder.as_data_source()
  assert {name: len(source) for name, source in sources.items()} == {"train": 40, "test": 8}

  read = {name: sorted((ex["question"].decode(), ex["solution"].decode(), ex["answer"].decode())
                       for ex in source) for name, source in sources.items()}
  expected = {name: sorted((ex["question"], ex["solution"], ex["answer"]) for _, ex in examples)
              for name, examples in arith.generate_splits(
                  7, "medium", {"test": 8, "train": 40}).items()}
  assert read == expected
  assert "tensorflow" not in sys.modules


def test_registered_configs_and_tfds_data_source(tmp_path):
  assert sorted(BonjaxArith.builder_configs) == ["easy", "hard", "medium"]
  assert BonjaxArith.builder_configs["easy"].num_train == 20_000
  config = ArithConfig(name="tiny_easy", num_train=5, num_test=3)
  BonjaxArith(config=config, data_dir=str(tmp_path), file_format="array_record"
              ).download_and_prepare()
  source = tfds.data_source("bonjax_arith/tiny_easy", split="test", data_dir=str(tmp_path))
  assert len(source) == 3
  answers = [int(source[i]["answer"]) for i in range(3)]
  assert all(isinstance(a, int) for a in answers) and np.min(answers) >= 0
  assert "tensorflow" not in sys.modules
