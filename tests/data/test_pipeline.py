"""Tests for bonjax.data.pipeline: order, sharding, padding, packing and exact resumption."""

import json
import sys

import chex
import numpy as np
import pytest

from bonjax.data import arith, loading, pipeline
from bonjax.data.builders import ArithConfig

# 23 arithmetic problems as a TFDS data source returns them (text features as bytes).
SOURCE = [{key: value.encode() for key, value in arith.generate_problem(
    np.random.default_rng([0, i]), "easy").items()} for i in range(23)]


def _prompts(source=SOURCE, **kwargs):
  kwargs = {"batch_size": 4, "max_prompt_len": 64, "seed": 3, "process_index": 0,
            "process_count": 1, **kwargs}
  return lambda tok: pipeline.prompt_batches(source, tok, **kwargs)


def _sft(**kwargs):
  kwargs = {"batch_size": 4, "max_len": 128, "seed": 3, "process_index": 0, "process_count": 1,
            **kwargs}
  return lambda tok: pipeline.sft_batches(SOURCE, tok, **kwargs)


MAKERS = {"prompts": _prompts(), "sft": _sft(), "sft_packed": _sft(packing=True),
          "eval": _prompts(shuffle=False, num_epochs=2, drop_remainder=False)}


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _assert_batches_equal(actual, expected):
  assert len(actual) == len(expected)
  for a, e in zip(actual, expected):
    assert a.keys() == e.keys()
    for key in a:
      if key == "metadata":
        assert a[key] == e[key]
      else:
        np.testing.assert_array_equal(a[key], e[key], err_msg=key)


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_restored_iterator_yields_exactly_the_uninterrupted_batches(kind, arith_tokenizer):
  make = MAKERS[kind]
  reference = list(make(arith_tokenizer)) if kind == "eval" else _take(make(arith_tokenizer), 14)
  for stop in (0, 3, 5, 6, 11):  # 23 examples, batches of 4: epochs end after 5 (or 6) batches.
    interrupted = make(arith_tokenizer)
    head = _take(interrupted, stop)
    state = json.loads(json.dumps(interrupted.get_state()))
    resumed = make(arith_tokenizer)
    resumed.set_state(state)
    tail = _take(resumed, len(reference) - stop)
    _assert_batches_equal(head + tail, reference)
  if kind == "eval":
    with pytest.raises(StopIteration):
      next(resumed)


def test_state_is_small_and_json_serializable(arith_tokenizer):
  iterator = MAKERS["prompts"](arith_tokenizer)
  _take(iterator, 7)
  assert iterator.get_state() == {"seed": 3, "epoch": 1, "position": 8, "num_examples": 23}


def test_each_epoch_is_a_seeded_permutation(arith_tokenizer):
  def epoch_orders(seed):
    iterator = _prompts(seed=seed)(arith_tokenizer)
    batches = _take(iterator, 10)  # 5 batches of 4 per epoch, 3 examples dropped each.
    return [np.concatenate([b["index"] for b in batches[e * 5:(e + 1) * 5]]) for e in (0, 1)]
  first, second = epoch_orders(3)
  assert len(set(first)) == 20 and len(set(second)) == 20
  assert not np.array_equal(first, second)
  np.testing.assert_array_equal(epoch_orders(3)[0], first)
  assert not np.array_equal(epoch_orders(4)[0], first)


def test_prompt_batches_content(arith_tokenizer):
  batch = next(MAKERS["prompts"](arith_tokenizer))
  chex.assert_shape([batch["prompts"]], (4, 64))
  assert batch["prompts"].dtype == np.int32 and batch["valid"].all()
  decoded = arith_tokenizer.decode(batch["prompts"])
  for text, index, meta in zip(decoded, batch["index"], batch["metadata"]):
    assert text == SOURCE[index]["question"].decode() + "\n"
    assert meta["answer"] == SOURCE[index]["answer"].decode()


def test_eval_pass_covers_every_example_once_with_padding(arith_tokenizer):
  batches = list(_prompts(shuffle=False, num_epochs=1, drop_remainder=False)(arith_tokenizer))
  assert len(batches) == 6
  indices = np.concatenate([b["index"][b["valid"]] for b in batches])
  np.testing.assert_array_equal(indices, np.arange(23))
  np.testing.assert_array_equal(batches[-1]["valid"], [True, True, True, False])
  assert all(b["prompts"].shape == (4, 64) for b in batches)


@pytest.mark.parametrize("kind", ["prompts", "sft", "sft_packed", "eval"])
def test_processes_read_disjoint_slices_of_the_same_global_batch(kind, arith_tokenizer):
  overrides = {"prompts": {}, "sft": {}, "sft_packed": {"packing": True},
               "eval": {"shuffle": False, "num_epochs": 1, "drop_remainder": False}}[kind]
  make = _sft if kind.startswith("sft") else _prompts
  global_batches = _take(make(**overrides)(arith_tokenizer), 6)
  per_process = [_take(make(**overrides, process_index=p, process_count=2)(arith_tokenizer), 6)
                 for p in range(2)]
  for step, expected in enumerate(global_batches):
    for key, value in expected.items():
      halves = [per_process[p][step][key] for p in range(2)]
      if key == "metadata":
        assert halves[0] + halves[1] == value
      else:
        assert halves[0].shape[0] == 2
        np.testing.assert_array_equal(np.concatenate(halves), value, err_msg=key)


def test_process_defaults_come_from_jax(arith_tokenizer):
  explicit = next(MAKERS["sft"](arith_tokenizer))
  default = next(pipeline.sft_batches(SOURCE, arith_tokenizer, batch_size=4, max_len=128, seed=3))
  _assert_batches_equal([default], [explicit])


def test_sft_batches_loss_on_solutions(arith_tokenizer):
  tok = arith_tokenizer
  batch = next(MAKERS["sft"](tok))
  chex.assert_shape([batch["inputs"], batch["targets"], batch["loss_mask"]], (4, 128))
  assert (batch["segment_ids"] == batch["input_mask"]).all()
  for row in range(4):
    loss_targets = batch["targets"][row][batch["loss_mask"][row] > 0]
    assert loss_targets[-1] == tok.eos_id
    assert tok.decode(loss_targets[None])[0] in {ex["solution"].decode() for ex in SOURCE}
    prompt_targets = batch["targets"][row][(batch["loss_mask"][row] == 0)
                                           & batch["input_mask"][row]]
    assert tok.decode(prompt_targets[None])[0].endswith("now?\n")


def test_packing_fits_more_examples_and_keeps_segments_apart(arith_tokenizer):
  packed = pipeline.sft_batches(SOURCE, arith_tokenizer, batch_size=2, max_len=160, packing=True,
                                process_index=0, process_count=1)
  batch = next(packed)
  assert packed.get_state()["position"] > 2
  assert batch["segment_ids"].max() >= 2
  for row in range(2):
    seg = batch["segment_ids"][row]
    starts = np.flatnonzero(np.diff(seg, prepend=0) > 0)
    assert (batch["positions"][row][starts] == 0).all()
    assert (batch["inputs"][row][starts] == arith_tokenizer.bos_id).all()
    # The last target of each segment is its EOS, never the next segment's BOS.
    ends = np.flatnonzero(np.diff(seg, append=0) != 0)
    assert (batch["targets"][row][ends] == arith_tokenizer.eos_id).all()


def test_reads_a_prepared_tfds_source_without_tensorflow(tmp_path, arith_tokenizer):
  source = loading.load("bonjax_arith", "train", tmp_path,
                        config=ArithConfig(name="tiny", num_train=10, num_test=2))
  batches = list(pipeline.sft_batches(source, arith_tokenizer, batch_size=4, max_len=128,
                                      num_epochs=1, process_index=0, process_count=1))
  assert len(batches) == 2 and batches[0]["loss_mask"].sum() > 0
  assert "tensorflow" not in sys.modules


def test_bad_arguments_and_state(arith_tokenizer):
  with pytest.raises(ValueError, match="divisible"):
    _prompts(batch_size=3, process_count=2)(arith_tokenizer)
  with pytest.raises(ValueError, match="empty"):
    _prompts(source=[])(arith_tokenizer)
  with pytest.raises(ValueError, match="drop_remainder"):
    _prompts(batch_size=32)(arith_tokenizer)
  iterator = MAKERS["prompts"](arith_tokenizer)
  with pytest.raises(KeyError, match="position"):
    iterator.set_state({"seed": 0, "epoch": 0})
  with pytest.raises(ValueError, match="23"):
    iterator.set_state({"seed": 0, "epoch": 0, "position": 0, "num_examples": 24})
  with pytest.raises(KeyError, match="problem"):
    next(_prompts(prompt_format="{problem}")(arith_tokenizer))
