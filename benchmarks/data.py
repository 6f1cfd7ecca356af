"""Batches/s of bonjax.data.pipeline against grain pipelines over the same ArrayRecord source.

Generates a bonjax_arith dataset (TFDS ArrayRecord files) and a sentencepiece tokenizer, then
times prompt batches (batch 64, max_prompt_len 64) and packed SFT batches (batch 32, max_len 128)
from our ``BatchIterator`` (the baseline) and from the closest grain pipelines: ``MapDataset``
over the global batches of a per-epoch shuffle (the same process sharding as ours), with 0 and
``--workers`` worker processes (``mp_prefetch``), and for prompts also grain's ``DataLoader``
with an ``IndexSampler`` and ``ShardOptions``. Every grain pipeline calls the same
``bonjax.data.batching`` functions as ours, so the difference is the machinery around them
(the DataLoader reads records one ``__getitem__`` at a time; ours and the MapDataset pipelines
make one batched ``__getitems__`` read per batch).

Each row reports the time to the first batch (worker start-up included), the steady batches/s
(the fastest of ``--rounds`` rounds of ``--batches`` batches) and its ratio to ours measured in
the same run, the median cost of
``get_state()``, the size of the state as JSON, the time to restore (a fresh iterator, set_state,
first batch) and whether the restored iterator yields exactly the batches of an uninterrupted one.

    python benchmarks/data.py [--num_train 4000] [--batches 40] [--rounds 3] [--workers 2]
"""

import argparse
import dataclasses
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from absl import flags

try:
  import grain
except ImportError as e:  # Not a bonjax dependency: only this comparison needs it.
  raise SystemExit("benchmarks/data.py compares against grain: pip install grain") from e

from bonjax import data
from bonjax.data import batching, pipeline

PROMPT_BATCH, MAX_PROMPT_LEN = 64, 64
SFT_BATCH, MAX_LEN = 32, 128
SEED = 0
FORMAT = batching.FORMATS["bonjax_arith"]


@dataclasses.dataclass(frozen=True)
class _LocalPrompts:
  """Global batch of source indices -> this process's prompt batch (what prompt_batches yields)."""

  source: Sequence[Any]
  tokenizer: data.Tokenizer
  process_index: int = 0
  process_count: int = 1

  def __call__(self, global_indices: np.ndarray) -> dict[str, Any]:
    per_process = len(global_indices) // self.process_count
    local = global_indices[self.process_index * per_process:(self.process_index + 1) * per_process]
    batch = batching.prompt_batch(self.source.__getitems__([int(i) for i in local]),
                                  self.tokenizer, max_prompt_len=MAX_PROMPT_LEN,
                                  prompt_format=FORMAT.prompt)
    batch.update(valid=np.ones(len(local), bool), index=local.astype(np.int64))
    return batch


@dataclasses.dataclass(frozen=True)
class _Sequences:
  """A chunk of source indices -> their SFT sequences, tokenized in one call."""

  source: Sequence[Any]
  tokenizer: data.Tokenizer

  def __call__(self, indices: np.ndarray) -> list[batching.SftSequence]:
    return batching.sft_sequences(self.source.__getitems__([int(i) for i in indices]),
                                  self.tokenizer, max_len=MAX_LEN, text_format=FORMAT)


class _PackedSft(grain.IterDataset):
  """Packs a stream of sequence chunks with ``batching.pack`` into global batches of rows.

  Like ``sft_batches(packing=True)``, every process packs the global stream and keeps its rows.
  """

  def __init__(self, parent: grain.IterDataset, pad_id: int, process_index: int = 0,
               process_count: int = 1):
    super().__init__(parent)
    self._args = (pad_id, process_index, process_count)

  def __iter__(self) -> grain.DatasetIterator:
    return _PackedSftIterator(self._parent.__iter__(), *self._args)


class _PackedSftIterator(grain.DatasetIterator):
  """State: the parent's state before the oldest chunk with unplaced sequences, and how many of
  that chunk's sequences are already placed; restoring re-reads that chunk, so resume is exact."""

  def __init__(self, parent: grain.DatasetIterator, pad_id: int, process_index: int,
               process_count: int):
    super().__init__(parent)
    self._pad_id, self._process_index, self._process_count = pad_id, process_index, process_count
    self._chunks: list[tuple[Any, list[batching.SftSequence]]] = []  # (state before, sequences)
    self._skip = 0

  def _pending(self) -> list[batching.SftSequence]:
    chunks = [chunk for _, chunk in self._chunks]
    return chunks[0][self._skip:] + [s for chunk in chunks[1:] for s in chunk] if chunks else []

  def __next__(self) -> dict[str, np.ndarray]:
    # More tokens than the batch holds guarantees that packing stops on a sequence that waits.
    while sum(len(s) for s in self._pending()) <= SFT_BATCH * MAX_LEN:
      state = self._parent.get_state()
      self._chunks.append((state, next(self._parent)))
    sequences = self._pending()
    rows, placed = batching.pack(sequences, SFT_BATCH, MAX_LEN)
    per_process = SFT_BATCH // self._process_count
    local_rows = rows[self._process_index * per_process:(self._process_index + 1) * per_process]
    batch = batching.sft_batch([[sequences[i] for i in row] for row in local_rows], MAX_LEN,
                               self._pad_id)
    batch["valid"] = np.array([bool(row) for row in local_rows])
    placed += self._skip
    while self._chunks and placed >= len(self._chunks[0][1]):
      placed -= len(self._chunks.pop(0)[1])
    self._skip = placed
    return batch

  def get_state(self) -> dict[str, Any]:
    parent = self._chunks[0][0] if self._chunks else self._parent.get_state()
    return {"parent": parent, "skip": self._skip}

  def set_state(self, state: dict[str, Any]) -> None:
    self._parent.set_state(state["parent"])
    self._chunks, self._skip = [], state["skip"]


def _global_index_batches(num_examples: int, batch_size: int) -> grain.MapDataset:
  # shuffle -> batch -> repeat: a fresh permutation each epoch, the remainder of each dropped.
  return (grain.MapDataset.range(num_examples).shuffle(seed=SEED)
          .batch(batch_size, drop_remainder=True).repeat())


def _with_workers(dataset: grain.IterDataset, workers: int) -> grain.IterDataset:
  if workers == 0:
    return dataset
  return dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))


def grain_prompts(source, tokenizer, workers: int) -> grain.IterDataset:
  dataset = _global_index_batches(len(source), PROMPT_BATCH).map(_LocalPrompts(source, tokenizer))
  # num_threads=0: the work is GIL-bound Python, so read threads only contend with the consumer.
  return _with_workers(dataset.to_iter_dataset(grain.ReadOptions(num_threads=0)), workers)


def grain_loader_prompts(source, tokenizer, workers: int) -> grain.DataLoader:
  sampler = grain.samplers.IndexSampler(
      num_records=len(source), shuffle=True, seed=SEED, num_epochs=None,
      shard_options=grain.sharding.ShardOptions(shard_index=0, shard_count=1,
                                                drop_remainder=True))
  to_batch = functools.partial(batching.prompt_batch, tokenizer=tokenizer,
                               max_prompt_len=MAX_PROMPT_LEN, prompt_format=FORMAT.prompt)
  return grain.DataLoader(
      data_source=source, sampler=sampler, worker_count=workers,
      operations=[grain.transforms.Batch(PROMPT_BATCH, drop_remainder=True, batch_fn=to_batch)])


def grain_packed_sft(source, tokenizer, workers: int) -> grain.IterDataset:
  # Chunks of one batch's worth of examples: sentencepiece encodes a list far faster than one
  # string at a time.
  chunks = (grain.MapDataset.range(len(source)).shuffle(seed=SEED).repeat()
            .batch(SFT_BATCH).map(_Sequences(source, tokenizer)))
  packed = _PackedSft(chunks.to_iter_dataset(grain.ReadOptions(num_threads=0)), tokenizer.pad_id)
  return _with_workers(packed, workers)


def _state_json(state: Any) -> str:
  return state.decode() if isinstance(state, bytes) else json.dumps(state)


def _equal(a: dict[str, Any], b: dict[str, Any]) -> bool:
  return a.keys() == b.keys() and all(
      a[k] == b[k] if k == "metadata" else np.array_equal(a[k], b[k]) for k in a)


def _close(iterator: Any) -> None:
  if hasattr(iterator, "close"):
    iterator.close()


def measure(make: Callable[[], Any], num_batches: int, rounds: int) -> dict[str, Any]:
  """Times one pipeline; ``make()`` returns a fresh iterator (with get_state / set_state)."""
  iterator = make()
  start = time.perf_counter()
  next(iterator)
  first = time.perf_counter() - start
  rates = []
  for _ in range(rounds):  # The fastest round: a busy moment of a shared machine inflates none.
    start = time.perf_counter()
    for _ in range(num_batches):
      next(iterator)
    rates.append(num_batches / (time.perf_counter() - start))
  state_times = []
  for _ in range(50):
    start = time.perf_counter()
    state = iterator.get_state()
    state_times.append(time.perf_counter() - start)
  state_text = _state_json(state)
  expected = [next(iterator) for _ in range(3)]
  _close(iterator)

  resumed = make()
  start = time.perf_counter()
  resumed.set_state(state if isinstance(state, bytes) else json.loads(state_text))
  actual = [next(resumed)]
  restore = time.perf_counter() - start
  actual += [next(resumed) for _ in range(2)]
  _close(resumed)
  return {"first_s": first, "rate": max(rates),
          "get_state_us": 1e6 * statistics.median(state_times),
          "state_bytes": len(state_text.encode()), "restore_s": restore,
          "exact": all(_equal(a, e) for a, e in zip(actual, expected))}


def _prepare(data_dir: str, num_train: int) -> tuple[Sequence[Any], data.Tokenizer]:
  config = data.ArithConfig(name=f"bench_{num_train}", num_train=num_train, num_test=16)
  source = data.load("bonjax_arith", "train", data_dir, config=config)
  examples = [batching.decode_example(source[i]) for i in range(min(len(source), 2000))]
  tokenizer = data.Tokenizer.train((e[k] for e in examples for k in ("question", "solution")),
                                   vocab_size=512)
  return source, tokenizer


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num_train", type=int, default=4000)
  parser.add_argument("--batches", type=int, default=40, help="batches per timed round")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--workers", type=int, default=2)
  parser.add_argument("--data_dir", default=None, help="default: a temporary directory")
  args = parser.parse_args()
  flags.FLAGS(sys.argv[:1])  # grain's worker processes read absl flags, which must be parsed.

  with tempfile.TemporaryDirectory() as tmp:
    source, tok = _prepare(args.data_dir or os.path.join(tmp, "data"), args.num_train)
    ours_prompts = functools.partial(
        pipeline.prompt_batches, source, tok, batch_size=PROMPT_BATCH,
        max_prompt_len=MAX_PROMPT_LEN, seed=SEED, process_index=0, process_count=1)
    ours_sft = functools.partial(
        pipeline.sft_batches, source, tok, batch_size=SFT_BATCH, max_len=MAX_LEN, packing=True,
        seed=SEED, process_index=0, process_count=1)

    def grain_iter(build, workers):
      return lambda: iter(build(source, tok, workers))

    groups = {
        f"prompt batches [{PROMPT_BATCH}, {MAX_PROMPT_LEN}]": {
            "ours BatchIterator": ours_prompts,
            "grain MapDataset, 0 workers": grain_iter(grain_prompts, 0),
            f"grain MapDataset, {args.workers} workers": grain_iter(grain_prompts, args.workers),
            "grain DataLoader, 0 workers": grain_iter(grain_loader_prompts, 0),
            f"grain DataLoader, {args.workers} workers": grain_iter(grain_loader_prompts,
                                                                   args.workers),
        },
        f"packed SFT batches [{SFT_BATCH}, {MAX_LEN}]": {
            "ours BatchIterator": ours_sft,
            "grain MapDataset+pack, 0 workers": grain_iter(grain_packed_sft, 0),
            f"grain MapDataset+pack, {args.workers} workers": grain_iter(grain_packed_sft,
                                                                        args.workers),
        },
    }
    print(f"grain {grain.__version__}; bonjax_arith train: {len(source)} examples, "
          f"{os.cpu_count()} CPUs; batch/s: fastest of {args.rounds} rounds of {args.batches} "
          "batches after the first")
    for title, candidates in groups.items():
      print(f"\n{title}")
      print(f"{'pipeline':34s} {'first s':>8s} {'batch/s':>8s} {'x ours':>7s} {'ms/batch':>9s} "
            f"{'get_state':>10s} {'state B':>8s} {'restore s':>9s}  exact resume")
      baseline = None
      for name, make in candidates.items():
        r = measure(make, args.batches, args.rounds)
        baseline = baseline or r["rate"]
        print(f"{name:34s} {r['first_s']:8.3f} {r['rate']:8.1f} {r['rate'] / baseline:7.2f} "
              f"{1e3 / r['rate']:9.1f} {r['get_state_us']:8.1f}us {r['state_bytes']:8d} "
              f"{r['restore_s']:9.3f}  {'yes' if r['exact'] else 'NO'}")


if __name__ == "__main__":
  main()
