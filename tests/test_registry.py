"""Tests for bonjax/registry.py: the gin configs parse, bad bindings fail clearly, entry points run."""

import json
import os

import gin
import pytest

from bonjax import registry, verifiers
from bonjax.data import Tokenizer
from bonjax.train import reward_model as rm
from bonjax.verifiers import learned

ARITH_CONFIG = 'experiments/arith/reward_model.gin'


@pytest.fixture(autouse=True)
def clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def test_arith_config_parses_with_its_include():
  registry.parse_config([ARITH_CONFIG])
  assert gin.query_parameter('train_reward_model.num_steps') == 1000  # from the base config
  assert gin.query_parameter('MODEL/macro.value') == 'small'
  assert gin.query_parameter('train_reward_model.max_len') == 192  # the task overrides the base
  assert gin.query_parameter('policy_triples.dataset') == 'bonjax_arith'
  assert gin.query_parameter('policy_triples.verifier') in verifiers.names()


def test_wrong_binding_names_the_parameter():
  with pytest.raises(ValueError, match="'train_reward_model' doesn't have a parameter named "
                                       "'num_stepz'"):
    registry.parse_config([ARITH_CONFIG], ['train_reward_model.num_stepz = 3'])


def test_unknown_configurable_is_named():
  with pytest.raises(ValueError, match="No configurable matching 'train_reward_modle'"):
    registry.parse_config([], ['train_reward_modle.num_steps = 3'])


def test_missing_config_file_is_named():
  with pytest.raises(FileNotFoundError, match='no_such.gin'):
    registry.parse_config(['experiments/no_such.gin'])


def test_every_verifier_is_registered_under_its_registry_name():
  for name in verifiers.names():
    assert gin.get_configurable(name) is not None, name
    assert gin.get_configurable(f'bonjax.verifiers.{name}') is not None, name


def test_entry_point_runs_end_to_end(tmp_path):
  triples = []
  for i in range(4):
    prompt = f'Tom has {i} apples. How many apples does Tom have now?\n'
    triples += [rm.Triple(prompt, f'The answer is {i}.', True),
                rm.Triple(prompt, f'The answer is {i + 500}.', False)]
  rm.write_triples(tmp_path / 'triples.jsonl', triples)
  tokenizer_path = str(tmp_path / 'tokenizer.model')
  Tokenizer.train([t.prompt + t.completion for t in triples], vocab_size=300, path=tokenizer_path)

  registry.parse_config(['experiments/base/reward_model.gin'], [
      'train_reward_model.triples = @read_triples()',
      f"read_triples.path = '{tmp_path / 'triples.jsonl'}'",
      f"train_reward_model.tokenizer_path = '{tokenizer_path}'",
      'train_reward_model.num_steps = 3',
      'train_reward_model.batch_size = 4',
      'train_reward_model.max_len = 24',
      'train_reward_model.eval_fraction = 0.5',
  ])
  workdir = tmp_path / 'run'
  metrics = registry.train_reward_model(workdir=str(workdir))
  assert metrics['step'] == 3 and 0.0 <= metrics['auc'] <= 1.0

  with open(workdir / rm.RUN_INFO_FILE) as f:
    info = json.load(f)
  assert info['max_len'] == 24 and info['metrics']['auc'] == metrics['auc']
  assert os.path.isfile(workdir / rm.TOKENIZER_FILE)
  with rm.Checkpointer(workdir / rm.CHECKPOINT_DIR) as checkpointer:
    assert 'train_reward_model.num_steps = 3' in checkpointer.restore()['config_text']

  with gin.unlock_config():
    gin.parse_config(f"learned_verifier.workdir = '{workdir}'")
  verifier = registry.learned_verifier(batch_size=4)
  assert isinstance(verifier, rm.RewardModelVerifier)  # loads the run when it first scores
  scores = verifier.score([triples[0].prompt], [[triples[0].completion, triples[1].completion]],
                          [{}])
  assert scores.shape == (1, 2)
