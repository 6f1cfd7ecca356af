"""Every gin file in experiments/ parses and builds; every arith experiment trains a few steps."""

import glob
import os

import pytest

from bonjax import registry
from tests import helpers
from tests.helpers import gin_cleared_at_repo_root  # noqa: F401  (autouse fixture)

EXPERIMENTS = sorted(os.path.relpath(p, helpers.REPO_ROOT) for p in glob.glob(
    os.path.join(helpers.REPO_ROOT, 'experiments', '*', '*.gin')) if '/base/' not in p)
TRAIN_EXPERIMENTS = [p for p in EXPERIMENTS
                     if os.path.basename(p) not in ('demo.gin', 'reward_model.gin')]
ARITH = [p for p in TRAIN_EXPERIMENTS if p.startswith('experiments/arith/')]


def test_every_method_has_an_arith_experiment():
  names = {os.path.basename(p)[:-4] for p in ARITH}
  assert {'sft', 'dco', 'bon_sft', 'bon_sft_exact', 'rl', 'grpo', 'rl_v', 'bon_rl_v',
          'bon_rl_s', 'bon_rlb', 'bon_rlb_p', 'pkpo'} <= names


@pytest.mark.parametrize('path', TRAIN_EXPERIMENTS)
def test_experiment_builds_abstractly(path, tmp_path):
  """Parses the file and builds its objects; the model and optimizer state as shapes only."""
  registry.parse_config([path])
  summary = registry.train(workdir=str(tmp_path / 'never_written'), dry_run=True)
  assert summary['param_count'] > 0 and summary['opt_state_bytes'] > 0
  assert not (tmp_path / 'never_written').exists()


@pytest.mark.slow
@pytest.mark.parametrize('path', ARITH)
def test_arith_experiment_trains_a_few_steps(path, tmp_path_factory):
  data_dir = tmp_path_factory.getbasetemp() / 'arith_data'  # prepared once, shared by all
  workdir = tmp_path_factory.mktemp('run')
  bindings = list(helpers.TINY_ARITH_BINDINGS) + [f"Task.data_dir = '{data_dir}'"]
  if 'WarmStart' in open(path).read() or 'arith_rl' in open(path).read():
    bindings += helpers.TINY_WARM_START_BINDINGS
  registry.parse_config([path], bindings)
  last = registry.train(workdir=str(workdir))
  assert last['step'] == 2 and last['loss'] == last['loss']  # not NaN
