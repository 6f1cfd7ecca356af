"""`evaluate` on a tiny model: the numbers are the estimators of its saved samples, it resumes
where it stopped, it shares keys across grids, and it refuses bad input clearly."""

import json
import os

import numpy as np
import pytest

from bonjax import data, evaluation, objectives, verifiers
from bonjax.evaluation import core
from tests import helpers

VOCAB = 320


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
  task = data.Task(config=data.ArithConfig(name='evaluation_test', num_train=16, num_test=10),
                   data_dir=str(tmp_path_factory.mktemp('data')), vocab_size=VOCAB,
                   max_prompt_len=40, max_target_len=10)
  model = helpers.tiny_model(vocab_size=VOCAB, num_layers=1, embed_dim=32, num_heads=2,
                             num_kv_heads=1, head_dim=16, mlp_dim=64)
  return task, model, helpers.tiny_params(model), helpers.arith_tokenizer(VOCAB)


def _evaluate(setup, **kwargs):
  task, model, params, tokenizer = setup
  defaults = dict(model=model, task=task, tokenizer=tokenizer, reward=verifiers.AnswerMatch(),
                  verifier=helpers.Scripted(lambda p, c, m: len(c) % 5), ns=[1, 2, 4],
                  temperatures=[0.5, 1.0], batch_size=4, num_bootstrap=200, progress=False)
  return evaluation.evaluate(params, **dict(defaults, **kwargs))


def test_metrics_are_the_estimators_of_the_saved_samples(setup, tmp_path):
  results = _evaluate(setup, out_dir=str(tmp_path))
  samples = evaluation.load_samples(str(tmp_path))
  assert len(samples) == 2 * 10 and all(len(r['completions']) == 4 for r in samples)
  for ti, t in enumerate(results.temperatures):
    rows = [r for r in samples if r['temperature'] == t]
    rewards = np.array([r['rewards'] for r in rows])
    scores = np.array([r['scores'] for r in rows])
    np.testing.assert_allclose(results.per_problem['pass'][ti],
                               objectives.pass_at_k(rewards > 0.5, [1, 2, 4]), rtol=1e-6)
    np.testing.assert_allclose(results.summary['bon']['mean'][ti],
                               np.mean(objectives.bon_at_k(scores, rewards, [1, 2, 4]), 0),
                               rtol=1e-5)
    assert results.mean('pass', 4, t) == pytest.approx(
        float(np.mean(objectives.pass_at_k(rewards > 0.5, 4))))
  assert set(results.metrics) == {'pass', 'bon', 'max', 'maj'}  # arith has answers
  low, high = results.interval('pass', 4, 1.0)
  assert low <= results.mean('pass', 4, 1.0) <= high
  # eval.json round-trips every number.
  paths = evaluation.write_report(results, str(tmp_path), log=None)
  assert all(os.path.getsize(p) > 0 for p in paths.values())
  loaded = evaluation.EvalResults.load(str(tmp_path))
  np.testing.assert_allclose(loaded.per_problem['bon'], results.per_problem['bon'])
  assert loaded.coscaling == json.loads(json.dumps(results.coscaling))


def test_a_killed_evaluation_resumes_and_matches_an_uninterrupted_one(setup, tmp_path,
                                                                      monkeypatch):
  reference = _evaluate(setup, out_dir=str(tmp_path / 'reference'))
  calls = []
  collect = core.draws.collect

  def dies_on_the_second_chunk(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
      raise KeyboardInterrupt('killed')
    return collect(*args, **kwargs)

  monkeypatch.setattr(core.draws, 'collect', dies_on_the_second_chunk)
  with pytest.raises(KeyboardInterrupt):
    _evaluate(setup, out_dir=str(tmp_path / 'run'))
  saved = sorted(os.listdir(tmp_path / 'run' / 'samples'))
  assert len(saved) == 1 + 2  # the spec and the first chunk at both temperatures
  monkeypatch.setattr(core.draws, 'collect', collect)
  calls.clear()
  resumed = _evaluate(setup, out_dir=str(tmp_path / 'run'))
  for name in reference.per_problem:
    np.testing.assert_array_equal(resumed.per_problem[name], reference.per_problem[name])


def test_samples_depend_only_on_problem_and_temperature(setup, tmp_path):
  both = _evaluate(setup, temperatures=[0.5, 1.0], out_dir=str(tmp_path / 'a'))
  one = _evaluate(setup, temperatures=[1.0], batch_size=3, out_dir=str(tmp_path / 'b'))
  np.testing.assert_array_equal(both.per_problem['pass'][1], one.per_problem['pass'][0])
  first = [r['completions'] for r in evaluation.load_samples(str(tmp_path / 'b'))]
  second = [r['completions'] for r in evaluation.load_samples(str(tmp_path / 'a'))
            if r['temperature'] == 1.0]
  assert first == second


def test_difficulty_buckets_are_summarized_and_fitted_each(setup):
  results = _evaluate(setup, bucket_field='answer')  # arith has no difficulty field: any will do
  assert results.info['bucket_field'] == 'answer'
  assert sum(b['num_problems'] for b in results.buckets.values()) == 10
  task, _, _, _ = setup
  labels = [str(task.source('test', '')[i]['answer'].decode()) for i in range(10)]
  for label, bucket in results.buckets.items():
    chosen = np.array([l == label for l in labels])
    np.testing.assert_allclose(bucket['summary']['pass']['mean'],
                               results.per_problem['pass'][:, chosen].mean(axis=1))
    assert set(bucket['coscaling']) == {'fits', 't_star'}
  assert 'T*(N) measured / fitted' in evaluation.table(results)


def test_paired_difference_of_a_policy_with_itself_is_zero(setup):
  results = _evaluate(setup)
  same = evaluation.paired_difference(results, results, 'pass', 2, 0.5)
  assert same['difference'] == 0 and same['ci_low'] == 0 == same['ci_high']
  assert same['num_problems'] == 10
  other = _evaluate(setup, num_problems=6)
  with pytest.raises(ValueError, match='same problems'):
    evaluation.paired_difference(results, other, 'pass', 2, 0.5)


@pytest.mark.parametrize('kwargs, error, message', [
    (dict(ns=[1, 8], num_samples=4), ValueError, 'N = 8 is larger than the 4 samples'),
    (dict(temperatures=[]), ValueError, 'temperature list is empty'),
    (dict(temperatures=[0.5, -1.0]), ValueError, r'temperatures must be >= 0.*-1.0'),
    (dict(verifier=verifiers.CodeExecution()), ValueError,
     r"no \['prompt', 'test', 'entry_point'\] field, which the verifier 'code_execution'"),
    (dict(verifier=None, reward=None), ValueError, 'needs a verifier or a task reward'),
])
def test_bad_input_gets_one_clear_error(setup, tmp_path, kwargs, error, message):
  with pytest.raises(error, match=message):
    _evaluate(setup, out_dir=str(tmp_path), **kwargs)


def test_another_evaluation_in_the_same_out_dir_is_refused(setup, tmp_path):
  _evaluate(setup, out_dir=str(tmp_path), num_problems=2)
  with pytest.raises(ValueError, match=r"another evaluation \(it differs in \['num_samples'\]\)"):
    _evaluate(setup, out_dir=str(tmp_path), num_problems=2, num_samples=8)


def test_unknown_run_directory_and_run_without_checkpoint(setup, tmp_path):
  task, model, _, _ = setup
  with pytest.raises(FileNotFoundError, match='no run directory'):
    evaluation.evaluate(str(tmp_path / 'nope'), model=model, task=task, ns=[1],
                        temperatures=[1.0], reward=verifiers.AnswerMatch())
  with pytest.raises(FileNotFoundError, match='holds no checkpoints'):
    evaluation.evaluate(str(tmp_path), model=model, task=task, ns=[1], temperatures=[1.0],
                        reward=verifiers.AnswerMatch())
