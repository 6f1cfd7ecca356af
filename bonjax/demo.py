"""A small end-to-end Best-of-N experiment that runs on a laptop CPU in a few minutes.

    bonjax_strategies (generated) --`train` Sft-->  pi_0                  <workdir>/sft
      --`train` PolicyGradient('rloo')----------------> pi_rl            <workdir>/rl
      --`train` PolicyGradient('bon_rl_s', bon_n)-----> pi_bon           <workdir>/bon_rl
    each evaluated by the loop on the test problems with eval_n samples each: pass@k, BoN@k

A composition of the training loop (`bonjax.train.train`), nothing more: the three runs are
ordinary run directories (resumable, with metrics.jsonl and TensorBoard files), and the demo
itself resumes where it stopped. Both RL arms start from the same pi_0, see the same prompts and
the same sample keys; they differ only in the method's per-sample weights (docs/bon_math.md §5.1,
§5.2). With the oracle verifier (answer match selects and rewards) BoN-RL optimizes pass@bon_n
instead of pass@1.

The default task, `bonjax_strategies` (bonjax/data/strategies.py), is designed for this and says
so: each problem's answer follows one of three rules of reliability 0.5 / 0.3 / 0.2, and the
question does not say which. Standard RL should converge on the most reliable rule (pass@1 up,
pass@N down towards 0.5); BoN-aware RL should keep the rules spread over its samples (pass@N up).
`DemoConfig.dataset = 'bonjax_arith'` runs the same experiment on the arithmetic word problems.

Writes <workdir>/results.json and <workdir>/pass_at_k.png; prints a table.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from typing import Any

import optax

from bonjax import data, models, sampling, verifiers
from bonjax import train as train_lib


@dataclasses.dataclass(frozen=True)
class DemoConfig:
  """Every knob of the demo (gin binds these through `run_demo`)."""

  dataset: str = 'bonjax_strategies'
  difficulty: str = 'easy'  # of bonjax_arith
  num_train: int = 4000
  num_test: int = 128
  vocab_size: int = 340
  num_layers: int = 3
  embed_dim: int = 128
  num_heads: int = 4
  num_kv_heads: int = 2
  mlp_dim: int = 384
  max_prompt_len: int = 16
  max_new_tokens: int = 24
  sft_steps: int = 300
  sft_batch_size: int = 32
  sft_learning_rate: float = 3e-3
  rl_steps: int = 80
  rl_prompts: int = 16
  samples_per_prompt: int = 8
  bon_n: int = 4
  rl_learning_rate: float = 1e-4
  temperature: float = 1.0
  eval_n: int = 32
  seed: int = 0


ARMS = ('sft', 'rl', 'bon_rl')


def _arms(config: DemoConfig) -> dict[str, train_lib.Method]:
  return {'rl': train_lib.PolicyGradient('rloo'),
          'bon_rl': train_lib.PolicyGradient('bon_rl_s', bon_n=config.bon_n)}


def run_demo(workdir: str, config: DemoConfig = DemoConfig(),
             log: Callable[[str], None] = print) -> dict[str, Any]:
  """Runs the experiment; returns (and saves) {arm: {'ks': [...], 'pass_at_k': [...], ...}}."""
  start = time.time()
  name = f'demo_{config.num_train}_{config.num_test}_{config.seed}'
  if config.dataset == 'bonjax_arith':
    builder_config = data.ArithConfig(
        name=f'{name}_{config.difficulty}', difficulty=config.difficulty, seed=config.seed,
        num_train=config.num_train, num_test=config.num_test)
  else:
    builder_config = data.StrategiesConfig(name=name, seed=config.seed,
                                           num_train=config.num_train, num_test=config.num_test)
  task = data.Task(
      config.dataset, config=builder_config,
      data_dir=os.path.join(workdir, 'data'), vocab_size=config.vocab_size,
      max_prompt_len=config.max_prompt_len, max_target_len=config.max_new_tokens)
  model = models.Transformer(dataclasses.replace(
      models.get_config('tiny'), vocab_size=config.vocab_size, num_layers=config.num_layers,
      embed_dim=config.embed_dim, num_heads=config.num_heads, num_kv_heads=config.num_kv_heads,
      head_dim=config.embed_dim // config.num_heads, mlp_dim=config.mlp_dim))
  log(f'model: {models.param_count(model.config):,} parameters; task: {config.dataset}, '
      f'{config.num_train} train / {config.num_test} test problems')
  sampler = sampling.Temperature(config.temperature)
  oracle = verifiers.AnswerMatch()
  common = dict(model=model, task=task, seed=config.seed, reward=oracle, verifier=oracle,
                eval_prompts=config.num_test, checkpoint_every=50,
                eval_rollout=train_lib.Rollout(num_samples=config.eval_n,
                                               max_new_tokens=config.max_new_tokens,
                                               sampler=sampler, chunks=4))
  sft_dir = os.path.join(workdir, 'sft')
  schedule = train_lib.optimizer(
      'adamw', _warmup_cosine(config.sft_learning_rate, config.sft_steps), weight_decay=0.01)
  results = {'sft': train_lib.train(sft_dir, method=train_lib.Sft(), optimizer=schedule,
                                    num_steps=config.sft_steps, batch_size=config.sft_batch_size,
                                    eval_every=config.sft_steps, **common)}
  log(f'sft: {config.sft_steps} steps, final loss {results["sft"]["loss"]:.3f}')
  rollout = train_lib.Rollout(num_samples=config.samples_per_prompt,
                              max_new_tokens=config.max_new_tokens, sampler=sampler)
  for name, method in _arms(config).items():
    results[name] = train_lib.train(
        os.path.join(workdir, name), method=method, rollout=rollout,
        optimizer=train_lib.optimizer('adam', config.rl_learning_rate),
        init=train_lib.InitFrom(sft_dir), num_steps=config.rl_steps,
        batch_size=config.rl_prompts, eval_every=config.rl_steps, **common)
    log(f'{name}: {config.rl_steps} steps, train reward {results[name]["reward_mean"]:.3f}')

  ks = [k for k in (1, 2, 4, 8, 16, 32, 64) if k <= config.eval_n]
  report = {arm: {'ks': ks, 'pass_at_k': [results[arm][f'eval/pass@{k}'] for k in ks]}
            for arm in ARMS}
  _print_table(report, config, log)
  report['seconds'] = time.time() - start
  with open(os.path.join(workdir, 'results.json'), 'w', encoding='utf-8') as f:
    json.dump(report, f, indent=2)
  _plot(report, config, os.path.join(workdir, 'pass_at_k.png'))
  log(f'wrote {workdir}/results.json and pass_at_k.png in {report["seconds"]:.0f} s')
  return report


def _warmup_cosine(peak: float, steps: int) -> optax.Schedule:
  return optax.warmup_cosine_decay_schedule(0.0, peak, max(1, steps // 10), max(2, steps))


def _print_table(report, config, log):
  ks = report['sft']['ks']
  log(f'\npass@k on {config.num_test} test problems ({config.eval_n} samples each, '
      f'T={config.temperature}):')
  log('arm     ' + ''.join(f'{f"pass@{k}":>10}' for k in ks))
  for name in ARMS:
    log(f'{name:8s}' + ''.join(f'{v:10.3f}' for v in report[name]['pass_at_k']))


def _plot(report, config, path):
  import matplotlib  # pylint: disable=g-import-not-at-top  (optional, only for the figure)
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(5, 3.5))
  for name in ARMS:
    ax.plot(report[name]['ks'], report[name]['pass_at_k'], marker='o', label=name)
  ax.set_xscale('log', base=2)
  ax.set_xlabel('k (samples)')
  ax.set_ylabel('pass@k')
  ax.set_title(f'{config.dataset}: BoN-RL (n={config.bon_n}) vs RL')
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
