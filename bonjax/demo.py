"""A small end-to-end Best-of-N experiment that runs on a laptop CPU in a few minutes.

    bonjax_arith (generated) --train--> sentencepiece tokenizer
      --SFT--> a small policy pi_0
      --RL (RLOO, n = 1)--------------------> pi_rl
      --BoN-RL (bon_rl_weights, n = bon_n)--> pi_bon
    each evaluated by sampling eval_n answers per test problem: pass@k for k = 1..eval_n

Both RL arms start from the same pi_0 and see the same prompts and the same number of samples;
they differ only in the per-sample weights (docs/bon_math.md §5.1 and §5.2). BoN-RL optimizes
pass@bon_n rather than pass@1, so with enough RL steps it should trade some pass@1 for pass@k at
larger k (the paper's finding). At the default size (30 RL steps, a 640K-parameter policy) the arms
stay within sampling noise of the SFT policy: the default is a quick end-to-end check of the whole
pipeline; scale rl_steps, rl_prompts and the model up for a real comparison. (With Adam at 3e-4 both
arms lost pass@1 within 30 steps: sign-like Adam updates on few informative groups are mostly noise.)

Writes <workdir>/results.json, <workdir>/pass_at_k.png and the tokenizer; prints a table.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm
from flax import linen as nn

from bonjax import data, models, objectives, sampling, verifiers
from bonjax.train import steps


@dataclasses.dataclass(frozen=True)
class DemoConfig:
  """Every knob of the demo (gin binds these through `run_demo`)."""

  difficulty: str = 'easy'
  num_train: int = 4000
  num_test: int = 128
  vocab_size: int = 384
  num_layers: int = 3
  embed_dim: int = 128
  num_heads: int = 4
  num_kv_heads: int = 2
  mlp_dim: int = 384
  max_prompt_len: int = 48
  max_new_tokens: int = 56
  sft_steps: int = 500
  sft_batch_size: int = 32
  sft_learning_rate: float = 3e-3
  rl_steps: int = 30
  rl_prompts: int = 16
  samples_per_prompt: int = 8
  bon_n: int = 4
  rl_learning_rate: float = 3e-5
  temperature: float = 1.0
  eval_n: int = 16
  seed: int = 0


def run_demo(workdir: str, config: DemoConfig = DemoConfig(),
             log: Callable[[str], None] = print) -> dict[str, Any]:
  """Runs the experiment; returns (and saves) {arm: {'pass_at_k': [...], 'ks': [...]}}."""
  os.makedirs(workdir, exist_ok=True)
  start = time.time()
  rng = jax.random.key(config.seed)

  arith_config = data.ArithConfig(
      name=f'demo_{config.difficulty}_{config.num_train}_{config.num_test}_{config.seed}',
      difficulty=config.difficulty, seed=config.seed, num_train=config.num_train,
      num_test=config.num_test)
  data_dir = os.path.join(workdir, 'data')
  train_source = data.load('bonjax_arith', 'train', data_dir, config=arith_config)
  test_source = data.load('bonjax_arith', 'test', data_dir, config=arith_config)
  log(f'data: {len(train_source)} train / {len(test_source)} test problems ({config.difficulty})')

  texts = [data.batching.decode_example(train_source[i]) for i in range(len(train_source))]
  tokenizer = data.Tokenizer.train(
      (t[key] for t in texts for key in ('question', 'solution')), vocab_size=config.vocab_size)
  tokenizer.save(os.path.join(workdir, 'tokenizer.model'))

  model_config = dataclasses.replace(
      models.get_config('tiny'), vocab_size=tokenizer.vocab_size, num_layers=config.num_layers,
      embed_dim=config.embed_dim, num_heads=config.num_heads, num_kv_heads=config.num_kv_heads,
      head_dim=config.embed_dim // config.num_heads, mlp_dim=config.mlp_dim)
  model = models.Transformer(model_config)
  rng, init_rng = jax.random.split(rng)
  params = model.init(init_rng, jnp.zeros((1, 8), jnp.int32))['params']
  params = nn.unbox(params)
  log(f'model: {models.param_count(model_config):,} parameters')

  params = _supervised_fine_tuning(model, params, train_source, tokenizer, config, log)

  verifier = verifiers.get('answer_match')
  rollout = functools.partial(_rollout, model, tokenizer, verifier, config)
  results = {'sft': _evaluate(rollout, params, test_source, tokenizer, config, rng)}
  arms = {'rl': lambda s, r: objectives.rloo_weights(r),
          'bon_rl': lambda s, r: objectives.bon_rl_weights(s, r, n=config.bon_n)}
  tx = optax.adam(config.rl_learning_rate)
  # One compiled step for both arms: they differ only in the weights they feed it.
  pg_step = jax.jit(functools.partial(steps.policy_gradient_step, model, tx,
                                      temperature=config.temperature))
  for name, weights_fn in arms.items():
    arm_params = _reinforce(params, tx, pg_step, train_source, tokenizer, config, rollout,
                            weights_fn, name, log)
    results[name] = _evaluate(rollout, arm_params, test_source, tokenizer, config, rng)

  _report(results, config, log)
  results['seconds'] = time.time() - start
  with open(os.path.join(workdir, 'results.json'), 'w') as f:
    json.dump(results, f, indent=2)
  _plot(results, config, os.path.join(workdir, 'pass_at_k.png'))
  log(f'wrote {workdir}/results.json and pass_at_k.png in {results["seconds"]:.0f} s')
  return results


def _supervised_fine_tuning(model, params, source, tokenizer, config, log):
  tx = optax.adamw(optax.warmup_cosine_decay_schedule(
      0.0, config.sft_learning_rate, config.sft_steps // 10, config.sft_steps), weight_decay=0.01)
  state = steps.TrainState.create(params, tx)
  step = jax.jit(functools.partial(steps.sft_step, model, tx), donate_argnums=0)
  batches = data.sft_batches(source, tokenizer, batch_size=config.sft_batch_size,
                             max_len=config.max_prompt_len + config.max_new_tokens,
                             seed=config.seed)
  bar = tqdm.trange(config.sft_steps, desc='SFT', leave=False)
  for _ in bar:
    batch = {k: v for k, v in next(batches).items() if k != 'valid'}
    state, metrics = step(state, batch)
    bar.set_postfix(loss=f'{float(metrics["loss"]):.3f}')
  log(f'SFT: {config.sft_steps} steps, final loss {float(metrics["loss"]):.3f}')
  return state.params


def _rollout(model, tokenizer, verifier, config, params, batch, num_samples, rng):
  """Samples num_samples completions per prompt and scores them with the verifier: [B, N]."""
  samples = sampling.generate(
      model, params, batch['prompts'], batch['prompt_lengths'], num_samples=num_samples,
      max_new_tokens=config.max_new_tokens, rng=rng,
      sampler=sampling.Temperature(config.temperature), eos_id=tokenizer.eos_id,
      pad_id=tokenizer.pad_id)
  texts = tokenizer.decode(np.asarray(samples.tokens))
  prompts = tokenizer.decode(np.asarray(batch['prompts']))
  rewards = verifier.score(prompts, texts, batch['metadata'])
  return samples, rewards


def _reinforce(params, tx, step, source, tokenizer, config, rollout, weights_fn, name, log):
  state = steps.TrainState.create(params, tx)
  batches = data.prompt_batches(source, tokenizer, batch_size=config.rl_prompts,
                                max_prompt_len=config.max_prompt_len, seed=config.seed + 1)
  rng = jax.random.key(config.seed + 1)  # the same samples' randomness for every arm
  bar = tqdm.trange(config.rl_steps, desc=name, leave=False)
  accuracy = []
  for _ in bar:
    batch = next(batches)
    rng, key = jax.random.split(rng)
    samples, rewards = rollout(state.params, batch, config.samples_per_prompt, key)
    # The oracle verifier: selection score and reward are the same binary correctness.
    weights = weights_fn(jnp.asarray(rewards), jnp.asarray(rewards))  # jitted inside objectives
    state, _ = step(state, {'prompts': batch['prompts'], 'prompt_lengths': batch['prompt_lengths'],
                            'tokens': samples.tokens, 'lengths': samples.lengths,
                            'weights': weights})
    accuracy.append(float(rewards.mean()))
    bar.set_postfix(train_accuracy=f'{np.mean(accuracy[-5:]):.2f}')
  log(f'{name}: {config.rl_steps} steps, train sample accuracy {np.mean(accuracy[:5]):.2f} -> '
      f'{np.mean(accuracy[-5:]):.2f}')
  return state.params


def _evaluate(rollout, params, source, tokenizer, config, rng):
  ks = [k for k in (1, 2, 4, 8, 16, 32, 64) if k <= config.eval_n]
  batches = data.prompt_batches(source, tokenizer, batch_size=min(32, len(source)),
                                max_prompt_len=config.max_prompt_len, shuffle=False,
                                num_epochs=1, drop_remainder=False)
  per_prompt = []
  for batch in batches:
    rng, key = jax.random.split(rng)
    _, rewards = rollout(params, batch, config.eval_n, key)
    pass_at_k = np.asarray(objectives.pass_at_k(jnp.asarray(rewards), ks))
    per_prompt.append(pass_at_k[batch['valid']])
  return {'ks': ks, 'pass_at_k': np.concatenate(per_prompt).mean(axis=0).tolist()}


def _report(results, config, log):
  ks = results['sft']['ks']
  log(f'\npass@k on {config.num_test} test problems ({config.eval_n} samples each, '
      f'T={config.temperature}):')
  log('arm     ' + ''.join(f'{f"pass@{k}":>10}' for k in ks))
  for name, result in results.items():
    log(f'{name:8s}' + ''.join(f'{v:10.3f}' for v in result['pass_at_k']))


def _plot(results, config, path):
  import matplotlib  # pylint: disable=g-import-not-at-top  (optional, only for the figure)
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(5, 3.5))
  for name in ('sft', 'rl', 'bon_rl'):
    ax.plot(results[name]['ks'], results[name]['pass_at_k'], marker='o', label=name)
  ax.set_xscale('log', base=2)
  ax.set_xlabel('k (samples)')
  ax.set_ylabel('pass@k')
  ax.set_title(f'bonjax_arith/{config.difficulty}: BoN-RL (n={config.bon_n}) vs RL')
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
