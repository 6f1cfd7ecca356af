"""`bonjax eval` and `bonjax sample` on trained runs: arithmetic end to end, and HumanEval offline."""

import json
import os
import subprocess
import sys

import gin
import numpy as np
import pytest

from bonjax import evaluation, objectives, registry
from tests import helpers
from tests.helpers import gin_cleared_at_repo_root  # noqa: F401  (autouse fixture)

SFT = 'experiments/arith/sft.gin'


@pytest.fixture(scope='module')
def arith_run(tmp_path_factory):
  """A two-step SFT run of experiments/arith/sft.gin, tiny (the training issue's bindings)."""
  workdir = tmp_path_factory.mktemp('arith_run')
  gin.clear_config()
  registry.parse_config([os.path.join(helpers.REPO_ROOT, SFT)], list(helpers.TINY_ARITH_BINDINGS)
                        + [f"Task.data_dir = '{workdir}/data'"])
  registry.train(workdir=str(workdir))
  gin.clear_config()
  return str(workdir)


def _cli(*args):
  return subprocess.run([sys.executable, '-m', 'bonjax.main', *args], cwd=helpers.REPO_ROOT,
                        capture_output=True, text=True, timeout=600,
                        env=dict(os.environ, JAX_PLATFORMS='cpu'))


def test_bonjax_eval_writes_eval_json_plots_and_samples_that_agree(arith_run):
  result = _cli('eval', f'--workdir={arith_run}', '--n=1,2,4', '--temperature=0.5,1.0',
                '--num_problems=6', '--gin_bindings=evaluate.batch_size = 4')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'pass@N' in result.stdout and 'T*(N)' in result.stdout
  out_dir = os.path.join(arith_run, 'eval', 'test-step2')
  for name in ('eval.json', 'curves.png', 'heatmap.png', 't_star.png'):
    assert os.path.getsize(os.path.join(out_dir, name)) > 0, name
  results = evaluation.EvalResults.load(out_dir)
  samples = evaluation.load_samples(out_dir)
  assert results.info['step'] == 2 and len(results.problem_indices) == 6
  for ti, t in enumerate(results.temperatures):
    rewards = np.array([r['rewards'] for r in samples if r['temperature'] == t])
    np.testing.assert_allclose(results.summary['pass']['mean'][ti],
                               np.mean(objectives.pass_at_k(rewards > 0.5, [1, 2, 4]), 0),
                               rtol=1e-6)


def test_bonjax_sample_writes_scored_samples(arith_run, tmp_path):
  prompts = tmp_path / 'prompts.jsonl'
  prompts.write_text('\n'.join(json.dumps(line) for line in [
      {'question': 'Tom has 3 apples. He buys 2 more. How many apples does Tom have now?',
       'answer': '5'},
      {'question': 'Ann has 7 pens. She buys 1 more. How many pens does Ann have now?',
       'answer': '8'}]))
  out = registry.sample_run(arith_run, prompts=str(prompts), n=3, temperatures=[0.8])
  lines = [json.loads(line) for line in open(out)]
  assert len(lines) == 6 and {l['prompt_index'] for l in lines} == {0, 1}
  assert all(l['reward'] in (0.0, 1.0) and isinstance(l['completion'], str) for l in lines)
  assert lines[0]['prompt'].startswith('Tom has 3 apples')


def test_eval_and_sample_errors_are_one_line(arith_run, tmp_path):
  for args, message in [
      (('eval', f'--workdir={tmp_path}/nope'), 'no run directory'),
      (('eval', f'--workdir={tmp_path}'), 'not a bonjax run directory (no run.json)'),
      (('eval', f'--workdir={arith_run}', '--n=1,8', '--gin_bindings=evaluate.num_samples = 4'),
       'N = 8 is larger than the 4 samples'),
      (('eval', f'--workdir={arith_run}', '--temperature=0.5,-0.1'), 'temperatures must be >= 0'),
      (('eval', f'--workdir={arith_run}', '--temperature='), 'temperature list is empty'),
      (('eval', f'--workdir={arith_run}', '--verifier=code_execution'), "field, which the verifier "
                                                                        "'code_execution' needs"),
  ]:
    result = _cli(*args)
    assert result.returncode == 2, (args, result.stderr[-2000:])
    assert message in result.stderr and 'Traceback' not in result.stderr, (args, result.stderr)


@pytest.mark.slow
def test_humaneval_with_the_code_verifier_runs_offline(tmp_path):
  """A tiny SFT policy on HumanEval, evaluated by running its completions in the sandbox."""
  bindings = [
      'train.method = @Sft()', 'train.task = @Task()', "Task.dataset = 'humaneval'",
      "Task.train_split = 'test[:100]'", "Task.eval_split = 'test[100:]'",
      f"Task.data_dir = '{tmp_path}/data'", 'Task.vocab_size = 512', 'Task.max_prompt_len = 96',
      'Task.max_target_len = 32', 'train.model = @model()', "model.preset = 'tiny'",
      'model.vocab_size = 512', 'model.num_layers = 1', 'train.num_steps = 2',
      'train.batch_size = 8', 'train.progress = False', 'train.rollout = @Rollout()',
      'Rollout.max_new_tokens = 16', 'train.reward = @code_execution()',
      'code_execution.timeout_s = 10.0', 'code_execution.max_workers = 2']
  registry.parse_config([], bindings)
  registry.train(workdir=str(tmp_path / 'run'))
  results = registry.evaluate_run(str(tmp_path / 'run'), ns=[1, 2], temperatures=[1.0],
                                  num_problems=3,
                                  bindings=['evaluate.batch_size = 3', 'evaluate.progress = False'])
  assert results.info['dataset'] == 'humaneval' and results.info['reward'] == 'code_execution'
  assert set(results.metrics) == {'pass', 'bon', 'max'}  # no final answers to vote on in code
  assert 0.0 <= results.mean('pass', 2, 1.0) <= 1.0
  samples = evaluation.load_samples(results.info['out_dir'])
  assert len(samples) == 3 and all(len(r['completions']) == 2 for r in samples)
