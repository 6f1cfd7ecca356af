"""One RL iteration: bonjax's pieces composed by hand vs Tunix's GRPOLearner, in one run.

    benchmarks/tunix_venv.sh                       # once: Tunix in its own venv
    PYTHONPATH=. python benchmarks/rl_iteration.py
    PYTHONPATH=. python benchmarks/rl_iteration.py --num_kv_heads=4 --iterations=10

Both sides run the same model (written by `_bonjax_to_npz.py` and read by `tunix_grpo.py`, whose
logit check must pass), the same 4 prompts of 16 tokens, 16 samples per prompt of 64 new tokens
at temperature 1, the same reward (the fraction of a completion's tokens that occur in its
prompt, in Python on the host) and one optimizer step (adam, lr 1e-4) on all 64 completions.

  bonjax: `sampling.generate` (one prefill per prompt) -> reward -> the training loop's step
    (`bonjax.train.make_train_step` with PolicyGradient('rloo'): RLOO weights computed inside it,
    jitted, state donated). Its EOS is a real token id
    (generate requires one), so a sample may stop early; the decode loop still runs all 64 steps
    unless every sample has stopped, and the fraction that did is reported.
  Tunix: `benchmarks/tunix_grpo.py` in --tunix_python's venv (see its docstring: GRPO with
    beta = 0 and num_iterations = 1, EOS outside the vocabulary so every sample runs 64 tokens).

Each side warms up (compiles) first; reported seconds are medians over the timed iterations.
bonjax is timed before and after Tunix, so that a change in the machine's load shows. Prints one
JSON line with both results, tunix_over_bonjax = Tunix seconds / bonjax seconds (medians, both
bonjax rounds pooled) and tunix_over_bonjax_best (the fastest iteration of each side: on a shared
machine the one least slowed by other load). The split matters as much as the total: the ratio of
two medians moves by tens of percent between runs on a busy 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _bonjax_to_npz as bridge  # noqa: E402  (the sibling script, not a package)

from bonjax import models, sharding  # noqa: E402
from bonjax import train as train_lib  # noqa: E402
from bonjax.sampling import Temperature, generate  # noqa: E402

EOS_ID, PAD_ID = 1, 0
DEFAULT_TUNIX_PYTHON = os.path.join(os.path.dirname(os.path.abspath(__file__)), '.venv-tunix',
                                    'bin', 'python')


def overlap_rewards(prompts: np.ndarray, tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
  """[B, N] fraction of each completion's tokens (the first lengths[b, n]) found in its prompt."""
  rewards = np.zeros(lengths.shape, np.float32)
  for b, prompt in enumerate(prompts.tolist()):
    vocabulary = set(prompt)
    for n, completion in enumerate(tokens[b].tolist()):
      completion = completion[:lengths[b, n]]
      rewards[b, n] = sum(token in vocabulary for token in completion) / max(len(completion), 1)
  return rewards


def time_bonjax(config: models.TransformerConfig, params, prompts: np.ndarray, *,
                num_samples: int, max_new_tokens: int, learning_rate: float, warmup: int,
                iterations: int, seed: int) -> dict:
  """Median seconds of one hand-composed bonjax RL iteration, with its rollout/reward/update split."""
  model = models.Transformer(config)
  tx = optax.adam(learning_rate)
  mesh = sharding.make_mesh('data:1', jax.devices()[:1])
  # The training loop's own step (jitted, sharded, the state donated), RLOO weights inside it.
  train_step = train_lib.make_train_step(train_lib.Policy(model, Temperature(1.0)), tx,
                                         train_lib.PolicyGradient('rloo'), mesh=mesh)
  state = train_lib.create_state(model, tx, jax.random.key(0), mesh,
                                 params=jax.tree.map(jnp.array, params))
  prompts = jnp.asarray(prompts)
  prompt_lengths = jnp.full((prompts.shape[0],), prompts.shape[1], jnp.int32)
  records, stopped_early = [], []
  for i in range(warmup + iterations):
    start = time.perf_counter()
    samples = generate(model, state.params, prompts, prompt_lengths, num_samples=num_samples,
                       max_new_tokens=max_new_tokens, rng=jax.random.key(seed + i),
                       sampler=Temperature(1.0), eos_id=EOS_ID, pad_id=PAD_ID)
    tokens, lengths = jax.device_get((samples.tokens, samples.lengths))
    rolled_out = time.perf_counter()
    rewards = overlap_rewards(np.asarray(prompts), tokens, lengths)
    rewarded = time.perf_counter()
    state, metrics = train_step(state, {'prompts': prompts, 'prompt_lengths': prompt_lengths,
                                        'tokens': samples.tokens, 'lengths': samples.lengths,
                                        'logprobs': samples.logprobs, 'scores': rewards,
                                        'rewards': rewards})
    jax.block_until_ready((state, metrics))
    done = time.perf_counter()
    if i >= warmup:
      records.append({'total': done - start, 'rollout': rolled_out - start,
                      'reward': rewarded - rolled_out, 'update': done - rewarded})
      stopped_early.append(float(np.mean(lengths < max_new_tokens)))
  median = lambda key: statistics.median(r[key] for r in records)
  return {'seconds_per_iteration': median('total'),
          'best_seconds_per_iteration': min(r['total'] for r in records),
          'breakdown': {key: median(key) for key in ('rollout', 'reward', 'update')},
          'per_iteration_seconds': [r['total'] for r in records],
          'fraction_stopped_early_at_eos': statistics.mean(stopped_early)}


def run_tunix(python: str, npz: str, *, num_samples: int, max_new_tokens: int,
              learning_rate: float, warmup: int, iterations: int) -> dict:
  """Runs tunix_grpo.py in its venv and returns its JSON result."""
  script = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'tunix_grpo.py')
  if not os.path.exists(python):
    sys.exit(f'no Tunix python at {python}: run benchmarks/tunix_venv.sh first')
  command = [python, script, f'--npz={npz}', f'--num_generations={num_samples}',
             f'--max_new_tokens={max_new_tokens}', f'--learning_rate={learning_rate}',
             f'--warmup={warmup}', f'--iterations={iterations}', '--optimizer=adam']
  env = {key: value for key, value in os.environ.items() if key != 'PYTHONPATH'}
  result = subprocess.run(command, capture_output=True, text=True, env=env)
  if result.returncode:
    sys.exit(f'{" ".join(command)} failed ({result.returncode}):\n{result.stderr[-4000:]}')
  return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  bridge.add_model_flags(parser)
  parser.add_argument('--num_samples', type=int, default=16)
  parser.add_argument('--max_new_tokens', type=int, default=64)
  parser.add_argument('--learning_rate', type=float, default=1e-4)
  parser.add_argument('--warmup', type=int, default=2)
  parser.add_argument('--iterations', type=int, default=5)
  parser.add_argument('--tunix_python', default=DEFAULT_TUNIX_PYTHON)
  parser.add_argument('--npz', default=None, help='where to write the model (default: a temp file)')
  args = parser.parse_args()

  config, params, prompts = bridge.model_from_flags(args)
  workload = dict(num_samples=args.num_samples, max_new_tokens=args.max_new_tokens,
                  learning_rate=args.learning_rate, warmup=args.warmup,
                  iterations=args.iterations)
  with tempfile.TemporaryDirectory() as tmp:
    npz = args.npz or os.path.join(tmp, 'bonjax_model.npz')
    bridge.write_npz(npz, config, params, prompts, args.seed)
    before = time_bonjax(config, params, prompts, seed=args.seed, **workload)
    tunix = run_tunix(args.tunix_python, npz, **workload)
  after = time_bonjax(config, params, prompts, seed=args.seed, **workload)
  bonjax_times = before['per_iteration_seconds'] + after['per_iteration_seconds']
  bonjax_seconds = statistics.median(bonjax_times)
  print(json.dumps({
      'bonjax_seconds_per_iteration': bonjax_seconds,
      'tunix_seconds_per_iteration': tunix['tunix_seconds_per_iteration'],
      'tunix_over_bonjax': tunix['tunix_seconds_per_iteration'] / bonjax_seconds,
      'tunix_over_bonjax_best': tunix['best_seconds_per_iteration'] / min(bonjax_times),
      'bonjax_before_tunix': before, 'bonjax_after_tunix': after, 'tunix': tunix,
      'model': {'vocab_size': config.vocab_size, 'num_layers': config.num_layers,
                'embed_dim': config.embed_dim, 'num_heads': config.num_heads,
                'num_kv_heads': config.num_kv_heads, 'head_dim': config.head_dim,
                'mlp_dim': config.mlp_dim},
      'jax': jax.__version__, 'device': jax.devices()[0].device_kind,
  }))


if __name__ == '__main__':
  main()
