"""Training the learned verifier: a reward model fit with binary cross-entropy on graded samples.

    policy --sampling.generate--> completions --binary verifier--> (prompt, completion, correct)
      --split by prompt--> train / held-out --adamw on BCE(logit, correct)--> reward model
      --held-out AUC--> metrics.json;   params --Checkpointer--> <workdir>/checkpoints

The update is the package's one train step (`bonjax.train.steps`) with the `RewardBce` method,
on a `TrainState` made by `bonjax.train.state`, with `bonjax.train.optimizer`. What stays here is
what is particular to graded pairs: encoding them, an endless shuffled stream of their indices,
the held-out AUC, and the run directory `load_verifier` reads.

A run directory holds everything `load_verifier` needs: ``checkpoints/`` (the parameters, and the
gin config of the run), ``tokenizer.model`` and ``reward_model.json`` (the model config, max_len
and the final metrics).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Sequence
from typing import Any

from absl import logging
import gin
import jax
import numpy as np
import optax

from bonjax import data, models, sampling, sharding
from bonjax import verifiers as verifiers_lib
from bonjax.train import methods as methods_lib
from bonjax.train import state as state_lib
from bonjax.train import steps as steps_lib
from bonjax.train.checkpoint import Checkpointer
from bonjax.train.optimizers import optimizer as make_optimizer
from bonjax.verifiers import learned

PyTree = Any

CHECKPOINT_DIR = 'checkpoints'
TOKENIZER_FILE = 'tokenizer.model'
RUN_INFO_FILE = 'reward_model.json'


@dataclasses.dataclass(frozen=True)
class Triple:
  """One graded sample: the prompt text, the completion text and whether it is correct."""

  prompt: str
  completion: str
  correct: bool


def read_triples(path: str | os.PathLike[str]) -> list[Triple]:
  """Reads triples from a JSON-lines file of ``{"prompt", "completion", "correct"}`` objects."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'triples file not found: {path!r} (expected JSON lines with keys '
                            '"prompt", "completion" and "correct")')
  triples = []
  with open(path, encoding='utf-8') as f:
    for line_number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f'{path}:{line_number} is not a JSON object: {e}') from None
      missing = [k for k in ('prompt', 'completion', 'correct')
                 if not isinstance(record, dict) or k not in record]
      if missing:
        raise ValueError(f'{path}:{line_number} has no {missing} key(s); each line needs '
                         '"prompt", "completion" and "correct"')
      triples.append(Triple(record['prompt'], record['completion'], bool(record['correct'])))
  return triples


def write_triples(path: str | os.PathLike[str], triples: Sequence[Triple]) -> None:
  """Writes triples as JSON lines (what `read_triples` reads)."""
  with open(path, 'w', encoding='utf-8') as f:
    for t in triples:
      f.write(json.dumps(dataclasses.asdict(t)) + '\n')


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
  """Area under the ROC curve: P(score of a positive > score of a negative), ties counting 1/2.

  Exact, via the Mann-Whitney U statistic with mid-ranks for tied scores, in O(K log K).
  """
  scores = np.asarray(scores, np.float64).ravel()
  labels = np.asarray(labels).ravel()
  if scores.shape != labels.shape:
    raise ValueError(f'scores and labels must have the same size, got {scores.size} and '
                     f'{labels.size}')
  labels = labels.astype(bool)
  num_pos = int(labels.sum())
  num_neg = labels.size - num_pos
  if num_pos == 0 or num_neg == 0:
    raise ValueError(f'AUC needs at least one positive and one negative, got {num_pos} '
                     f'positives and {num_neg} negatives')
  _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
  # 1-based mid-rank of each distinct score: the mean of the ranks its tied copies occupy.
  mid_ranks = np.cumsum(counts) - (counts - 1) / 2.0
  rank_sum = mid_ranks[inverse][labels].sum()
  return float((rank_sum - num_pos * (num_pos + 1) / 2.0) / (num_pos * num_neg))


def split_by_prompt(triples: Sequence[Triple], eval_fraction: float,
                    seed: int) -> tuple[list[Triple], list[Triple]]:
  """Train and held-out triples; all samples of one prompt fall on the same side."""
  if not 0.0 < eval_fraction < 1.0:
    raise ValueError(f'eval_fraction must lie in (0, 1), got {eval_fraction}')
  prompts = sorted({t.prompt for t in triples})
  if len(prompts) < 2:
    raise ValueError(f'need triples from at least 2 distinct prompts to hold some out, got '
                     f'{len(prompts)}')
  order = np.random.default_rng(seed).permutation(len(prompts))
  num_eval = min(max(1, round(eval_fraction * len(prompts))), len(prompts) - 1)
  held_out = {prompts[i] for i in order[:num_eval]}
  return ([t for t in triples if t.prompt not in held_out],
          [t for t in triples if t.prompt in held_out])


def sample_triples(model: models.Transformer, params: PyTree, tokenizer: data.Tokenizer,
                   examples: Sequence[dict[str, Any]], verifier: verifiers_lib.VerifierProtocol,
                   *, rng: jax.Array, num_samples: int, max_new_tokens: int, max_prompt_len: int,
                   prompt_format: str, batch_size: int,
                   sampler: sampling.Sampler = sampling.Temperature(1.0)) -> list[Triple]:
  """Samples a policy on `examples` and grades each completion with a binary `verifier`.

  A completion is correct when its score exceeds 0.5. Returns ``len(examples) * num_samples``
  triples, prompt by prompt.
  """
  triples = []
  for start in range(0, len(examples), batch_size):
    chunk = examples[start:start + batch_size]
    batch = data.batching.prompt_batch(chunk, tokenizer, max_prompt_len=max_prompt_len,
                                       prompt_format=prompt_format)
    samples = sampling.generate(
        model, params, batch['prompts'], batch['prompt_lengths'], num_samples=num_samples,
        max_new_tokens=max_new_tokens, rng=jax.random.fold_in(rng, start), sampler=sampler,
        eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id)
    completions = tokenizer.decode(np.asarray(samples.tokens))
    prompts = [data.batching.format_text(prompt_format, m) for m in batch['metadata']]
    scores = verifier.score(prompts, completions, batch['metadata'])
    triples += [Triple(p, c, bool(s > 0.5))
                for p, cs, ss in zip(prompts, completions, scores) for c, s in zip(cs, ss)]
  return triples


def _model_config(model: str | models.Transformer,
                  tokenizer: data.Tokenizer) -> models.TransformerConfig:
  """A preset's config with the tokenizer's vocabulary, or a given model's own config."""
  if isinstance(model, str):
    return dataclasses.replace(models.get_config(model), vocab_size=tokenizer.vocab_size)
  if model.config.vocab_size != tokenizer.vocab_size:
    raise ValueError(f'the model has a vocabulary of {model.config.vocab_size} tokens but the '
                     f'tokenizer has {tokenizer.vocab_size}')
  return model.config


def policy_triples(checkpoint_dir: str, tokenizer_path: str, *,
                   model: str | models.Transformer = 'small',
                   dataset: str = 'bonjax_arith', split: str = 'train',
                   data_dir: str | None = None,
                   builder_config: str | data.StrategiesConfig | data.ArithConfig | None = None,
                   num_prompts: int = 256, num_samples: int = 8, temperature: float = 1.0,
                   max_new_tokens: int = 128, max_prompt_len: int = 128, batch_size: int = 32,
                   verifier: str = 'answer_match', seed: int = 0) -> list[Triple]:
  """Triples from the latest policy checkpoint in `checkpoint_dir`, sampled on a TFDS dataset.

  The policy is `model` (or a `bonjax.models.Transformer` of that preset, its vocabulary sized to
  the tokenizer) whose parameters the `Checkpointer` saved; its prompts use the dataset's default
  format (`bonjax.data.FORMATS`).
  """
  tokenizer = data.Tokenizer.load(tokenizer_path)
  policy = models.Transformer(_model_config(model, tokenizer))
  params = restore_params(checkpoint_dir, models.abstract_params(policy))
  source = data.load(dataset, split, data_dir, config=builder_config)
  examples = [source[i] for i in range(min(num_prompts, len(source)))]
  return sample_triples(
      policy, params, tokenizer, examples, verifiers_lib.get(verifier),
      rng=jax.random.key(seed), num_samples=num_samples, max_new_tokens=max_new_tokens,
      max_prompt_len=max_prompt_len, prompt_format=data.FORMATS[dataset].prompt,
      batch_size=batch_size, sampler=sampling.Temperature(temperature))


def _encode(tokenizer: data.Tokenizer, triples: Sequence[Triple],
            max_len: int) -> dict[str, np.ndarray]:
  tokens, lengths = learned.encode_pairs(tokenizer, [t.prompt for t in triples],
                                         [t.completion for t in triples], max_len)
  return {'tokens': tokens, 'lengths': lengths,
          'labels': np.array([t.correct for t in triples], np.float32)}


def _index_stream(size: int, batch_size: int, rng: np.random.Generator):
  """Endless batches of indices: epoch after epoch, each a fresh permutation."""
  buffer = np.zeros(0, np.int64)
  while True:
    while len(buffer) < batch_size:
      buffer = np.concatenate([buffer, rng.permutation(size)])
    yield buffer[:batch_size]
    buffer = buffer[batch_size:]


def evaluate(verifier: learned.LearnedVerifier, triples: Sequence[Triple]) -> dict[str, float]:
  """Held-out metrics: AUC (NaN if one class), BCE loss, accuracy at logit 0, fraction correct."""
  logits = verifier.score_pairs([t.prompt for t in triples], [t.completion for t in triples])
  labels = np.array([t.correct for t in triples], np.float32)
  loss = optax.sigmoid_binary_cross_entropy(logits, labels).mean()
  # A held-out set of one class (e.g. a policy that solved every problem) has no AUC.
  one_class = labels.min() == labels.max()
  return {'auc': float('nan') if one_class else auc(logits, labels), 'loss': float(loss),
          'accuracy': float(np.mean((logits > 0) == labels.astype(bool))),
          'positive_fraction': float(labels.mean())}


def train_reward_model(workdir: str, triples: Sequence[Triple], tokenizer_path: str, *,
                       model: str | models.Transformer = 'tiny', max_len: int = 128,
                       batch_size: int = 32,
                       num_steps: int = 500, learning_rate: float = 1e-3,
                       warmup_steps: int = 50, weight_decay: float = 0.01,
                       eval_fraction: float = 0.2, eval_every: int = 0,
                       init_from: str | None = None, mesh: str | None = None,
                       seed: int = 0) -> dict[str, float]:
  """Trains a reward model on `triples` and saves it in `workdir`; returns held-out metrics.

  Args:
    workdir: the run directory (created); `load_verifier(workdir)` reads it back.
    triples: the graded samples (e.g. `@policy_triples()` or `@read_triples()` in gin).
    tokenizer_path: the sentencepiece model the texts are tokenized with (the policy's).
    model: the trunk: a `bonjax.models` preset (its vocabulary sized to the tokenizer) or a
      `Transformer` (e.g. the policy's own, to initialize from its checkpoint).
    max_len: tokens per (prompt, completion) pair, BOS and EOS included.
    batch_size: pairs per training step.
    num_steps: optimizer steps.
    learning_rate: peak adamw learning rate (linear warm-up, then cosine decay to 0).
    warmup_steps: steps of linear warm-up.
    weight_decay: adamw weight decay.
    eval_fraction: fraction of the prompts held out (all samples of a prompt on one side).
    eval_every: also evaluate every this many steps (0: only at the end).
    init_from: a policy checkpoint directory to initialize the trunk from (None: random).
    mesh: a mesh spec over all devices, e.g. 'fsdp:-1' (`bonjax.sharding.make_mesh`); the batch
      size must then be a multiple of its data-parallel shards. None: one device.
    seed: seeds the split, the initialization and the batch order.

  Returns:
    The final held-out metrics (`evaluate`) with 'step' and 'train_loss'.
  """
  if num_steps < 1 or batch_size < 1:
    raise ValueError(f'num_steps and batch_size must be positive, got {num_steps} and '
                     f'{batch_size}')
  tokenizer = data.Tokenizer.load(tokenizer_path)
  config = _model_config(model, tokenizer)
  train_triples, eval_triples = split_by_prompt(triples, eval_fraction, seed)
  train_data = _encode(tokenizer, train_triples, max_len)

  model = learned.RewardModel(config)
  device_mesh = (sharding.make_mesh(mesh) if mesh is not None
                 else sharding.make_mesh('data:1', jax.devices()[:1]))
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, learning_rate, min(warmup_steps, num_steps - 1), num_steps)
  tx = make_optimizer('adamw', schedule, clip_norm=1.0, weight_decay=weight_decay)
  params = None  # fresh: initialized on the mesh, already sharded
  if init_from is not None:
    params = learned.init_params(config, jax.random.key(seed))
    params['trunk'] = restore_params(init_from, params['trunk'])
  state = state_lib.create_state(model, tx, jax.random.key(seed), device_mesh, params=params)
  train_step = steps_lib.make_train_step(methods_lib.Policy(model), tx, methods_lib.RewardBce(),
                                         mesh=device_mesh)

  def held_out_metrics(step: int, train_loss: float) -> dict[str, float]:
    verifier = learned.LearnedVerifier(tokenizer, state.params, config, max_len, batch_size)
    metrics = {'step': step, 'train_loss': train_loss, **evaluate(verifier, eval_triples)}
    logging.info('reward_model step %d: %s', step,
                 ', '.join(f'{k}={v:.4g}' for k, v in metrics.items()))
    return metrics

  indices = _index_stream(len(train_triples), batch_size, np.random.default_rng(seed))
  start_time = time.time()
  for step in range(1, num_steps + 1):
    batch_indices = next(indices)
    state, step_metrics = train_step(state, {k: v[batch_indices] for k, v in train_data.items()})
    if eval_every and step % eval_every == 0 and step < num_steps:
      held_out_metrics(step, float(step_metrics['loss']))
  metrics = held_out_metrics(num_steps, float(step_metrics['loss']))
  metrics['train_seconds'] = time.time() - start_time

  os.makedirs(workdir, exist_ok=True)
  with Checkpointer(os.path.join(workdir, CHECKPOINT_DIR)) as checkpointer:
    checkpointer.save(num_steps, params=state.params, config_text=gin.config_str(), force=True)
  tokenizer.save(os.path.join(workdir, TOKENIZER_FILE))
  with open(os.path.join(workdir, RUN_INFO_FILE), 'w', encoding='utf-8') as f:
    json.dump({'model_config': dataclasses.asdict(config), 'max_len': max_len,
               'metrics': metrics}, f, indent=2)
  return metrics


def restore_params(checkpoint_dir: str, like: PyTree, step: int | None = None) -> PyTree:
  """The params item of a `Checkpointer` directory (latest step by default), on one device.

  `like` gives the expected tree (arrays or ShapeDtypeStructs); a mismatch raises
  `CheckpointMismatchError` naming the parameters that differ.
  """
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), like)
  with Checkpointer(checkpoint_dir) as checkpointer:
    return checkpointer.restore(step, target={'params': target})['params']


def load_verifier(workdir: str, *, step: int | None = None,
                  batch_size: int = 32) -> learned.LearnedVerifier:
  """The `LearnedVerifier` a `train_reward_model` run saved in `workdir` (latest step by default)."""
  info_path = os.path.join(workdir, RUN_INFO_FILE)
  if not os.path.isfile(info_path):
    raise FileNotFoundError(f'{workdir!r} is not a reward model run directory: it has no '
                            f'{RUN_INFO_FILE} (train_reward_model writes one)')
  with open(info_path, encoding='utf-8') as f:
    info = json.load(f)
  config = models.TransformerConfig(**info['model_config'])
  tokenizer = data.Tokenizer.load(os.path.join(workdir, TOKENIZER_FILE))
  params = restore_params(os.path.join(workdir, CHECKPOINT_DIR), learned.abstract_params(config),
                          step)
  return learned.LearnedVerifier(tokenizer, params, config, info['max_len'], batch_size)


class RewardModelVerifier(verifiers_lib.Verifier):
  """The reward model a `train_reward_model` run saved in `workdir`, loaded when it first scores.

  Loading lazily lets a config name a reward model that a pipeline trains before the policy, and
  lets `bonjax train --dry_run`-style checks build the config without it.
  """

  name = 'learned_verifier'

  def __init__(self, workdir: str, *, step: int | None = None, batch_size: int = 32):
    self.workdir, self.step, self.batch_size = workdir, step, batch_size
    self._verifier: learned.LearnedVerifier | None = None

  def _score_batch(self, prompts, completions, metadata) -> np.ndarray:
    if self._verifier is None:
      self._verifier = load_verifier(self.workdir, step=self.step, batch_size=self.batch_size)
    return self._verifier.score(prompts, completions, metadata)
