"""One GRPO iteration in Tunix (google-tunix's GRPOLearner), on a model written by bonjax.

    benchmarks/tunix_venv.sh                                   # once: benchmarks/.venv-tunix
    PYTHONPATH=. python benchmarks/_bonjax_to_npz.py --out=/tmp/bonjax_model.npz
    benchmarks/.venv-tunix/bin/python benchmarks/tunix_grpo.py --npz=/tmp/bonjax_model.npz

Runs in Tunix's own venv and never imports bonjax. From the .npz (see _bonjax_to_npz.py) it
builds the equivalent `tunix.models.gemma.model.Gemma`, checks that its float32 logits on the
file's check tokens match bonjax's (max |diff| < 1e-3, else it exits with an error), then runs
`GRPOLearner.train` through an `RLCluster` ('vanilla' rollout engine, actor and rollout sharing
one model on one device) for --warmup + --iterations global steps and prints one JSON line:
{"tunix_seconds_per_iteration": median over the timed iterations, "breakdown": {...}, ...}.

Workload: the file's prompts (4 x 16 tokens by default) x --num_generations (16) samples x
--max_new_tokens (64) new tokens, temperature 1, no top-p / top-k filter, Tunix's default
rollout seed (RolloutConfig.seed None: PRNGKey(0) at every call). Every sample runs all
64 steps: the tokenizer's EOS (and pad) id is vocab_size (and vocab_size + 1), ids the model never
produces; the script checks that every completion has 64 tokens. Reward: the fraction of a
completion's tokens that occur in its prompt (pure Python, on the decoded text). GRPO with
num_iterations = 1 and beta = 0 (no reference model, no old-policy pass: the plain group-
normalized policy gradient), one optimizer step (--optimizer, default adam) per iteration on all
B x G completions.

Breakdown (median seconds per timed iteration), measured by wrapping Tunix's own entry points:
  rollout  RLCluster.generate (tokenize, prefill, decode loop, detokenize)
  reward   the learner's _compute_rewards (the reward function through Tunix's reward manager)
  update   RLCluster.update_actor (the jitted train step on the 64 completions), until the new
           params are ready
  other    the rest of the global step: batching, advantages, padding, queues, metrics
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from importlib import metadata
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tunix.models.gemma import model as gemma_lib
from tunix.rl import rl_cluster as rl_cluster_lib
from tunix.rl.grpo import grpo_learner
from tunix.rl.rollout import base_rollout

PARITY_TOLERANCE = 1e-3
PHASES = ('rollout', 'reward', 'update')


def load_bridge(path: str) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, np.ndarray]]:
  """(bonjax config fields, {'/'-joined param name: array}, {check_tokens, check_logits, prompts})."""
  with np.load(path) as bridge:
    config = json.loads(str(bridge['config_json']))
    params = {name[len('param/'):]: bridge[name] for name in bridge.files
              if name.startswith('param/')}
    extras = {name: bridge[name] for name in ('check_tokens', 'check_logits', 'prompts')}
  return config, params, extras


def _require(condition: bool, message: str) -> None:
  if not condition:
    raise ValueError(f'Tunix Gemma cannot represent this bonjax model: {message}')


def tunix_config(config: dict[str, Any]) -> gemma_lib.ModelConfig:
  """The `tunix.models.gemma` ModelConfig of a bonjax TransformerConfig (as a dict of fields).

  Tunix's Gemma hard-codes what bonjax makes configurable (RoPE base 10000, queries scaled by
  head_dim**-0.5, RMSNorm eps 1e-6, float32 params): any other value is refused, not ignored.
  """
  _require(config['rope_base'] == 10_000, f"rope_base={config['rope_base']} (Tunix uses 10000)")
  _require(config['query_pre_attn_scalar'] in (None, config['head_dim']),
           f"query_pre_attn_scalar={config['query_pre_attn_scalar']} (Tunix scales by head_dim)")
  _require(config['norm_eps'] == 1e-6, f"norm_eps={config['norm_eps']} (Tunix uses 1e-6)")
  for field in ('dtype', 'param_dtype'):
    _require(config[field] == 'float32', f'{field}={config[field]} (the parity check is float32)')
  pattern = config['attention_types']
  kinds = {'global': gemma_lib.AttentionType.GLOBAL,
           'local': gemma_lib.AttentionType.LOCAL_SLIDING}
  attention_types = tuple(kinds[pattern[i % len(pattern)]] for i in range(config['num_layers']))
  return gemma_lib.ModelConfig(
      num_layers=config['num_layers'], num_embed=config['vocab_size'],
      embed_dim=config['embed_dim'], hidden_dim=config['mlp_dim'],
      num_heads=config['num_heads'], head_dim=config['head_dim'],
      num_kv_heads=config['num_kv_heads'], final_logit_softcap=config['final_logits_softcap'],
      use_post_attn_norm=config['use_post_attn_norm'],
      use_post_ffw_norm=config['use_post_ffw_norm'], attention_types=attention_types,
      attn_logits_soft_cap=config['attn_logits_softcap'],
      sliding_window_size=config['sliding_window'])


def _tunix_params(config: dict[str, Any], params: dict[str, np.ndarray]
                  ) -> dict[tuple[Any, ...], np.ndarray]:
  """bonjax's params re-laid-out as {path of the Tunix Gemma attribute: array}.

  bonjax keeps q [D, N, H], k and v [D, K, H]; Tunix stacks them head-major: qkv_einsum
  [3, N, D, H] when every head has its own keys and values, else q_einsum [N, D, H] and
  kv_einsum [2, K, D, H]. The o [N, H, D], MLP [D, F] / [F, D], norm scales and embedding match.
  """
  remaining = dict(params)

  def take(name: str) -> np.ndarray:
    if name not in remaining:
      raise ValueError(f'the .npz has no parameter {name!r}')
    return remaining.pop(name)

  mapped = {('embedder', 'input_embedding'): take('embedder/embedding'),
            ('final_norm', 'scale'): take('final_norm/scale')}
  norms = {'pre_attention_norm': 'pre_attention_norm', 'pre_ffw_norm': 'pre_ffw_norm'}
  if config['use_post_attn_norm']:
    norms['post_attention_norm'] = 'post_attn_norm'
  if config['use_post_ffw_norm']:
    norms['post_ffw_norm'] = 'post_ffw_norm'
  for i in range(config['num_layers']):
    layer = ('layers', i)
    q, k, v = (take(f'layer_{i}/attn/{w}') for w in 'qkv')
    if config['num_heads'] == config['num_kv_heads']:
      mapped[layer + ('attn', 'qkv_einsum', 'w')] = np.stack([q, k, v]).transpose(0, 2, 1, 3)
    else:
      mapped[layer + ('attn', 'q_einsum', 'w')] = q.transpose(1, 0, 2)
      mapped[layer + ('attn', 'kv_einsum', 'w')] = np.stack([k, v]).transpose(0, 2, 1, 3)
    mapped[layer + ('attn', 'attn_vec_einsum', 'w')] = take(f'layer_{i}/attn/o')
    for ours, theirs in (('gate', 'gate_proj'), ('up', 'up_proj'), ('down', 'down_proj')):
      mapped[layer + ('mlp', theirs, 'kernel')] = take(f'layer_{i}/mlp/{ours}')
    for ours, theirs in norms.items():
      mapped[layer + (theirs, 'scale')] = take(f'layer_{i}/{ours}/scale')
  if remaining:
    raise ValueError(f'parameters with no Tunix counterpart: {sorted(remaining)}')
  return mapped


def _attribute(root: Any, path: tuple[Any, ...]) -> Any:
  for step in path:
    root = root[step] if isinstance(step, int) else getattr(root, step)
  return root


def build_gemma(config: dict[str, Any], params: dict[str, np.ndarray]) -> gemma_lib.Gemma:
  """A Tunix Gemma holding exactly bonjax's weights (every Tunix param set, shapes checked)."""
  model = gemma_lib.Gemma(tunix_config(config), rngs=nnx.Rngs(params=0))
  mapped = _tunix_params(config, params)
  num_tunix_params = len(jax.tree.leaves(nnx.state(model, nnx.Param)))
  if num_tunix_params != len(mapped):
    raise ValueError(f'Tunix Gemma has {num_tunix_params} params, the .npz maps to {len(mapped)}')
  for path, value in mapped.items():
    variable = _attribute(model, path)
    current = variable.get_value()
    if current.shape != value.shape:
      raise ValueError(f'{".".join(map(str, path))}: Tunix shape {current.shape}, '
                       f'bonjax gives {value.shape}')
    variable.set_value(jnp.asarray(value, current.dtype))
  return model


def logits_max_abs_diff(model: gemma_lib.Gemma, tokens: np.ndarray, reference: np.ndarray
                        ) -> float:
  """max |Tunix logits - reference| on tokens [B, L] at positions arange(L), causal, no padding."""
  batch, length = tokens.shape
  positions = jnp.broadcast_to(jnp.arange(length), (batch, length))
  mask = jnp.broadcast_to(jnp.tril(jnp.ones((length, length), jnp.bool_)), (batch, length, length))
  logits, _ = model(jnp.asarray(tokens), positions, None, mask)
  return float(jnp.max(jnp.abs(logits.astype(jnp.float32) - reference)))


class TokenIdTokenizer:
  """Text is token ids written in decimal, space-separated; EOS and pad lie outside the vocabulary.

  No BOS (bos_id is None), so a prompt is exactly the file's tokens. The sampler draws from the
  model's vocab_size logits, so it never emits eos_id = vocab_size: every sample runs to
  max_new_tokens. pad_id = vocab_size + 1 never reaches the embedding, because the prompts all
  have the same length (no padding) and no completion stops early.
  """

  def __init__(self, vocab_size: int):
    self._eos, self._pad = vocab_size, vocab_size + 1

  def encode(self, text: str, **unused_kwargs) -> list[int]:
    return [int(token) for token in text.split()]

  def decode(self, ids: list[int], **unused_kwargs) -> str:
    return ' '.join(str(i) for i in ids)

  def bos_id(self) -> None:
    return None

  def eos_id(self) -> int:
    return self._eos

  def pad_id(self) -> int:
    return self._pad


def prompt_overlap_reward(prompts: list[str], completions: list[str], **unused_kwargs
                          ) -> list[float]:
  """Fraction of each completion's tokens that occur in its prompt."""
  rewards = []
  for prompt, completion in zip(prompts, completions):
    vocabulary, tokens = set(prompt.split()), completion.split()
    rewards.append(sum(token in vocabulary for token in tokens) / max(len(tokens), 1))
  return rewards


class PhaseClock:
  """Per-iteration wall time of the global step and of the phases inside it."""

  def __init__(self):
    self.iterations: list[dict[str, float]] = []

  def around_iteration(self, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def timed(*args, **kwargs):
      self.iterations.append(dict.fromkeys(PHASES, 0.0))
      start = time.perf_counter()
      result = fn(*args, **kwargs)
      self.iterations[-1]['total'] = time.perf_counter() - start
      return result
    return timed

  def around_phase(self, phase: str, fn: Callable[..., Any],
                   block_on: Callable[[], Any] | None = None) -> Callable[..., Any]:
    @functools.wraps(fn)
    def timed(*args, **kwargs):
      start = time.perf_counter()
      result = fn(*args, **kwargs)
      if block_on is not None:
        jax.block_until_ready(block_on())
      self.iterations[-1][phase] += time.perf_counter() - start
      return result
    return timed


def run_grpo(model: gemma_lib.Gemma, prompts: np.ndarray, *, vocab_size: int,
             num_generations: int, max_new_tokens: int, warmup: int, iterations: int,
             optimizer: optax.GradientTransformation) -> tuple[PhaseClock, list[int]]:
  """Trains with GRPOLearner for warmup + iterations global steps, timing each one.

  Returns the clock and the token count of every completion seen (all should be max_new_tokens).
  """
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ('fsdp', 'tp'))
  roles = rl_cluster_lib.Role
  prompt_len = prompts.shape[1]
  cluster_config = rl_cluster_lib.ClusterConfig(
      role_to_mesh={roles.ACTOR: mesh, roles.REFERENCE: mesh, roles.ROLLOUT: mesh},
      rollout_engine='vanilla',
      offload_to_cpu=False,
      training_config=rl_cluster_lib.RLTrainingConfig(
          actor_optimizer=optimizer, eval_every_n_steps=10 ** 9,
          max_steps=warmup + iterations, pbar_description=None),
      rollout_config=base_rollout.RolloutConfig(
          max_tokens_to_generate=max_new_tokens, max_prompt_length=prompt_len,
          kv_cache_size=prompt_len + max_new_tokens, temperature=1.0, top_p=1.0, top_k=None),
  )
  cluster = rl_cluster_lib.RLCluster(actor=model, reference=None,
                                     tokenizer=TokenIdTokenizer(vocab_size),
                                     cluster_config=cluster_config)
  completion_lengths: list[int] = []

  def reward(prompts, completions, **kwargs):
    completion_lengths.extend(len(c.split()) for c in completions)
    return prompt_overlap_reward(prompts, completions, **kwargs)

  learner = grpo_learner.GRPOLearner(
      rl_cluster=cluster, reward_fns=reward,
      algo_config=grpo_learner.GRPOConfig(num_generations=num_generations, num_iterations=1,
                                          beta=0.0))
  clock = PhaseClock()
  learner._run_global_step = clock.around_iteration(learner._run_global_step)
  learner._compute_rewards = clock.around_phase('reward', learner._compute_rewards)
  cluster.generate = clock.around_phase('rollout', cluster.generate)
  cluster.update_actor = clock.around_phase(
      'update', cluster.update_actor, block_on=lambda: nnx.state(cluster.actor_trainer.model))
  texts = np.array([' '.join(map(str, row)) for row in prompts])
  learner.train([{'prompts': texts} for _ in range(warmup + iterations)])
  return clock, completion_lengths


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--npz', required=True, help='written by benchmarks/_bonjax_to_npz.py')
  parser.add_argument('--num_generations', type=int, default=16)
  parser.add_argument('--max_new_tokens', type=int, default=64)
  parser.add_argument('--warmup', type=int, default=2, help='untimed iterations (compilation)')
  parser.add_argument('--iterations', type=int, default=5, help='timed iterations')
  parser.add_argument('--optimizer', choices=('adam', 'sgd'), default='adam')
  parser.add_argument('--learning_rate', type=float, default=1e-4)
  args = parser.parse_args()
  if args.warmup < 1 or args.iterations < 1:
    parser.error('--warmup and --iterations must be at least 1 (the first iteration compiles)')

  config, params, extras = load_bridge(args.npz)
  model = build_gemma(config, params)
  diff = logits_max_abs_diff(model, extras['check_tokens'], extras['check_logits'])
  if not diff < PARITY_TOLERANCE:
    sys.exit(f'Tunix logits differ from bonjax\'s by up to {diff:.3g} (>= {PARITY_TOLERANCE})')
  print(f'parity: max |tunix - bonjax| logits = {diff:.3g}', file=sys.stderr)

  optimizer = getattr(optax, args.optimizer)(args.learning_rate)
  clock, lengths = run_grpo(model, extras['prompts'], vocab_size=config['vocab_size'],
                            num_generations=args.num_generations,
                            max_new_tokens=args.max_new_tokens, warmup=args.warmup,
                            iterations=args.iterations, optimizer=optimizer)
  if len(clock.iterations) != args.warmup + args.iterations:
    sys.exit(f'expected {args.warmup + args.iterations} GRPO iterations, timed '
             f'{len(clock.iterations)}')
  if set(lengths) != {args.max_new_tokens}:
    sys.exit(f'completions were not all {args.max_new_tokens} tokens long: {sorted(set(lengths))}')
  timed = clock.iterations[args.warmup:]
  for record in timed:
    record['other'] = record['total'] - sum(record[phase] for phase in PHASES)
  median = lambda key: statistics.median(record[key] for record in timed)
  print(json.dumps({
      'tunix_seconds_per_iteration': median('total'),
      'best_seconds_per_iteration': min(record['total'] for record in timed),
      'breakdown': {key: median(key) for key in PHASES + ('other',)},
      'per_iteration_seconds': [record['total'] for record in timed],
      'warmup_seconds': [record['total'] for record in clock.iterations[:args.warmup]],
      'parity_max_abs_diff': diff,
      'workload': {'prompts': int(extras['prompts'].shape[0]),
                   'prompt_len': int(extras['prompts'].shape[1]),
                   'num_generations': args.num_generations,
                   'max_new_tokens': args.max_new_tokens, 'optimizer': args.optimizer},
      'versions': {name: metadata.version(name) for name in ('google-tunix', 'jax', 'flax')},
  }))


if __name__ == '__main__':
  main()
