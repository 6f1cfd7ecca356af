"""Rollouts: M samples per prompt, decoded and scored, as the batch a policy-gradient step reads.

    prompt batch --generate (per chunk of prompts, dispatched at once)--> tokens [B, M, T]
      --decode (host)--> texts --verifier--> scores s [B, M]; --task reward--> rewards R [B, M]

Overlap: every chunk's generation is dispatched before any result is read (jax runs them in
order, asynchronously), so while the host decodes and verifies chunk c the device is already
decoding chunk c + 1. Verification runs on a persistent thread pool (`Scorer`), and the verifiers
keep their own worker pools. Given `on_chunk`, each chunk is handed over as soon as it is scored
(the training loop dispatches its share of the update: `bonjax.train.steps`), so the device
differentiates chunk c while the host still verifies chunk c + 1; without it, the last chunk's
verification leaves the device idle. This is exact: the samples of a prompt depend only on its
key, never on the chunking, and a chunk's weights only on its own prompts' samples.

Determinism: prompt b's key is `fold_in(step_key, index_b)` with `index_b` its position in the
dataset, so a rollout is a function of (seed, step, params) alone — the same on a resumed run, on
any number of processes and with any chunking — and the verifiers score deterministically.

Several processes: each holds its share of the prompts (`bonjax.data.prompt_batches`); a chunk is
sampled as one global batch, each process's rows on its own devices, and each process decodes,
scores and returns its own rows. Each chunk of the global batch must then split evenly over the
mesh's data-parallel shards.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from bonjax import data, objectives, sampling, sharding, verifiers

PyTree = Any


class Scorer:
  """Scores decoded completions with the verifier (s) and the task reward (R) on a thread pool.

  `reward` None means R = s; `verifier` None means s = R (an oracle verifier). Scores with NaN
  or inf raise a ValueError naming the verifier and the samples.
  """

  def __init__(self, verifier: verifiers.VerifierProtocol | None,
               reward: verifiers.VerifierProtocol | None, max_workers: int = 2):
    if verifier is None and reward is None:
      raise ValueError('a rollout needs a verifier or a task reward (or both)')
    self.verifier, self.reward = verifier, reward
    self._pool = concurrent.futures.ThreadPoolExecutor(max_workers, 'bonjax-scorer')

  def _score(self, prompts, completions, metadata) -> tuple[np.ndarray, np.ndarray, float]:
    start = time.perf_counter()
    out = {}
    for name, scorer in (('verifier', self.verifier), ('reward', self.reward)):
      if scorer is not None:
        label = f'the {name} {getattr(scorer, "name", type(scorer).__name__)!r}'
        out[name] = verifiers.check_scores(
            np.asarray(scorer.score(prompts, completions, metadata), np.float32), label)
    scores = out.get('verifier', out.get('reward'))
    return scores, out.get('reward', scores), time.perf_counter() - start

  def submit(self, prompts: Sequence[str], completions: Sequence[Sequence[str]],
             metadata: Sequence[dict[str, Any]]) -> concurrent.futures.Future:
    """Starts scoring; the future holds (scores [B, M], rewards [B, M], seconds)."""
    return self._pool.submit(self._score, list(prompts), [list(c) for c in completions],
                             list(metadata))

  def close(self) -> None:
    self._pool.shutdown(wait=True)
    for scorer in (self.verifier, self.reward):
      if hasattr(scorer, 'close'):
        scorer.close()


def streamed_chunks(rollout: Rollout | None, method: Any, *, batch_size: int, microbatches: int,
                    shards: int, processes: int = 1, updates_per_rollout: int = 1
                    ) -> tuple[int, str | None]:
  """How many chunks the update accumulates as they are scored (1: after the whole rollout),
  and, when the rollout's chunks cannot be streamed, a line saying why.

  Streaming is exact when each chunk holds microbatches / chunks of the microbatched update's
  microbatches, and each chunk's prompts split evenly over the batch shards and the processes.
  """
  chunks = rollout.chunks if rollout is not None and method.needs_rollouts else 1
  if chunks == 1 or method.needs_expert or updates_per_rollout > 1:
    return 1, None
  needs = []
  if microbatches % chunks:
    needs.append(f'train.microbatches a multiple of {chunks} (it is {microbatches})')
  if batch_size % chunks or (batch_size // chunks) % shards:
    needs.append(f'each chunk\'s prompts (batch_size / chunks = {batch_size / chunks:g}) a '
                 f'multiple of the {shards} batch shards')
  if (batch_size // processes) % chunks:
    needs.append(f'each process\'s {batch_size // processes} prompts a multiple of {chunks}')
  if needs:
    return 1, (f'Rollout.chunks = {chunks}: the update waits for the whole rollout; to overlap '
               f'it with the verification, make {" and ".join(needs)}')
  return chunks, None


def prompt_keys(step_key: jax.Array, index: np.ndarray) -> jax.Array:
  """One key per prompt from the step's key and the prompts' dataset indices [B]."""
  return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(step_key, jnp.asarray(index, jnp.uint32))


@dataclasses.dataclass(frozen=True)
class Rollout:
  """How a rollout samples.

  Attributes:
    num_samples: M, samples per prompt.
    max_new_tokens: T, the most tokens per sample (EOS included); longer ones are truncated.
    sampler: the sampling law, which the train step also differentiates.
    chunks: prompt chunks whose generation overlaps the verification of the previous one.
  """

  num_samples: int = 8
  max_new_tokens: int = 64
  sampler: sampling.Sampler = sampling.Temperature(1.0)
  chunks: int = 1

  def __post_init__(self):
    for name in ('num_samples', 'max_new_tokens', 'chunks'):
      value = getattr(self, name)
      if not isinstance(value, int) or value < 1:
        raise ValueError(f'Rollout.{name} must be a positive int, got {value!r}')

  def __call__(self, model: Any, params: PyTree, batch: Mapping[str, Any], *, step_key: jax.Array,
               tokenizer: data.Tokenizer, scorer: Scorer, prompt_format: str,
               mesh: Mesh | None = None, expert_format: str | None = None,
               on_chunk: Callable[[dict[str, np.ndarray]], Any] | None = None
               ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Samples, decodes and scores one prompt batch (a `bonjax.data.prompt_batches` batch).

    Returns the step's arrays (numpy, this process's rows: prompts, prompt_lengths, tokens,
    logprobs, lengths, scores, rewards, and with `expert_format` the reference solution as
    expert_tokens, expert_lengths, expert_scores) and host-side info (texts, timings:
    'device_idle' is the time the device had nothing to do while the host waited for scores).
    `on_chunk(arrays)`, if given, is called with each chunk's arrays (its rows of the above, but
    the expert's) in order as soon as they are scored, and returns the device work it dispatched
    (waited for before the idle time is counted) or None.
    """
    size = len(batch['prompts'])
    if mesh is None and jax.process_count() > 1:
      raise ValueError('a rollout on several processes needs the mesh its prompts are split over')
    keys = prompt_keys(step_key, batch['index'])
    num_chunks = min(self.chunks, size)
    bounds = [(c * size // num_chunks, (c + 1) * size // num_chunks) for c in range(num_chunks)]
    start = time.perf_counter()
    pending = [self._generate(model, params, batch['prompts'][lo:hi],
                              batch['prompt_lengths'][lo:hi], keys[lo:hi], tokenizer, mesh)
               for lo, hi in bounds]
    prompt_texts = [data.batching.format_text(prompt_format, m) for m in batch['metadata']]
    chunks, futures, wait_s = [], [], 0.0
    for (lo, hi), samples in zip(bounds, pending):
      waited = time.perf_counter()
      host = jax.tree.map(functools.partial(_host_rows, mesh=mesh), samples)  # waits for it
      wait_s += time.perf_counter() - waited
      completions = tokenizer.decode(host.tokens)
      futures.append(scorer.submit(prompt_texts[lo:hi], completions, batch['metadata'][lo:hi]))
      chunks.append((host, completions))
    sample_s = time.perf_counter() - start
    results, parts, idle_s, dispatched = [], [], 0.0, None
    for (lo, hi), (host, _), future in zip(bounds, chunks, futures):
      jax.block_until_ready(dispatched)  # the device's queue is empty from here
      waited = time.perf_counter()
      results.append(future.result())
      idle_s += time.perf_counter() - waited
      parts.append(_chunk_arrays(batch, lo, hi, host, results[-1]))
      if on_chunk is not None:
        dispatched = on_chunk(parts[-1])
    verify_wait_s = time.perf_counter() - start - sample_s
    cat = lambda xs: np.concatenate(xs, axis=0)
    arrays = {name: cat([part[name] for part in parts]) for name in parts[0]}
    info = {'completions': [c for _, cs in chunks for c in cs], 'prompt_texts': prompt_texts,
            'done': cat([h.done for h, _ in chunks]),
            'seconds': {'sampling': sample_s, 'verifying': sum(r[2] for r in results),
                        'verify_wait': verify_wait_s, 'device_idle': idle_s,
                        'sample_wait': wait_s}}
    if expert_format is not None:
      arrays.update(self._expert(batch, tokenizer, scorer, prompt_texts, expert_format))
    return arrays, info

  def _generate(self, model, params, prompts, prompt_lengths, keys, tokenizer, mesh
                ) -> sampling.Samples:
    """Starts sampling one chunk: this process's prompts, or on several processes the chunk of
    all processes (each sampling its own rows, on its own devices)."""
    if jax.process_count() > 1:
      name = f'a rollout chunk (the prompts / Rollout.chunks={self.chunks})'
      to_global = functools.partial(sharding.host_rows_to_global, mesh=mesh, name=name)
      prompts, prompt_lengths = to_global(prompts), to_global(prompt_lengths)
      keys = to_global(np.asarray(jax.random.key_data(keys)))
    return sampling.generate(
        model, params, prompts, prompt_lengths, num_samples=self.num_samples,
        max_new_tokens=self.max_new_tokens, rng=keys, sampler=self.sampler,
        eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id, mesh=mesh)

  def _expert(self, batch, tokenizer, scorer, prompt_texts, expert_format) -> dict[str, np.ndarray]:
    """The reference solutions as one extra 'completion' per prompt, scored by the verifier."""
    texts = [data.batching.format_text(expert_format, m) for m in batch['metadata']]
    tokens = [t[:self.max_new_tokens - 1] + [tokenizer.eos_id] for t in tokenizer.tokenize(texts)]
    padded, lengths = data.tokenizer.pad_rows(tokens, self.max_new_tokens, tokenizer.pad_id)
    scores, _, _ = scorer.submit(prompt_texts, [[t] for t in texts], batch['metadata']).result()
    return {'expert_tokens': padded[:, None], 'expert_lengths': lengths[:, None].astype(np.int32),
            'expert_scores': scores[:, 0]}


def _chunk_arrays(batch, lo, hi, host, result) -> dict[str, np.ndarray]:
  return {'prompts': np.asarray(batch['prompts'][lo:hi], np.int32),
          'prompt_lengths': np.asarray(batch['prompt_lengths'][lo:hi], np.int32),
          'tokens': host.tokens, 'logprobs': host.logprobs, 'lengths': host.lengths,
          'scores': result[0], 'rewards': result[1]}


def _host_rows(array: jax.Array, mesh: Mesh | None) -> np.ndarray:
  """This process's rows of a rollout array, on the host."""
  if jax.process_count() == 1:
    return np.asarray(array)
  return sharding.global_to_host_rows(array, mesh)


def rollout_metrics(arrays: Mapping[str, np.ndarray], info: Mapping[str, Any], ks: Sequence[int]
                    ) -> dict[str, float]:
  """Host metrics of one rollout: mean reward, pass@k and BoN@k (k <= M), group fractions,
  entropy and truncation, over the prompts of all processes (each process calls it with its
  own rows: on several processes it gathers them)."""
  per_sample = {'rewards': arrays['rewards'], 'scores': arrays['scores'],
                'lengths': arrays['lengths'], 'logprobs': arrays['logprobs'].sum(axis=-1),
                'done': info['done']}  # [B, M] each
  if jax.process_count() > 1:
    per_sample = multihost_utils.process_allgather(per_sample, tiled=True)
  rewards, scores, lengths = per_sample['rewards'], per_sample['scores'], per_sample['lengths']
  correct = rewards > 0.5
  tokens = np.maximum(lengths.sum(), 1)
  out = {'reward_mean': float(rewards.mean()), 'score_mean': float(scores.mean()),
         'all_correct_groups': float(correct.all(axis=1).mean()),
         'all_wrong_groups': float((~correct).all(axis=1).mean()),
         # -mean log pi(y_t) over sampled tokens: a Monte Carlo estimate of the per-token entropy.
         'entropy_per_token': float(-per_sample['logprobs'].sum() / tokens),
         'truncated_fraction': float((~per_sample['done']).mean()),
         'completion_length': float(lengths.mean())}
  ks = [k for k in ks if k <= rewards.shape[1]]
  pass_at = np.asarray(objectives.pass_at_k(jnp.asarray(correct), ks)).mean(axis=0)
  bon_at = np.asarray(objectives.bon_at_k(jnp.asarray(scores), jnp.asarray(rewards), ks)).mean(0)
  for k, p, b in zip(ks, pass_at, bon_at):
    out[f'pass@{k}'] = float(p)
    out[f'bon@{k}'] = float(b)
  return out
