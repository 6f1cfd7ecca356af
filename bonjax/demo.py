"""The main job: a small Best-of-N study that runs on a laptop CPU in a few minutes.

    bonjax_strategies (generated) --`train` Sft--------------------> pi_0    <workdir>/seed_0/sft
      --`train` PolicyGradient('rloo')------------------------------> pi_rl   .../rl
      --`train` PolicyGradient('bon_rl_s', bon_n=4), verifier picks --> pi_bon  .../bon_rl
    each evaluated by `bonjax.evaluation` with 32 samples per test problem: pass@N and BoN@N for
    N = 1..32 with 95% intervals, and BoN-RL - RL, BoN-RL - SFT, RL - SFT paired over problems

A study (bonjax/study.py) with three arms, nothing more: the runs are ordinary run directories
(resumable, with metrics.jsonl and TensorBoard files), and the demo resumes where it stopped. Both
RL arms start from the same pi_0, see the same prompts and the same sample keys, with the same
budget (80 steps x 16 prompts x 8 samples); they differ only in the method's per-sample weights
(docs/bon_math.md §5.1, §5.2). BoN-RL-S selects the best of n = 4 by a verifier with errors
(answer match with 10% of verdicts flipped, plus noise) and credits the pick with the task reward
(exact answer match); BoN@N selects by that verifier too.

The task, `bonjax_strategies` (bonjax/data/strategies.py), is designed for this and says so: each
problem's answer follows one of three rules of reliability 0.5 / 0.3 / 0.2, and the question does
not say which. Standard RL should converge on the most reliable rule (pass@1 up, pass@N down
towards 0.5); BoN-aware RL should keep the rules spread over its samples (pass@N up).

Every object is a gin binding (experiments/arith/demo.gin spells them all out); the defaults
here are the same objects.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optax

from bonjax import data, models, sampling, verifiers
from bonjax import train as train_lib
from bonjax.study import Arm, run_study

COMPARISONS = (('bon_rl', 'rl'), ('bon_rl', 'sft'), ('rl', 'sft'))


def demo_model(vocab_size: int = 340) -> models.Transformer:
  """A 0.6M-parameter decoder (3 layers, width 128)."""
  return models.Transformer(dataclasses.replace(
      models.get_config('tiny'), vocab_size=vocab_size, num_layers=3, embed_dim=128,
      num_heads=4, num_kv_heads=2, head_dim=32, mlp_dim=384))


def demo_task(num_train: int = 4000, num_test: int = 256, seed: int = 0) -> data.Task:
  return data.Task('bonjax_strategies', config=data.StrategiesConfig(
      name=f'demo_{num_train}_{num_test}_{seed}', seed=seed, num_train=num_train,
      num_test=num_test), vocab_size=340, max_prompt_len=16, max_target_len=24)


def demo_verifier() -> verifiers.VerifierProtocol:
  """Answer match with errors: 10% of verdicts flipped, Gaussian noise of scale 0.1."""
  return verifiers.get('noisy', verifier='answer_match', flip_prob=0.1, noise_std=0.1, seed=0)


def demo_arms(sft_steps: int = 300, rl_steps: int = 80, prompts_per_step: int = 16,
              bon_n: int = 4, sft_learning_rate: float = 3e-3,
              rl_learning_rate: float = 1e-4) -> dict[str, Arm]:
  sft_schedule = optax.warmup_cosine_decay_schedule(
      0.0, sft_learning_rate, max(1, sft_steps // 10), max(2, sft_steps))
  rl_optimizer = train_lib.optimizer('adam', rl_learning_rate)
  return {
      'sft': Arm(train_lib.Sft(), sft_steps, 32, label='SFT',
                 optimizer=train_lib.optimizer('adamw', sft_schedule, weight_decay=0.01)),
      'rl': Arm(train_lib.PolicyGradient('rloo'), rl_steps, prompts_per_step, start='sft',
                optimizer=rl_optimizer, label='RL'),
      'bon_rl': Arm(train_lib.PolicyGradient('bon_rl_s', bon_n=bon_n), rl_steps,
                    prompts_per_step, start='sft', optimizer=rl_optimizer,
                    label=f'BoN-RL-S (n={bon_n})')}


def run_demo(workdir: str, *, model: models.Transformer | None = None,
             task: data.Task | None = None, arms: Mapping[str, Arm] | None = None,
             reward: verifiers.VerifierProtocol | None = None,
             verifier: verifiers.VerifierProtocol | None = None,
             rollout: train_lib.Rollout | None = None,
             comparisons: Sequence[Sequence[str]] = COMPARISONS, seeds: Sequence[int] = (0,),
             ns: Sequence[int] = (1, 2, 4, 8, 16, 32), eval_samples: int = 32,
             eval_problems: int | None = None, progress: bool = True,
             log: Callable[[str], None] = print) -> dict[str, Any]:
  """Runs the demo study (None: the object this module's demo_* functions build)."""
  model = model or demo_model()
  task = task or demo_task()
  rollout = rollout or train_lib.Rollout(num_samples=8, max_new_tokens=task.max_target_len,
                                         sampler=sampling.Temperature(1.0))
  log(f'model: {models.param_count(model.config):,} parameters; task: {task.dataset}')
  report = run_study(workdir, model=model, task=task, arms=arms or demo_arms(),
                     reward=reward or verifiers.AnswerMatch(), verifier=verifier or demo_verifier(),
                     rollout=rollout, comparisons=comparisons, seeds=seeds, ns=ns,
                     temperatures=(rollout.sampler.temperature,), eval_samples=eval_samples,
                     eval_problems=eval_problems, checkpoint_every=50, progress=progress, log=log)
  for line in headline(report):
    log(line)
  return report


def headline(report: dict[str, Any]) -> list[str]:
  """One line per comparison: its pass@N difference at the smallest and the largest N."""
  labels = {name: row['label'] for name, row in report['arms'].items()}
  lines = []
  for d in report['differences']:
    if d['metric'] == 'pass' and d['n'] in (report['ns'][0], report['ns'][-1]):
      verdict = ('above' if d['ci_low'] > 0 else 'below' if d['ci_high'] < 0 else
                 'within noise of')
      lines.append(f'pass@{d["n"]}: {labels[d["a"]]} is {verdict} {labels[d["b"]]} '
                   f'({d["mean"]:+.3f}, 95% CI [{d["ci_low"]:+.3f}, {d["ci_high"]:+.3f}])')
  return lines
