"""Tests for bonjax.data.batching."""

import chex
import numpy as np
import pytest

from bonjax.data import batching

EXAMPLES = [
    {"question": b"Tom has 3 apples. He buys 4 more. How many apples does Tom have now?",
     "solution": b"He buys 4 more: 3 + 4 = 7.\nThe answer is 7.", "answer": b"7",
     "level": np.int64(2)},
    {"question": "Ann has 12 pencils. She sells 5. How many pencils does Ann have now?".encode(),
     "solution": b"She sells 5: 12 - 5 = 7.\nThe answer is 7.", "answer": b"7",
     "level": np.int64(1)},
]
FORMAT = batching.FORMATS["bonjax_arith"]


@pytest.fixture(scope="module")
def tok(arith_tokenizer):
  return arith_tokenizer


def test_decode_example():
  assert batching.decode_example(EXAMPLES[0])["answer"] == "7"
  assert type(batching.decode_example(EXAMPLES[0])["level"]) is int


def test_format_text_names_missing_feature():
  with pytest.raises(KeyError, match="'problem'.*answer"):
    batching.format_text("{problem}", {"answer": "1"})


def test_prompt_batch_right_padded_with_metadata(tok):
  batch = batching.prompt_batch(EXAMPLES, tok, max_prompt_len=64, prompt_format=FORMAT.prompt)
  chex.assert_shape(batch["prompts"], (2, 64))
  assert (batch["prompt_lengths"] < 64).all()
  for row, length, example in zip(batch["prompts"], batch["prompt_lengths"], EXAMPLES):
    assert row[0] == tok.bos_id and (row[length:] == tok.pad_id).all()
    assert tok.decode(row[None])[0] == example["question"].decode() + "\n"
  assert [m["answer"] for m in batch["metadata"]] == ["7", "7"]


def test_prompt_batch_keeps_the_end_of_long_prompts(tok):
  batch = batching.prompt_batch(EXAMPLES, tok, max_prompt_len=6, prompt_format=FORMAT.prompt)
  assert (batch["prompt_lengths"] == 6).all()
  assert tok.decode(batch["prompts"])[0].endswith("now?\n")


def test_sft_sequences_mask_only_target_and_eos(tok):
  (sequence,) = batching.sft_sequences(EXAMPLES[:1], tok, max_len=100, text_format=FORMAT)
  assert sequence.inputs[0] == tok.bos_id and sequence.targets[-1] == tok.eos_id
  assert sequence.inputs[1:] == sequence.targets[:-1]
  masked = [t for t, m in zip(sequence.targets, sequence.loss_mask) if m]
  assert masked == tok.tokenize([EXAMPLES[0]["solution"].decode()])[0] + [tok.eos_id]
  prompt = [t for t, m in zip(sequence.targets, sequence.loss_mask) if not m]
  assert prompt == tok.tokenize([EXAMPLES[0]["question"].decode() + "\n"])[0]


def test_sft_sequences_truncate_the_end(tok):
  (sequence,) = batching.sft_sequences(EXAMPLES[:1], tok, max_len=8, text_format=FORMAT)
  assert len(sequence) == 8 and not any(sequence.loss_mask)


def test_pack_is_greedy_and_in_order():
  seqs = [batching.SftSequence([0] * n, [0] * n, [True] * n) for n in (3, 4, 2, 5, 1)]
  assert batching.pack(seqs, num_rows=2, row_len=7) == ([[0, 1], [2, 3]], 4)
  assert batching.pack(seqs, num_rows=3, row_len=7) == ([[0, 1], [2, 3], [4]], 5)
  with pytest.raises(ValueError, match="row_len"):
    batching.pack(seqs, num_rows=10, row_len=4)


def test_sft_batch_layout(tok):
  seqs = batching.sft_sequences(EXAMPLES, tok, max_len=100, text_format=FORMAT)
  n0, n1 = len(seqs[0]), len(seqs[1])
  batch = batching.sft_batch([[seqs[0], seqs[1]], []], n0 + n1 + 3, tok.pad_id)
  chex.assert_shape(list(batch.values()), (2, n0 + n1 + 3))
  np.testing.assert_array_equal(batch["segment_ids"][0], [1] * n0 + [2] * n1 + [0] * 3)
  np.testing.assert_array_equal(batch["positions"][0, n0:n0 + n1], np.arange(n1))
  np.testing.assert_array_equal(batch["targets"][0, :n0], seqs[0].targets)
  assert batch["input_mask"][0].sum() == n0 + n1 and not batch["input_mask"][1].any()
  assert batch["loss_mask"][0].sum() == sum(seqs[0].loss_mask) + sum(seqs[1].loss_mask)
  assert batch["loss_mask"].dtype == np.float32 and batch["inputs"].dtype == np.int32
