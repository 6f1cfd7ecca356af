"""Tests for the several-strategies task: its rule frequencies, its answers, its builder."""

import collections

import numpy as np

from bonjax import verifiers
from bonjax.data import strategies
from bonjax.data.builders import BonjaxStrategies, StrategiesConfig


def test_rules_have_their_stated_frequencies_and_solutions_apply_them():
  examples = [ex for _, ex in strategies.generate_splits(0, {'train': 6000})['train']]
  counts = collections.Counter(ex['rule'] for ex in examples)
  for rule, weight in zip(strategies.RULES, strategies.RULE_WEIGHTS):
    # Binomial: 4 standard deviations of a frequency over 6000 draws is < 0.026.
    assert abs(counts[rule] / len(examples) - weight) < 0.026, (rule, counts)
  match = verifiers.AnswerMatch()
  for ex in examples[:200]:
    a, b = (int(x) for x in ex['question'][len('Combine '):-1].split(' and '))
    expected = {'add': a + b, 'multiply': a * b, 'subtract': abs(a - b)}[ex['rule']]
    assert ex['answer'] == str(expected)
    assert match.score([ex['question']], [[ex['solution']]], [{'answer': ex['answer']}])[0, 0] == 1


def test_the_pass_at_n_of_spread_and_collapsed_policies():
  # Always the most reliable rule: pass@N stays at its weight; SFT's spread q = w approaches 1.
  assert strategies.best_pass_at_n((1.0, 0.0, 0.0), 32) == 0.5
  assert strategies.best_pass_at_n(strategies.RULE_WEIGHTS, 1) == sum(
      w * w for w in strategies.RULE_WEIGHTS)
  assert strategies.best_pass_at_n(strategies.RULE_WEIGHTS, 32) > 0.999


def test_builder_prepares_the_splits(tmp_path):
  config = StrategiesConfig(name='tiny', num_train=30, num_test=6, seed=3)
  builder = BonjaxStrategies(config=config, data_dir=str(tmp_path), file_format='array_record')
  builder.download_and_prepare()
  sources = builder.as_data_source()
  assert {k: len(v) for k, v in sources.items()} == {'train': 30, 'test': 6}
  expected = sorted(ex['answer'] for _, ex in strategies.generate_splits(3, {'test': 6})['test'])
  assert sorted(ex['answer'].decode() for ex in sources['test']) == expected
  assert np.all([ex['rule'].decode() in strategies.RULES for ex in sources['train']])
