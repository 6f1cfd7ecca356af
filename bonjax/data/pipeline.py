"""Deterministic, resumable, process-sharded batch iterators over random-access sources.

A source is any sequence of feature dicts (``len``, ``source[i]``), such as ``bonjax.data.load``'s
ArrayRecord data sources. Each epoch visits the examples in a permutation drawn from
``(seed, epoch)``; global batch ``k`` takes the next ``batch_size`` of them, and process ``p`` of
``P`` keeps rows ``[p * batch_size / P, (p + 1) * batch_size / P)`` and reads only those. So the
global batches do not depend on the number of processes, and the whole iterator state is four
integers, the same on every process (``num_examples`` guards against resuming on other data)::

  {'seed': 0, 'epoch': 2, 'position': 384, 'num_examples': 20000}

``get_state()`` returns it (JSON-serializable, to save with a checkpoint) and ``set_state``
restores it: the restored iterator yields exactly the batches an uninterrupted one would have.
The process index and count default to ``jax.process_index()`` and ``jax.process_count()``.

Packed SFT batches hold a variable number of examples, so every process tokenizes the examples
of the whole global batch to agree on the packing, and keeps its own rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from bonjax.data import batching
from bonjax.data.tokenizer import Tokenizer

Example = Mapping[str, Any]
Reader = Callable[[np.ndarray], list[Example]]
# A batcher turns the rest of the epoch's order into one batch and says how many it consumed.
Batcher = Callable[[np.ndarray, Reader], tuple[dict[str, Any], int]]

_STATE_KEYS = ("seed", "epoch", "position", "num_examples")


class BatchIterator(Iterator[dict[str, Any]]):
  """Yields batches from ``source`` in a seeded per-epoch order; see the module docstring."""

  def __init__(self, source: Sequence[Example], batcher: Batcher, *, batch_size: int,
               seed: int = 0, shuffle: bool = True, num_epochs: int | None = None,
               drop_remainder: bool = True):
    if len(source) == 0:
      raise ValueError("The source is empty.")
    if drop_remainder and len(source) < batch_size:
      raise ValueError(f"batch_size={batch_size} exceeds the {len(source)} examples of the "
                       "source, so drop_remainder=True would yield no batch.")
    self._source = source
    self._batcher = batcher
    self._batch_size = batch_size
    self._shuffle = shuffle
    self._num_epochs = num_epochs
    self._drop_remainder = drop_remainder
    self._state = {"seed": int(seed), "epoch": 0, "position": 0, "num_examples": len(source)}
    self._cached_order: tuple[tuple[int, int], np.ndarray] | None = None

  def get_state(self) -> dict[str, int]:
    """The iterator's position: a small JSON-serializable dict."""
    return dict(self._state)

  def set_state(self, state: Mapping[str, int]) -> None:
    """Continues from a ``get_state()`` result (its seed included)."""
    if set(state) != set(_STATE_KEYS):
      raise KeyError(f"Iterator state needs exactly the keys {list(_STATE_KEYS)}, got "
                     f"{sorted(state)}.")
    if state["num_examples"] != len(self._source):
      raise ValueError(f"The state was saved for a source of {state['num_examples']} examples, "
                       f"but this source has {len(self._source)}: it cannot resume exactly.")
    if not 0 <= state["position"] <= len(self._source) or state["epoch"] < 0:
      raise ValueError(f"Invalid iterator state {dict(state)}.")
    self._state = {key: int(state[key]) for key in _STATE_KEYS}

  def _order(self, seed: int, epoch: int) -> np.ndarray:
    if self._cached_order is None or self._cached_order[0] != (seed, epoch):
      n = len(self._source)
      order = (np.random.default_rng([seed, epoch]).permutation(n) if self._shuffle
               else np.arange(n))
      self._cached_order = ((seed, epoch), order)
    return self._cached_order[1]

  def _read(self, indices: np.ndarray) -> list[Example]:
    keys = [int(i) for i in indices]
    if hasattr(self._source, "__getitems__"):  # One batched read from ArrayRecord sources.
      return list(self._source.__getitems__(keys))
    return [self._source[k] for k in keys]

  def __next__(self) -> dict[str, Any]:
    state = self._state
    while self._num_epochs is None or state["epoch"] < self._num_epochs:
      remaining = self._order(state["seed"], state["epoch"])[state["position"]:]
      if len(remaining) == 0 or (self._drop_remainder and len(remaining) < self._batch_size):
        state["epoch"] += 1
        state["position"] = 0
        continue
      batch, consumed = self._batcher(remaining, self._read)
      state["position"] += consumed
      return batch
    raise StopIteration


def _process_info(process_index: int | None, process_count: int | None,
                  batch_size: int) -> tuple[int, int]:
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} must lie in [0, {process_count}).")
  if batch_size % process_count:
    raise ValueError(f"The global batch_size={batch_size} must be divisible by the "
                     f"process_count={process_count}.")
  return process_index, process_count


def _local_rows(global_indices: np.ndarray, batch_size: int, process_index: int,
                process_count: int) -> tuple[np.ndarray, np.ndarray]:
  """This process's slice of a global batch, and which of its rows are real (not padding)."""
  per_process = batch_size // process_count
  local = global_indices[process_index * per_process:(process_index + 1) * per_process]
  valid = np.arange(per_process) < len(local)
  return local, valid


def prompt_batches(
    source: Sequence[Example],
    tokenizer: Tokenizer,
    *,
    batch_size: int,
    max_prompt_len: int,
    prompt_format: str = batching.FORMATS["bonjax_arith"].prompt,
    seed: int = 0,
    shuffle: bool = True,
    num_epochs: int | None = None,
    drop_remainder: bool = True,
    process_index: int | None = None,
    process_count: int | None = None,
) -> BatchIterator:
  """Batches of prompts to sample from (BoN training, evaluation).

  Each batch holds this process's ``b = batch_size / process_count`` rows:
  ``prompts`` int32 ``[b, max_prompt_len]`` (BOS first, right-padded, as ``sampling.generate``
  takes them), ``prompt_lengths`` int32 ``[b]``, ``valid`` bool ``[b]`` (False on rows that pad
  the last batch when ``drop_remainder=False``; they repeat a real example), ``index`` int64
  ``[b]`` (the source index) and ``metadata``: a list of ``b`` decoded example dicts for the
  verifiers (pop it before putting the arrays on devices).
  """
  process_index, process_count = _process_info(process_index, process_count, batch_size)

  def batcher(remaining: np.ndarray, read: Reader):
    global_indices = remaining[:batch_size]
    local, valid = _local_rows(global_indices, batch_size, process_index, process_count)
    # Padding rows repeat a real example so every row has metadata for the verifiers.
    local = np.concatenate([local, np.full(len(valid) - len(local), global_indices[0])])
    batch = batching.prompt_batch(read(local), tokenizer, max_prompt_len=max_prompt_len,
                                  prompt_format=prompt_format)
    batch.update(valid=valid, index=local.astype(np.int64))
    return batch, len(global_indices)

  return BatchIterator(source, batcher, batch_size=batch_size, seed=seed, shuffle=shuffle,
                       num_epochs=num_epochs, drop_remainder=drop_remainder)


def sft_batches(
    source: Sequence[Example],
    tokenizer: Tokenizer,
    *,
    batch_size: int,
    max_len: int,
    text_format: batching.TextFormat = batching.FORMATS["bonjax_arith"],
    packing: bool = False,
    seed: int = 0,
    shuffle: bool = True,
    num_epochs: int | None = None,
    drop_remainder: bool = True,
    process_index: int | None = None,
    process_count: int | None = None,
) -> BatchIterator:
  """Batches for supervised fine-tuning on ``prompt + target`` with the loss on the target.

  Each batch holds this process's ``b = batch_size / process_count`` rows of ``max_len``:
  ``inputs``, ``targets`` (next tokens), ``loss_mask``, ``positions``, ``input_mask`` and
  ``segment_ids`` as ``batching.sft_batch`` lays them out, and ``valid`` bool ``[b]`` (False on
  empty rows). Without packing a row holds one example (``segment_ids`` is 1 on it); with packing
  it holds as many whole examples as fit, so attention must also mask across ``segment_ids``.
  """
  process_index, process_count = _process_info(process_index, process_count, batch_size)
  per_process = batch_size // process_count

  def sequences(indices: np.ndarray, read: Reader) -> list[batching.SftSequence]:
    return batching.sft_sequences(read(indices), tokenizer, max_len=max_len,
                                  text_format=text_format)

  def unpacked(remaining: np.ndarray, read: Reader):
    global_indices = remaining[:batch_size]
    local, valid = _local_rows(global_indices, batch_size, process_index, process_count)
    rows = [[s] for s in sequences(local, read)] + [[]] * (per_process - len(local))
    return sft_arrays(rows, valid), len(global_indices)

  def packed(remaining: np.ndarray, read: Reader):
    # Tokenize the stream a batch's worth at a time (each example once) until the rows are full
    # or the epoch ends.
    candidates, count = [], 0
    while True:
      more = min(count + batch_size, len(remaining))
      candidates += sequences(remaining[count:more], read)
      count = more
      rows, placed = batching.pack(candidates, batch_size, max_len)
      if placed < count or count == len(remaining):
        break
    local_rows = rows[process_index * per_process:(process_index + 1) * per_process]
    valid = np.array([bool(row) for row in local_rows])
    return sft_arrays([[candidates[i] for i in row] for row in local_rows], valid), placed

  def sft_arrays(rows, valid):
    batch = batching.sft_batch(rows, max_len, tokenizer.pad_id)
    batch["valid"] = valid
    return batch

  return BatchIterator(source, packed if packing else unpacked, batch_size=batch_size, seed=seed,
                       shuffle=shuffle, num_epochs=num_epochs, drop_remainder=drop_remainder)
