"""The training loop end to end: it runs, logs, resumes exactly, and refuses bad input clearly."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from bonjax import data, train, verifiers
from bonjax.train import metrics as metrics_lib
from tests import helpers
from tests.helpers import gin_cleared_at_repo_root  # noqa: F401  (autouse fixture)

VOCAB = 320
BON_RL_V = 'experiments/arith/bon_rl_v.gin'


@pytest.fixture(scope='module')
def task(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp('data')
  return data.Task(config=data.ArithConfig(name='loop_test', num_train=64, num_test=8),
                   data_dir=str(data_dir), vocab_size=VOCAB, max_prompt_len=40,
                   max_target_len=24)


def _model():
  return helpers.tiny_model(vocab_size=VOCAB, num_layers=1, embed_dim=32, num_heads=2,
                            num_kv_heads=1, head_dim=16, mlp_dim=64)


def _run(workdir, task, **kwargs):
  defaults = dict(model=_model(), method=train.Sft(), task=task, num_steps=3, batch_size=8,
                  optimizer=train.optimizer('adam', 1e-3), checkpoint_every=2, progress=False)
  return train.train(str(workdir), **dict(defaults, **kwargs))


def test_sft_trains_logs_and_continues_to_more_steps(tmp_path, task):
  last = _run(tmp_path, task)
  assert last['step'] == 3 and np.isfinite(last['loss'])
  logged = metrics_lib.read_metrics(str(tmp_path))
  assert [r['step'] for r in logged] == [1, 2, 3]
  assert os.listdir(tmp_path / 'tensorboard')
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['2', '3']
  # Raising num_steps continues the same run from its last checkpoint.
  last = _run(tmp_path, task, num_steps=4)
  assert [r['step'] for r in metrics_lib.read_metrics(str(tmp_path))] == [1, 2, 3, 4]


def test_rl_with_a_scripted_verifier_logs_bon_metrics(tmp_path, task):
  # The verifier prefers short completions; the task reward is exact answer match.
  verifier = helpers.Scripted(lambda p, c, m: -len(c))
  last = _run(tmp_path, task, method=train.PolicyGradient('bon_rl_s', bon_n=2),
              rollout=train.Rollout(num_samples=4, max_new_tokens=6, chunks=2),
              verifier=verifier, reward=verifiers.AnswerMatch(), num_steps=2, eval_every=2,
              eval_prompts=4)
  for key in ('pass@1', 'pass@4', 'bon@2', 'all_wrong_groups', 'entropy_per_token',
              'kl_to_init', 'truncated_fraction', 'seconds/sampling', 'seconds/verifying',
              'seconds/updating', 'seconds/device_idle', 'sampled_tokens_per_second',
              'eval/pass@4'):
    assert key in last, key


def test_the_update_streamed_over_the_rollout_chunks_is_the_microbatched_one(tmp_path, task,
                                                                             capsys):
  """Rollout.chunks = 2 with 2 microbatches: each chunk's gradient is taken as soon as it is
  scored (while the next is verified), and the run is the one that waits for the whole rollout."""
  def run(name, chunks):
    _run(tmp_path / name, task, method=train.PolicyGradient('rloo'), batch_size=16,
         microbatches=2, rollout=train.Rollout(num_samples=2, max_new_tokens=6, chunks=chunks),
         reward=verifiers.AnswerMatch(), num_steps=2)
    return metrics_lib.read_metrics(str(tmp_path / name))

  waits, streams = run('waits', 1), run('streams', 2)
  assert 'the update waits' not in capsys.readouterr().err
  for waited, streamed in zip(waits, streams, strict=True):
    assert waited['pass@2'] == streamed['pass@2']
    np.testing.assert_allclose(streamed['loss'], waited['loss'], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(streamed['grad_norm'], waited['grad_norm'], rtol=1e-4)
  # 16 prompts in 2 chunks of 8 on the 8 batch shards, but 1 microbatch cannot be split.
  _run(tmp_path / 'one', task, method=train.PolicyGradient('rloo'), batch_size=16,
       rollout=train.Rollout(num_samples=2, max_new_tokens=6, chunks=2),
       reward=verifiers.AnswerMatch(), num_steps=1)
  assert 'make train.microbatches a multiple of 2 (it is 1)' in capsys.readouterr().err


@pytest.mark.parametrize('kwargs, message', [
    (dict(method=train.PolicyGradient('bon_rl_s', bon_n=8)),
     'optimizes BoN with n = 8, more than the 4 samples'),
    (dict(method=train.PolicyGradient('bon_rl_v', bon_n=2), verifier=None),
     'selects by verifier scores, but no verifier is configured'),
    (dict(method=train.PolicyGradient('rloo'), reward=None),
     'learns from the task reward, but none is configured'),
    (dict(num_steps=0), 'train.num_steps must be a positive int'),
])
def test_configuration_errors_are_named_before_anything_is_written(tmp_path, task, kwargs,
                                                                   message):
  kwargs = dict(dict(rollout=train.Rollout(num_samples=4), verifier=verifiers.AnswerMatch(),
                     reward=verifiers.AnswerMatch()), **kwargs)
  with pytest.raises(ValueError, match=message):
    _run(tmp_path / 'run', task, **kwargs)
  assert not (tmp_path / 'run').exists()


def test_nan_scores_stop_the_run_naming_the_verifier(tmp_path, task):
  with pytest.raises(ValueError, match=r"verifier 'scripted' returned 16 non-finite score\(s\) "
                                       r"of 16, at \(prompt, sample\) \(0, 0\): nan"):
    _run(tmp_path, task, method=train.PolicyGradient('rl_v'),
         rollout=train.Rollout(num_samples=2, max_new_tokens=4),
         verifier=helpers.Scripted(lambda p, c, m: float('nan')), num_steps=1)


def test_foreign_and_other_model_workdirs_are_refused(tmp_path, task):
  (tmp_path / 'foreign').mkdir()
  (tmp_path / 'foreign' / 'notes.txt').write_text('mine')
  with pytest.raises(train.RunDirectoryError, match='not a bonjax run directory'):
    _run(tmp_path / 'foreign', task)
  assert os.listdir(tmp_path / 'foreign') == ['notes.txt']
  _run(tmp_path / 'run', task, num_steps=1)
  wider = dataclasses.replace(_model().config, embed_dim=48)
  with pytest.raises(train.RunDirectoryError, match=r"different model config \(differs in "
                                                    r"\['embed_dim'\]\)"):
    _run(tmp_path / 'run', task, model=type(_model())(wider))


def _cli(*args, timeout=600):
  return subprocess.run([sys.executable, '-m', 'bonjax.main', *args], cwd=helpers.REPO_ROOT,
                        capture_output=True, text=True, timeout=timeout,
                        env=dict(os.environ, JAX_PLATFORMS='cpu'))


def test_cli_errors_are_one_line_and_write_nothing(tmp_path):
  result = _cli('train', f'--workdir={tmp_path}/a', f'--gin_file={BON_RL_V}',
                '--gin_bindings=train.num_stepz = 3')
  assert result.returncode != 0 and 'num_stepz' in result.stderr
  result = _cli('train', f'--workdir={tmp_path}/b', f'--gin_file={BON_RL_V}',
                "--gin_bindings=model.preset = 'gemma_3b'")
  assert result.returncode == 2, result.stderr[-3000:]
  assert "error: ValueError: unknown model preset 'gemma_3b'" in result.stderr
  assert 'Traceback' not in result.stderr
  result = _cli('train', f'--workdir={tmp_path}/c', f'--gin_file={BON_RL_V}',
                "--gin_bindings=PolicyGradient.weights = 'bon_rl'")
  assert result.returncode == 2 and "unknown weights 'bon_rl'" in result.stderr
  assert not os.listdir(tmp_path)


def _comparable(records):
  """Every logged number except wall-clock measurements."""
  drop = ('seconds/', 'tokens_per_second')
  return [{k: v for k, v in r.items() if not any(d in k for d in drop)} for r in records]


@pytest.mark.slow
def test_killed_mid_save_the_run_resumes_bit_for_bit(tmp_path):
  bindings = list(helpers.TINY_ARITH_BINDINGS) + list(helpers.TINY_WARM_START_BINDINGS) + [
      'train.num_steps = 5', 'train.checkpoint_every = 2', f"Task.data_dir = '{tmp_path}/data'"]
  flags = [f'--gin_file={BON_RL_V}'] + [f'--gin_bindings={b}' for b in bindings]
  reference = _cli('train', f'--workdir={tmp_path}/reference', *flags)
  assert reference.returncode == 0, reference.stderr[-3000:]

  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=helpers.REPO_ROOT)
  killed = subprocess.run(
      [sys.executable, os.path.join(helpers.REPO_ROOT, 'tests/train/_train_and_die.py'),
       f'{tmp_path}/run', '4', BON_RL_V, *bindings], cwd=helpers.REPO_ROOT, env=env,
      capture_output=True, text=True, timeout=600)
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
  assert 'killed while saving step 4' in killed.stdout
  assert metrics_lib.read_metrics(f'{tmp_path}/run')[-1]['step'] == 4

  resumed = _cli('train', f'--workdir={tmp_path}/run', *flags)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert 'resumed' in resumed.stderr and 'from step 2' in resumed.stderr
  expected = _comparable(metrics_lib.read_metrics(f'{tmp_path}/reference'))
  got = _comparable(metrics_lib.read_metrics(f'{tmp_path}/run'))
  assert [r['step'] for r in got] == [1, 2, 3, 4, 5]
  assert got == expected  # every loss and metric, bit for bit


@pytest.mark.slow
def test_sigterm_saves_the_current_step_and_exits_zero(tmp_path):
  bindings = list(helpers.TINY_ARITH_BINDINGS) + [
      'train.num_steps = 500', 'train.checkpoint_every = 1000',
      f"Task.data_dir = '{tmp_path}/data'"]
  command = [sys.executable, '-m', 'bonjax.main', 'train', f'--workdir={tmp_path}/run',
             '--gin_file=experiments/arith/sft.gin'] + [f'--gin_bindings={b}' for b in bindings]
  process = subprocess.Popen(command, cwd=helpers.REPO_ROOT, stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, JAX_PLATFORMS='cpu'))
  deadline = time.monotonic() + 300
  while not metrics_lib.read_metrics(f'{tmp_path}/run') and time.monotonic() < deadline:
    time.sleep(0.5)
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=300)
  assert process.returncode == 0, stderr[-3000:]
  assert 'SIGTERM: saved step' in stderr
  steps = sorted(int(s) for s in os.listdir(f'{tmp_path}/run/checkpoints') if s.isdigit())
  assert len(steps) == 1 and 1 <= steps[0] < 500
  with open(f'{tmp_path}/run/run.json') as f:
    assert 'train.num_steps = 500' in json.load(f)['gin_config']


def test_a_padded_vocabulary_is_never_sampled_beyond_the_tokenizer(tmp_path, task):
  model = helpers.tiny_model(vocab_size=VOCAB + 64, num_layers=1, embed_dim=32, num_heads=2,
                             num_kv_heads=1, head_dim=16, mlp_dim=64)
  last = _run(tmp_path, task, model=model, method=train.PolicyGradient('rloo'),
              rollout=train.Rollout(num_samples=2, max_new_tokens=16),
              reward=verifiers.AnswerMatch(), num_steps=1)
  assert np.isfinite(last['loss'])
