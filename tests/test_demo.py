"""The end-to-end demo and the command line that runs it, at a toy size."""

import json
import os
import subprocess
import sys

import pytest

from bonjax import demo

TOY = demo.DemoConfig(num_train=64, num_test=4, vocab_size=340, num_layers=1, embed_dim=32,
                      num_heads=2, num_kv_heads=1, mlp_dim=64, max_new_tokens=8, sft_steps=3,
                      sft_batch_size=8, rl_steps=1, rl_prompts=8, samples_per_prompt=4, bon_n=2,
                      eval_n=4)


@pytest.mark.slow
def test_demo_runs_end_to_end_and_writes_its_report(tmp_path):
  lines = []
  results = demo.run_demo(str(tmp_path), TOY, log=lines.append)
  assert set(results) == {'sft', 'rl', 'bon_rl', 'seconds'}
  for arm in ('sft', 'rl', 'bon_rl'):
    assert results[arm]['ks'] == [1, 2, 4]
    assert all(0.0 <= v <= 1.0 for v in results[arm]['pass_at_k'])
    # pass@k never decreases with k.
    assert results[arm]['pass_at_k'] == sorted(results[arm]['pass_at_k'])
  with open(tmp_path / 'results.json') as f:
    assert json.load(f)['sft'] == results['sft']
  assert (tmp_path / 'pass_at_k.png').stat().st_size > 1000
  assert (tmp_path / 'sft' / 'tokenizer.model').exists()
  assert any('pass@1' in line for line in lines)


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
  result = _cli('demo', f'--workdir={tmp_path}', '--gin_bindings=DemoConfig.sft_stepz = 3',
                cwd=root)
  assert result.returncode != 0
  assert 'sft_stepz' in result.stderr
  assert not os.listdir(tmp_path)  # nothing was started
