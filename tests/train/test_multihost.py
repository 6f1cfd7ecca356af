"""Training on several processes: 2 processes x 4 CPU devices train exactly as 1 process x 8.

One job of two processes (`jax.distributed` on localhost, gloo CPU collectives) and one reference
process run tests/train/_multihost_worker.py: SFT for 4 steps (the job stops after 2 and resumes
from its checkpoint) and BoN-RL-S with rollouts and evaluation for 2 steps, on the mesh
'data:4,fsdp:2' over 8 devices, in run directories that the job prepares itself (dataset,
tokenizer). Every logged number must agree with the reference, and each process must have read
only its half of each global batch.
"""

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from bonjax.train import metrics as metrics_lib
from tests import helpers

pytestmark = pytest.mark.slow

WORKER = os.path.join(helpers.REPO_ROOT, 'tests', 'train', '_multihost_worker.py')
TIMEOUT_S = 1200  # the whole job on a busy 2-core machine; it takes about 3 minutes alone
BATCH_SIZE = 16  # as the worker's runs
# The job trains SFT to step 2, then resumes it from that checkpoint to step 4.
REFERENCE_RUNS = [dict(workdir='sft', method='sft', num_steps=4),
                  dict(workdir='bon_rl_s', method='bon_rl_s', num_steps=2)]
JOB_RUNS = [dict(workdir='sft', method='sft', num_steps=2),
            dict(workdir='sft', method='sft', num_steps=4),
            dict(workdir='bon_rl_s', method='bon_rl_s', num_steps=2)]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _start(root, name: str, runs, *, process_id: int, num_processes: int, local_devices: int,
           port: int) -> dict:
  """Starts one worker process, its output going to a log file (no pipe to fill up)."""
  spec = dict(process_id=process_id, num_processes=num_processes,
              coordinator=f'localhost:{port}', local_devices=local_devices,
              root=str(root / name), runs=runs, result=str(root / f'{name}.{process_id}.json'))
  log_path = root / f'{name}.{process_id}.log'
  with open(log_path, 'w', encoding='utf-8') as log:
    # Its own session: a failure kills the worker and anything it started, nothing else.
    process = subprocess.Popen(
        [sys.executable, WORKER, json.dumps(spec)], cwd=helpers.REPO_ROOT, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True,
        env=dict(os.environ, PYTHONPATH=helpers.REPO_ROOT))
  return dict(process=process, spec=spec, log=log_path, label=f'{name} process {process_id}')


def _kill(workers) -> None:
  for worker in workers:
    if worker['process'].poll() is None:
      os.killpg(worker['process'].pid, signal.SIGKILL)
      worker['process'].wait()


def _failure(workers, reason: str) -> str:
  tails = []
  for worker in workers:
    with open(worker['log'], encoding='utf-8', errors='replace') as f:
      lines = [line for line in f.read().splitlines() if 'Involuntary full rematerialization'
               not in line]
    tails.append(f'--- {worker["label"]} (exit {worker["process"].returncode}), last lines:\n'
                 + '\n'.join(lines[-40:]))
  return reason + '\n' + '\n'.join(tails)


def _wait(workers, timeout_s: float) -> list[dict]:
  """Every worker's result; the first failure (or the timeout) kills them all and fails."""
  deadline = time.monotonic() + timeout_s
  try:
    while any(w['process'].poll() is None for w in workers):
      failed = [w for w in workers if w['process'].poll() not in (None, 0)]
      if failed:
        _kill(workers)
        pytest.fail(_failure(workers, f'{failed[0]["label"]} failed'))
      if time.monotonic() > deadline:
        _kill(workers)
        pytest.fail(_failure(workers, f'the workers did not finish within {timeout_s} s'))
      time.sleep(0.5)
  finally:
    _kill(workers)
  failed = [w for w in workers if w['process'].returncode != 0]
  if failed:
    pytest.fail(_failure(workers, f'{failed[0]["label"]} failed'))
  results = []
  for worker in workers:
    with open(worker['spec']['result'], encoding='utf-8') as f:
      results.append(json.load(f))
  return results


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """(the reference's result, [the job's results by process], root directory).

  The job (about two minutes) runs once per test session: under pytest -n, the first worker to
  get one of these tests runs it in the workers' shared temporary directory, holding a lock, and
  any other worker that gets one waits for its results instead of starting the job again.
  """
  base = tmp_path_factory.getbasetemp()
  shared = base.parent if os.environ.get('PYTEST_XDIST_WORKER') else base
  root, done = shared / 'multihost', shared / 'multihost' / 'results.json'
  with open(shared / 'multihost.lock', 'w', encoding='utf-8') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
    if not done.exists():
      root.mkdir(exist_ok=True)
      port = _free_port()
      workers = [_start(root, 'reference', REFERENCE_RUNS, process_id=0, num_processes=1,
                        local_devices=8, port=port)]
      workers += [_start(root, 'job', JOB_RUNS, process_id=i, num_processes=2, local_devices=4,
                         port=port) for i in range(2)]
      reference, *job = _wait(workers, TIMEOUT_S)
      done.write_text(json.dumps([reference, job]), encoding='utf-8')
    reference, job = json.loads(done.read_text(encoding='utf-8'))
  return reference, job, root


def _comparable(records):
  """Every logged number except wall-clock measurements."""
  return [{k: v for k, v in r.items() if 'seconds' not in k and 'per_second' not in k}
          for r in records]


def _assert_same_metrics(got, expected):
  assert [r['step'] for r in got] == [r['step'] for r in expected]
  for got_step, expected_step in zip(_comparable(got), _comparable(expected)):
    assert sorted(got_step) == sorted(expected_step)
    for name, value in expected_step.items():
      np.testing.assert_allclose(got_step[name], value, rtol=1e-5, atol=1e-5,
                                 err_msg=f'{name} at step {expected_step["step"]}')


def test_the_job_is_two_processes_of_four_devices(runs):
  reference, job, _ = runs
  assert [(r['process_index'], r['process_count']) for r in job] == [(0, 2), (1, 2)]
  assert [(r['device_count'], r['local_device_count']) for r in job] == [(8, 4), (8, 4)]
  assert (reference['process_count'], reference['device_count']) == (1, 8)


def test_sft_losses_equal_one_process_across_a_resume(runs):
  _, job, root = runs
  expected = metrics_lib.read_metrics(str(root / 'reference' / 'sft'))
  got = metrics_lib.read_metrics(str(root / 'job' / 'sft'))  # process 0 wrote it
  assert [r['step'] for r in got] == [1, 2, 3, 4]
  _assert_same_metrics(got, expected)
  assert all(r['loss'] > 0 for r in got)
  # Both processes return the same (global) metrics.
  assert _comparable([job[0]['runs'][-2]['last']]) == _comparable([job[1]['runs'][-2]['last']])


def test_policy_gradient_rollouts_equal_one_process(runs):
  _, job, root = runs
  expected = metrics_lib.read_metrics(str(root / 'reference' / 'bon_rl_s'))
  got = metrics_lib.read_metrics(str(root / 'job' / 'bon_rl_s'))
  _assert_same_metrics(got, expected)
  for name in ('loss', 'reward_mean', 'pass@4', 'bon@2', 'kl_to_init', 'entropy_per_token',
               'eval/pass@4'):
    assert name in got[-1], name
  assert _comparable([job[0]['runs'][-1]['last']]) == _comparable([job[1]['runs'][-1]['last']])


@pytest.mark.parametrize('run', ['sft', 'bon_rl_s'])
def test_each_process_reads_only_its_half_of_each_batch(runs, run):
  reference, job, _ = runs
  expected = [r['reads'] for r, spec in zip(reference['runs'], REFERENCE_RUNS)
              if spec['workdir'] == run]
  expected = [step for reads in expected for step in reads]
  by_process = [[step for r, spec in zip(result['runs'], JOB_RUNS) if spec['workdir'] == run
                 for step in r['reads']] for result in job]
  assert len(by_process[0]) == len(by_process[1]) == len(expected)
  for step, (first, second, whole) in enumerate(zip(*by_process, expected)):
    assert len(first) == len(second) == BATCH_SIZE // 2, step
    assert not set(first) & set(second), step
    assert first + second == whole, step  # process p holds rows [p * 8, (p + 1) * 8)


def test_process_zero_prepared_the_shared_run_directory(runs):
  _, _, root = runs
  for run in ('sft', 'bon_rl_s'):
    job_dir, reference_dir = root / 'job' / run, root / 'reference' / run
    # One prepared dataset (no half-written copy of a second preparation) and one tokenizer,
    # the same as the reference trained: the token ids mean the same on both.
    prepared = os.listdir(job_dir / 'data' / 'bonjax_arith' / 'multihost_test')
    assert prepared == ['1.0.0'], prepared
    assert (job_dir / 'tokenizer.model').read_bytes() == (
        reference_dir / 'tokenizer.model').read_bytes()
    with open(job_dir / 'run.json', encoding='utf-8') as f:
      assert json.load(f)['num_steps'] == (4 if run == 'sft' else 2)
  assert sorted(os.listdir(root / 'job' / 'sft' / 'checkpoints')) == ['2', '4']
