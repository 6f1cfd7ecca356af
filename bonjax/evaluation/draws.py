"""M samples of a chunk of problems at every temperature of a grid, in one `generate` call.

    examples [C] --tile over the T grid--> prompts [T * C, P], temperatures [T * C] (per prompt)
      --sampling.generate (one program for the whole grid)--> tokens [T * C, M, L]
      --decode--> completions --verifier, task reward--> scores s, rewards R [T * C, M]

Keys: the samples of problem i at temperature t come from fold_in(fold_in(key(seed), i),
round(t * 1e6)), so they depend on neither the chunking, the other temperatures of the grid nor
a restart: a resumed evaluation, or one with another temperature added, draws the same samples.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from bonjax import data, sampling, sharding
from bonjax.train import rollout as rollout_lib
from bonjax.verifiers import answers as answers_lib

PyTree = Any


def temperature_code(temperature: float) -> int:
  """The integer a temperature's keys are folded with (micro-degrees: 0.7 -> 700000)."""
  return int(round(float(temperature) * 1e6))


def sample_keys(seed: int, indices: np.ndarray, temperatures: np.ndarray) -> jax.Array:
  """One key per (problem index, temperature) pair: indices and temperatures [R] -> keys [R]."""
  codes = np.array([temperature_code(t) for t in temperatures], np.uint32)
  base = jax.random.key(seed)
  per_problem = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(
      base, jnp.asarray(indices, jnp.uint32))
  return jax.vmap(jax.random.fold_in)(per_problem, jnp.asarray(codes))


def with_temperatures(sampler: sampling.Sampler, temperatures: np.ndarray) -> sampling.Sampler:
  """`sampler` with one temperature per prompt (its other parameters kept)."""
  if isinstance(sampler, sampling.ValidTokens):
    return sampler.replace(sampler=with_temperatures(sampler.sampler, temperatures))
  if not hasattr(sampler, 'temperature'):
    raise ValueError(f'{type(sampler).__name__} has no temperature to sweep; evaluate with '
                     f'Temperature, TopK, TopP or MinP')
  return sampler.replace(temperature=np.asarray(temperatures, np.float32))


@dataclasses.dataclass(frozen=True)
class Grid:
  """How a chunk is sampled: everything but the params and the problems.

  Attributes:
    model: the policy (a `bonjax.models.Transformer`).
    tokenizer: the run's tokenizer.
    num_samples: M, samples per problem and temperature.
    max_new_tokens: the most tokens per sample.
    max_prompt_len: prompts are left-truncated to this many tokens.
    prompt_format: the task's prompt template.
    sampler: the law whose temperature is swept (Temperature(1.0): plain softmax sampling).
    seed: the seed of every key.
    mesh: generation runs sharded on it (None: on the default device).
    rules: logical axis rules.
  """

  model: Any
  tokenizer: data.Tokenizer
  num_samples: int
  max_new_tokens: int
  max_prompt_len: int
  prompt_format: str
  sampler: sampling.Sampler = sampling.Temperature(1.0)
  seed: int = 0
  mesh: Mesh | None = None
  rules: sharding.LogicalRules = sharding.DEFAULT_RULES


@dataclasses.dataclass
class Pending:
  """A chunk whose generation is dispatched (device work in flight) but not yet read back."""

  samples: sampling.Samples
  metadata: list[dict[str, Any]]
  prompt_texts: list[str]
  temperatures: np.ndarray  # [R] the temperature of each row
  indices: np.ndarray  # [R] the dataset index of each row
  num_rows: int  # rows that are real (the rest pad the chunk to a fixed shape)


def dispatch(grid: Grid, params: PyTree, examples: Sequence[dict[str, Any]],
             indices: Sequence[int], temperatures: Sequence[float],
             pad_to: int | None = None) -> Pending:
  """Starts sampling `examples` (decoded dicts) at every temperature; returns at once.

  Rows are temperature-major: row t * C + c is example c at temperatures[t]. With `pad_to`, the
  rows are padded (repeating the last one) to pad_to * len(temperatures), so that every chunk of
  an evaluation has the shape of the first and reuses its compiled program.
  """
  examples, indices = list(examples), np.asarray(indices, np.int64)
  size = max(pad_to or 0, len(examples))
  examples = examples + [examples[-1]] * (size - len(examples))
  indices = np.concatenate([indices, np.repeat(indices[-1:], size - len(indices))])
  batch = data.batching.prompt_batch(examples, grid.tokenizer, max_prompt_len=grid.max_prompt_len,
                                     prompt_format=grid.prompt_format)
  num_t = len(temperatures)
  row_temperatures = np.repeat(np.asarray(temperatures, np.float64), size)
  row_indices = np.tile(indices, num_t)
  sampler = with_temperatures(grid.sampler, row_temperatures)
  if grid.tokenizer.vocab_size < grid.model.config.vocab_size:
    # A padded embedding table: never sample an id the tokenizer cannot decode.
    sampler = sampling.ValidTokens(sampler, grid.tokenizer.vocab_size)
  samples = sampling.generate(
      grid.model, params, np.tile(batch['prompts'], (num_t, 1)),
      np.tile(batch['prompt_lengths'], num_t), num_samples=grid.num_samples,
      max_new_tokens=grid.max_new_tokens,
      rng=sample_keys(grid.seed, row_indices, row_temperatures),
      sampler=sampler, eos_id=grid.tokenizer.eos_id,
      pad_id=grid.tokenizer.pad_id, mesh=grid.mesh, rules=grid.rules)
  texts = [data.batching.format_text(grid.prompt_format, m) for m in batch['metadata']]
  return Pending(samples=samples, metadata=batch['metadata'] * num_t, prompt_texts=texts * num_t,
                 temperatures=row_temperatures, indices=row_indices, num_rows=size)


def collect(grid: Grid, pending: Pending, scorer: rollout_lib.Scorer | None,
            num_real: int) -> list[dict[str, Any]]:
  """Waits for a dispatched chunk, decodes and scores it: one record per (temperature, problem).

  Each record: 'index', 'temperature', and per sample [M] 'completions', 'scores', 'rewards',
  'lengths', 'truncated' (no EOS within max_new_tokens) and 'answers' (the final answer each
  completion states, or None). Only the first `num_real` problems of each temperature are kept.
  Without a scorer, 'scores' and 'rewards' are None.
  """
  tokens = np.asarray(pending.samples.tokens)
  lengths = np.asarray(pending.samples.lengths)
  done = np.asarray(pending.samples.done)
  keep = np.concatenate([np.arange(num_real) + t * pending.num_rows
                         for t in range(len(tokens) // pending.num_rows)])
  completions = grid.tokenizer.decode(tokens[keep])
  scores = rewards = None
  if scorer is not None:
    scores, rewards, _ = scorer.submit([pending.prompt_texts[i] for i in keep], completions,
                                       [pending.metadata[i] for i in keep]).result()
  records = []
  for row, i in enumerate(keep):
    records.append({
        'index': int(pending.indices[i]), 'temperature': float(pending.temperatures[i]),
        'completions': completions[row],
        'scores': None if scores is None else scores[row].tolist(),
        'rewards': None if rewards is None else rewards[row].tolist(),
        'lengths': lengths[i].tolist(),
        'truncated': (~done[i]).tolist(),
        'answers': [answers_lib.extract_answer(c) for c in completions[row]]})
  return records


def sample(grid: Grid, params: PyTree, examples: Sequence[dict[str, Any]],
           temperatures: Sequence[float], scorer: rollout_lib.Scorer | None,
           batch_size: int = 16) -> list[dict[str, Any]]:
  """Samples every example at every temperature; one record per (temperature, example).

  Without a scorer the records' 'scores' and 'rewards' are None.
  """
  records = []
  for lo in range(0, len(examples), batch_size):
    hi = min(lo + batch_size, len(examples))
    pending = dispatch(grid, params, examples[lo:hi], range(lo, hi), temperatures,
                       pad_to=min(batch_size, len(examples)))
    records += collect(grid, pending, scorer, hi - lo)
  return records


def read_prompts(path: str, prompt_format: str) -> tuple[list[dict[str, Any]], str]:
  """The examples of a JSONL prompt file and the format that turns them into prompts.

  Lines are examples of the task (filling `prompt_format`), or {"prompt": text} used as is.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f'no prompt file {path!r}')
  with open(path, encoding='utf-8') as f:
    try:
      examples = [json.loads(line) for line in f if line.strip()]
    except json.JSONDecodeError as e:
      raise ValueError(f'{path} is not JSONL (one JSON object per line): {e}') from None
  if not examples or not all(isinstance(e, dict) for e in examples):
    raise ValueError(f'{path} must hold one JSON object per line, and at least one')
  for template in (prompt_format, '{prompt}'):
    try:
      for example in examples:
        data.batching.format_text(template, example)
      return examples, template
    except KeyError:
      continue
  raise ValueError(f'the lines of {path} neither fill the task\'s prompt format '
                   f'{prompt_format!r} nor have a "prompt" field (the first has '
                   f'{sorted(examples[0])})')


def write_samples(path: str, records: Sequence[dict[str, Any]],
                  examples: Sequence[dict[str, Any]], prompt_format: str) -> None:
  """One JSON line per sample: prompt index and text, temperature, completion, score, reward."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path + '.tmp', 'w', encoding='utf-8') as f:
    for record in records:
      prompt = data.batching.format_text(prompt_format, examples[record['index']])
      for j, completion in enumerate(record['completions']):
        line = {'prompt_index': record['index'], 'sample': j, 'temperature': record['temperature'],
                'prompt': prompt, 'completion': completion,
                'score': None if record['scores'] is None else record['scores'][j],
                'reward': None if record['rewards'] is None else record['rewards'][j],
                'length': record['lengths'][j], 'truncated': record['truncated'][j]}
        f.write(json.dumps(line) + '\n')
  os.replace(path + '.tmp', path)
