"""Turning examples into fixed-shape numpy batches: prompt batches and (packed) SFT batches.

Pure functions of their inputs; ``bonjax.data.pipeline`` decides which examples go in which batch.

Prompt and target are tokenized separately and then concatenated, so that the prompt tokens a
model is fine-tuned on are exactly the tokens it is later prompted with.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bonjax.data.tokenizer import Tokenizer


@dataclasses.dataclass(frozen=True)
class TextFormat:
  """How an example becomes text: ``str.format`` templates over its features."""

  prompt: str
  target: str


# Default formats of the bonjax datasets. Answers of the math sets end in a line that the answer
# verifiers parse; HumanEval's target is the function body that completes the prompt.
FORMATS = {
    "bonjax_arith": TextFormat(prompt="{question}\n", target="{solution}"),
    "bonjax_strategies": TextFormat(prompt="{question}\n", target="{solution}"),
    "gsm8k": TextFormat(prompt="Question: {question}\nAnswer: ",
                        target="{solution}\nThe answer is {answer}."),
    "hendrycks_math": TextFormat(prompt="Problem: {problem}\nSolution: ", target="{solution}"),
    "humaneval": TextFormat(prompt="{prompt}", target="{canonical_solution}"),
}


def decode_example(example: Mapping[str, Any]) -> dict[str, Any]:
  """A TFDS example as plain Python: bytes become str, numpy scalars become numbers."""
  out = {}
  for key, value in example.items():
    if isinstance(value, bytes):
      value = value.decode("utf-8")
    elif isinstance(value, np.generic):
      value = value.item()
    out[key] = value
  return out


def format_text(template: str, example: Mapping[str, Any]) -> str:
  """Fills ``template`` with the example's features; a missing feature names the valid ones."""
  try:
    return template.format_map(example)
  except KeyError as e:
    raise KeyError(f"Format {template!r} uses feature {e.args[0]!r}, which the example lacks; "
                   f"it has {sorted(example)}.") from None


def prompt_batch(
    examples: Sequence[Mapping[str, Any]],
    tokenizer: Tokenizer,
    *,
    max_prompt_len: int,
    prompt_format: str,
) -> dict[str, Any]:
  """Right-padded prompts (BOS first; too long ones lose their first tokens).

  Returns:
    ``prompts`` int32 ``[B, max_prompt_len]``, ``prompt_lengths`` int32 ``[B]`` and
    ``metadata``: the decoded examples (with ``answer`` etc. for the verifiers).
  """
  metadata = [decode_example(ex) for ex in examples]
  prompts, lengths = tokenizer.encode([format_text(prompt_format, ex) for ex in metadata],
                                      max_len=max_prompt_len, truncate="left")
  return {"prompts": prompts, "prompt_lengths": lengths, "metadata": metadata}


@dataclasses.dataclass(frozen=True)
class SftSequence:
  """One SFT example as next-token pairs: ``inputs[t]`` predicts ``targets[t]``."""

  inputs: list[int]
  targets: list[int]
  loss_mask: list[bool]

  def __len__(self) -> int:
    return len(self.inputs)


def sft_sequences(
    examples: Sequence[Mapping[str, Any]],
    tokenizer: Tokenizer,
    *,
    max_len: int,
    text_format: TextFormat,
) -> list[SftSequence]:
  """``BOS prompt target EOS`` of each example, as at most ``max_len`` next-token pairs.

  The loss covers the target and EOS. Sequences longer than ``max_len + 1`` tokens lose their
  end (the loss then covers less, or nothing if the prompt fills the row).
  """
  decoded = [decode_example(ex) for ex in examples]
  prompts = tokenizer.tokenize([format_text(text_format.prompt, ex) for ex in decoded])
  targets = tokenizer.tokenize([format_text(text_format.target, ex) for ex in decoded])
  sequences = []
  for prompt, target in zip(prompts, targets):
    tokens = ([tokenizer.bos_id] + prompt + target + [tokenizer.eos_id])[:max_len + 1]
    is_target = ([False] * (1 + len(prompt)) + [True] * (len(target) + 1))[:len(tokens)]
    sequences.append(SftSequence(tokens[:-1], tokens[1:], is_target[1:]))
  return sequences


def pack(sequences: Sequence[SftSequence], num_rows: int, row_len: int) -> tuple[list[list[int]],
                                                                                 int]:
  """Greedily fills ``num_rows`` rows of ``row_len`` with a prefix of ``sequences``, in order.

  A sequence goes into the current row if it fits there, else into the next row. Returns the
  sequence ids of each row and how many sequences were placed (the rest wait for the next batch).
  """
  rows: list[list[int]] = [[] for _ in range(num_rows)]
  row, used = 0, 0
  for i, sequence in enumerate(sequences):
    if len(sequence) > row_len:
      raise ValueError(f"Sequence {i} has length {len(sequence)} > row_len={row_len}.")
    if used + len(sequence) > row_len:
      row, used = row + 1, 0
      if row == num_rows:
        return rows, i
    rows[row].append(i)
    used += len(sequence)
  return rows, len(sequences)


def sft_batch(rows: Sequence[Sequence[SftSequence]], row_len: int, pad_id: int) -> dict[str,
                                                                                     np.ndarray]:
  """Lays out rows of one or more sequences as ``[len(rows), row_len]`` arrays.

  Returns ``inputs``, ``targets`` (int32), ``loss_mask`` (float32), ``positions`` (int32,
  restarting at 0 in each sequence), ``input_mask`` (bool) and ``segment_ids`` (int32, 1, 2, ...
  per sequence of a row, 0 on padding). A packed row (several segments) needs attention that
  also masks across ``segment_ids``.
  """
  shape = (len(rows), row_len)
  batch = {"inputs": np.full(shape, pad_id, np.int32), "targets": np.full(shape, pad_id, np.int32),
           "loss_mask": np.zeros(shape, np.float32), "positions": np.zeros(shape, np.int32),
           "input_mask": np.zeros(shape, bool), "segment_ids": np.zeros(shape, np.int32)}
  for r, sequences in enumerate(rows):
    start = 0
    for segment, sequence in enumerate(sequences, start=1):
      span = slice(start, start + len(sequence))
      batch["inputs"][r, span] = sequence.inputs
      batch["targets"][r, span] = sequence.targets
      batch["loss_mask"][r, span] = sequence.loss_mask
      batch["positions"][r, span] = np.arange(len(sequence))
      batch["input_mask"][r, span] = True
      batch["segment_ids"][r, span] = segment
      start += len(sequence)
  return batch

