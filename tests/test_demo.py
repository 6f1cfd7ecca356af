"""The main job and the study it is, at a toy size; the command line that runs them."""

import dataclasses
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bonjax import demo, registry, study, train
from tests.helpers import REPO_ROOT, tiny_model
from tests.helpers import gin_cleared_at_repo_root  # noqa: F401  (autouse fixture)

ARMS = {'sft': study.Arm(train.Sft(), 3, 8, label='SFT'),
        'rl': study.Arm(train.PolicyGradient('rloo'), 1, 8, start='sft', label='RL'),
        'bon_rl': study.Arm(train.PolicyGradient('bon_rl_s', bon_n=2), 1, 8, start='sft')}


def _toy_demo(workdir, **kwargs):
  return demo.run_demo(
      str(workdir), model=tiny_model(vocab_size=340), task=demo.demo_task(64, 4), arms=ARMS,
      rollout=train.Rollout(num_samples=4, max_new_tokens=8), ns=(1, 2, 4), eval_samples=4,
      progress=False, **kwargs)


@pytest.mark.slow
def test_demo_trains_evaluates_compares_and_resumes(tmp_path):
  lines = []
  report = _toy_demo(tmp_path, log=lines.append)
  assert list(report['arms']) == ['sft', 'rl', 'bon_rl']
  for row in report['arms'].values():
    for metric in ('pass', 'bon'):
      cells = row[metric]
      assert [c['n'] for c in cells] == [1, 2, 4]
      means = [c['mean'] for c in cells]
      assert all(0.0 <= v <= 1.0 for v in means)
      assert all(c['ci_low'] <= c['mean'] <= c['ci_high'] for c in cells)
    assert [c['mean'] for c in row['pass']] == sorted(c['mean'] for c in row['pass'])
  # Each arm's figures are its evaluation's: pass@N there equals the report's.
  for name in ARMS:
    with open(tmp_path / 'seed_0' / name / 'eval' / 'eval.json') as f:
      saved = json.load(f)
    assert saved['summary']['pass']['mean'][0] == [c['mean'] for c in report['arms'][name]['pass']]
  pairs = {(d['a'], d['b'], d['metric'], d['n']) for d in report['differences']}
  assert ('bon_rl', 'rl', 'pass', 4) in pairs and len(pairs) == 3 * 2 * 3
  for suffix in ('.json', '.md', '.png', '_differences.png'):
    assert (tmp_path / f'study{suffix}').stat().st_size > 100
  assert any(line.startswith('pass@4: ') and '95% CI' in line for line in lines)
  assert any('| pass@N: RL - SFT |' in line for line in '\n'.join(lines).splitlines())
  # A second call finds every run and evaluation done: it only recomputes the report.
  lines.clear()
  again = _toy_demo(tmp_path, log=lines.append)
  assert again['arms'] == json.loads(json.dumps(report['arms']))


def test_a_study_names_what_is_wrong_with_its_arms(tmp_path):
  kwargs = dict(model=tiny_model(vocab_size=340), task=demo.demo_task(64, 4), reward=None)
  with pytest.raises(ValueError, match="starts from 'sfx', which is not an arm"):
    study.run_study(str(tmp_path), arms={'rl': study.Arm(train.Sft(), 1, 8, start='sfx')},
                    **kwargs)
  with pytest.raises(ValueError, match='cycle: a <- b <- a'):
    study.run_study(str(tmp_path), arms={'a': study.Arm(train.Sft(), 1, 8, start='b'),
                                         'b': study.Arm(train.Sft(), 1, 8, start='a')}, **kwargs)
  with pytest.raises(ValueError, match='a comparison is a pair of arm names'):
    study.run_study(str(tmp_path), arms=ARMS, comparisons=[('rl', 'ppo')], **kwargs)
  with pytest.raises(ValueError, match='N = 64 is larger than the 32 samples'):
    study.run_study(str(tmp_path), arms=ARMS, ns=(1, 64), eval_samples=32, **kwargs)
  assert not os.listdir(tmp_path)


def test_training_order_puts_each_arm_after_its_start():
  arms = {'c': study.Arm(train.Sft(), 1, 1, start='b'), 'a': study.Arm(train.Sft(), 1, 1),
          'b': study.Arm(train.Sft(), 1, 1, start='a')}
  assert study.training_order(arms) == ['a', 'b', 'c']


def _cli(*args, cwd):
  return subprocess.run([sys.executable, '-m', 'bonjax.main', *args], cwd=cwd,
                        capture_output=True, text=True, timeout=120,
                        env=dict(os.environ, JAX_PLATFORMS='cpu'))


def test_cli_rejects_unknown_commands_and_missing_workdir(tmp_path):
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  result = _cli('trian', f'--workdir={tmp_path}', cwd=root)
  assert result.returncode != 0
  assert 'expected one command, one of: train, ' in result.stderr and 'got trian' in result.stderr
  result = _cli('demo', cwd=root)
  assert result.returncode != 0
  assert '--workdir is required' in result.stderr


def test_cli_names_a_wrong_gin_binding(tmp_path):
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  result = _cli('demo', f'--workdir={tmp_path}', '--gin_bindings=run_demo.seedz = (1,)',
                cwd=root)
  assert result.returncode != 0
  assert 'seedz' in result.stderr
  assert not os.listdir(tmp_path)  # nothing was started


REPRODUCE = sorted(glob.glob(os.path.join(REPO_ROOT, 'experiments', 'arith', 'reproduce', '*.gin')))


@pytest.mark.parametrize('path', [os.path.relpath(p, REPO_ROOT) for p in REPRODUCE
                                  if not p.endswith('base.gin')])
def test_reproduction_studies_build(path, tmp_path):
  registry.parse_config([path], ['run_study.dry_run = True'])
  plan = registry.run_study(str(tmp_path / 'never_written'))
  assert plan['order'][0] == 'sft' and len(plan['run_dirs']) == 3 * len(plan['order'])
  assert not (tmp_path / 'never_written').exists()


def test_demo_gin_spells_out_the_defaults(tmp_path, monkeypatch):
  """experiments/arith/demo.gin builds the objects `bonjax demo` uses without it."""
  calls = []
  monkeypatch.setattr(demo, 'run_study', lambda workdir, **kwargs: calls.append(kwargs) or {
      'arms': {}, 'differences': [], 'ns': [1]})
  demo.run_demo(str(tmp_path), log=lambda line: None)
  registry.parse_config(['experiments/arith/demo.gin'])
  registry.run_demo(str(tmp_path))
  default, configured = calls
  assert set(default) == set(configured)
  for key in set(default) - {'log', 'progress'}:
    if key == 'arms':
      assert list(default['arms']) == list(configured['arms'])
      for name, arm in default['arms'].items():
        other = configured['arms'][name]
        assert dataclasses.replace(arm, optimizer=None) == dataclasses.replace(other,
                                                                               optimizer=None)
        assert _updates(arm.optimizer) == _updates(other.optimizer), name
    elif key == 'task':  # (tfds builder configs compare by identity)
      assert dataclasses.replace(default[key], config=None) == dataclasses.replace(
          configured[key], config=None)
      assert repr(default[key].config) == repr(configured[key].config)
    elif key == 'comparisons':
      assert [tuple(c) for c in default[key]] == [tuple(c) for c in configured[key]]
    elif key in ('verifier', 'reward'):
      assert repr(default[key]) == repr(configured[key]) or vars(default[key]).keys() == vars(
          configured[key]).keys(), key
    else:
      assert default[key] == configured[key], key


def _updates(tx, steps=12):
  """The optimizer's first updates of a toy parameter (equal optimizers, equal updates)."""
  params = {'w': np.linspace(-1.0, 1.0, 4, dtype=np.float32)}
  state, out = tx.init(params), []
  for step in range(steps):
    grads = {'w': np.cos(params['w'] * (step + 1))}
    updates, state = tx.update(grads, state, params)
    out.append(np.asarray(updates['w']).round(7).tolist())
  return out
