"""Tests for bonjax/train/reward_model.py: AUC, splits, triples, training and loading."""

import dataclasses
import itertools
import re

import chex
import jax
import numpy as np
import pytest

from bonjax import models
from bonjax.data import Tokenizer, arith
from bonjax.train import reward_model as rm
from bonjax.train.checkpoint import CheckpointMismatchError, Checkpointer
from bonjax.verifiers import learned

# One-step problems keep sequences short: "Tom has 12 apples. He buys 7 more. ..." -> 1 line.
ONE_STEP = arith.Difficulty(min_steps=1, max_steps=1, max_start=20, max_operand=9)


def _corrupt(solution: str, rng: np.random.Generator) -> str:
  """The solution with its result (and so its answer) off by 100 to 899.

  A mistake of that size shows in the magnitude of the result alone, which a tiny model learns to
  spot in tens of steps; off-by-one mistakes need real arithmetic, far beyond a seconds-long test.
  """
  step, answer = solution.split('\n')
  wrong = int(re.search(r'= (\d+)\.$', step).group(1)) + int(rng.integers(100, 900))
  return re.sub(r'= \d+\.$', f'= {wrong}.', step) + f'\nThe answer is {wrong}.'


def synthetic_triples(num_problems: int, seed: int) -> list[rm.Triple]:
  """For each problem, its correct solution and one corrupted solution."""
  rng = np.random.default_rng(seed)
  triples = []
  for i in range(num_problems):
    problem = arith.generate_problem(np.random.default_rng([seed, i]), ONE_STEP)
    prompt = problem['question'] + '\n'
    triples.append(rm.Triple(prompt, problem['solution'], True))
    triples.append(rm.Triple(prompt, _corrupt(problem['solution'], rng), False))
  return triples


@pytest.fixture(scope='module')
def tokenizer_path(tmp_path_factory):
  path = tmp_path_factory.mktemp('tokenizer') / 'tokenizer.model'
  texts = [t.prompt + t.completion for t in synthetic_triples(100, seed=1)]
  Tokenizer.train(texts, vocab_size=400, path=path)
  return str(path)


def _brute_force_auc(scores, labels):
  pos, neg = scores[labels], scores[~labels]
  wins = [1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg)]
  return np.mean(wins)


@pytest.mark.parametrize('seed', range(5))
def test_auc_matches_brute_force_with_ties(seed):
  rng = np.random.default_rng(seed)
  labels = rng.random(40) < 0.4
  labels[:2] = [True, False]
  scores = rng.integers(0, 5, size=40).astype(np.float32)  # 5 distinct values: many ties
  np.testing.assert_allclose(rm.auc(scores, labels), _brute_force_auc(scores, labels), rtol=1e-12)


def test_auc_known_values():
  labels = np.array([0, 0, 1, 1])
  assert rm.auc(np.array([0.1, 0.2, 0.3, 0.4]), labels) == 1.0
  assert rm.auc(np.array([0.4, 0.3, 0.2, 0.1]), labels) == 0.0
  assert rm.auc(np.zeros(4), labels) == 0.5
  assert rm.auc(np.array([0.1, 0.3, 0.2, 0.4]), labels) == 0.75


def test_auc_bad_input():
  with pytest.raises(ValueError, match='at least one positive and one negative'):
    rm.auc(np.array([0.1, 0.2]), np.array([1, 1]))
  with pytest.raises(ValueError, match='same size'):
    rm.auc(np.array([0.1, 0.2]), np.array([1]))


def test_split_by_prompt_is_deterministic_and_keeps_prompts_together():
  triples = synthetic_triples(20, seed=0)
  train, held_out = rm.split_by_prompt(triples, 0.25, seed=3)
  assert len(train) + len(held_out) == len(triples)
  assert not {t.prompt for t in train} & {t.prompt for t in held_out}
  assert len({t.prompt for t in held_out}) == 5
  assert (train, held_out) == rm.split_by_prompt(triples, 0.25, seed=3)
  with pytest.raises(ValueError, match='eval_fraction'):
    rm.split_by_prompt(triples, 1.0, seed=0)
  with pytest.raises(ValueError, match='at least 2 distinct prompts'):
    rm.split_by_prompt(triples[:2], 0.5, seed=0)


def test_triples_file_round_trip_and_errors(tmp_path):
  triples = synthetic_triples(3, seed=0)
  rm.write_triples(tmp_path / 't.jsonl', triples)
  assert rm.read_triples(tmp_path / 't.jsonl') == triples
  with pytest.raises(FileNotFoundError, match='triples file not found'):
    rm.read_triples(tmp_path / 'missing.jsonl')
  (tmp_path / 'bad.jsonl').write_text('{"prompt": "p", "completion": "c"}\n')
  with pytest.raises(ValueError, match=r"bad.jsonl:1 has no \['correct'\]"):
    rm.read_triples(tmp_path / 'bad.jsonl')
  (tmp_path / 'bad.jsonl').write_text('not json\n')
  with pytest.raises(ValueError, match='bad.jsonl:1 is not a JSON object'):
    rm.read_triples(tmp_path / 'bad.jsonl')


def test_trains_to_high_held_out_auc_and_reloads(tmp_path, tokenizer_path):
  # 120 problems -> 240 triples; 24 held-out problems (24 positives, 24 negatives). Under chance,
  # the AUC of 24 vs 24 has standard deviation sqrt(49 / (12 * 24 * 24)) = 0.084, so the 0.85
  # threshold is over 4 standard deviations above chance. A correct run separates the held-out
  # set perfectly (AUC 1.0) from step 20 on, so 0.85 also leaves a wide margin for numerics.
  triples = synthetic_triples(120, seed=0)
  workdir = tmp_path / 'run'
  metrics = rm.train_reward_model(
      str(workdir), triples, tokenizer_path, model='tiny', max_len=40, batch_size=16,
      num_steps=30, learning_rate=3e-3, warmup_steps=10, eval_fraction=0.2, seed=0)
  assert metrics['auc'] >= 0.85, metrics
  assert metrics['step'] == 30 and metrics['positive_fraction'] == 0.5

  verifier = rm.load_verifier(str(workdir), batch_size=16)  # as in training: no recompile
  _, held_out = rm.split_by_prompt(triples, 0.2, seed=0)
  scores = verifier.score_pairs([t.prompt for t in held_out], [t.completion for t in held_out])
  np.testing.assert_allclose(rm.auc(scores, [t.correct for t in held_out]), metrics['auc'])
  with pytest.raises(FileNotFoundError, match='not a reward model run directory'):
    rm.load_verifier(str(tmp_path))


def test_training_runs_on_the_given_mesh(tmp_path, tokenizer_path):
  # The step is the package's sharded one (one vs eight devices: tests/train/test_steps.py): on
  # 8 data-parallel shards a batch of 12 pairs is refused, where one device takes it.
  with pytest.raises(ValueError, match="'tokens' has 12 rows.*multiple of 8"):
    rm.train_reward_model(str(tmp_path / 'run'), synthetic_triples(20, seed=0), tokenizer_path,
                          model='tiny', max_len=40, batch_size=12, num_steps=1,
                          mesh='data:4,fsdp:2')


def test_restore_params_for_init_from(tmp_path, tokenizer_path):
  """`init_from` restores a policy's Transformer params as the reward model's trunk."""
  tokenizer = Tokenizer.load(tokenizer_path)
  config = dataclasses.replace(models.get_config('tiny'), vocab_size=tokenizer.vocab_size)
  fresh = learned.init_params(config, jax.random.key(0))
  policy_params = learned.init_params(config, jax.random.key(42))['trunk']
  with Checkpointer(tmp_path / 'policy') as checkpointer:
    checkpointer.save(0, params=policy_params)
  chex.assert_trees_all_close(rm.restore_params(str(tmp_path / 'policy'), fresh['trunk']),
                              policy_params)
  with pytest.raises(CheckpointMismatchError, match='head'):
    rm.restore_params(str(tmp_path / 'policy'), fresh)


def test_sample_triples_grades_policy_samples(tokenizer_path):
  tokenizer = Tokenizer.load(tokenizer_path)
  config = dataclasses.replace(models.get_config('tiny'), vocab_size=tokenizer.vocab_size)
  policy = models.Transformer(config)
  params = learned.init_params(config, jax.random.key(0))['trunk']
  examples = [arith.generate_problem(np.random.default_rng(i), ONE_STEP) for i in range(3)]
  seen_metadata = []

  class FirstSampleIsCorrect:
    """Marks sample 0 of every prompt correct: checks that grades land on the right triples."""

    def score(self, prompts, completions, metadata):
      seen_metadata.extend(metadata)
      return np.array([[1.0] + [0.0] * (len(c) - 1) for c in completions], np.float32)

  triples = rm.sample_triples(
      policy, params, tokenizer, examples, FirstSampleIsCorrect(), rng=jax.random.key(0),
      num_samples=2, max_new_tokens=4, max_prompt_len=40, prompt_format='{question}\n',
      batch_size=3)
  assert [t.prompt for t in triples] == [e['question'] + '\n' for e in examples for _ in range(2)]
  assert [t.correct for t in triples] == [True, False] * 3
  assert all(isinstance(t.completion, str) for t in triples)
  assert [m['answer'] for m in seen_metadata] == [e['answer'] for e in examples]


def test_a_model_object_is_the_trunk_and_a_wrong_vocabulary_is_named(tmp_path, tokenizer_path):
  """A `Transformer` (a policy's own config, not a preset) is taken as it is; reloaded the same."""
  vocab = Tokenizer.load(tokenizer_path).vocab_size
  config = dataclasses.replace(models.get_config('tiny'), vocab_size=vocab, num_layers=1,
                               embed_dim=32, num_heads=2, num_kv_heads=1, head_dim=16,
                               mlp_dim=64)
  triples = synthetic_triples(20, seed=0)
  rm.train_reward_model(str(tmp_path / 'run'), triples, tokenizer_path,
                        model=models.Transformer(config), max_len=40, batch_size=8, num_steps=2)
  assert rm.load_verifier(str(tmp_path / 'run')).config == config
  wrong = models.Transformer(dataclasses.replace(config, vocab_size=vocab + 1))
  with pytest.raises(ValueError, match=f'vocabulary of {vocab + 1} tokens but the tokenizer has '
                                       f'{vocab}'):
    rm.train_reward_model(str(tmp_path / 'other'), triples, tokenizer_path, model=wrong,
                          num_steps=1)
  assert not (tmp_path / 'other').exists()
