"""Tests for bonjax.data.arith."""

import re

import numpy as np
import pytest

from bonjax.data import arith

_STEP = re.compile(r"^.+: (\d+) ([-+*/]) (\d+) = (\d+)\.$")
_APPLY = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
          "/": lambda a, b: a // b}


def _problems(difficulty, count=300, seed=0):
  return [arith.generate_problem(np.random.default_rng([seed, i]), difficulty)
          for i in range(count)]


def test_deterministic_from_seed():
  assert _problems("hard", 20) == _problems("hard", 20)
  assert _problems("hard", 20) != _problems("hard", 20, seed=1)


@pytest.mark.parametrize("name", sorted(arith.DIFFICULTIES))
def test_solutions_are_correct_step_by_step(name):
  difficulty = arith.DIFFICULTIES[name]
  for problem in _problems(name):
    lines = problem["solution"].split("\n")
    steps, final = lines[:-1], lines[-1]
    assert difficulty.min_steps <= len(steps) <= difficulty.max_steps
    start = int(re.match(r"^\w+ has (\d+) ", problem["question"]).group(1))
    assert 1 <= start <= difficulty.max_start
    value = start
    for line in steps:
      a, op, b, result = _STEP.match(line).groups()
      assert int(a) == value
      if op == "/":
        assert int(a) % int(b) == 0
      assert _APPLY[op](int(a), int(b)) == int(result)
      assert 0 <= int(result) <= arith.MAX_VALUE
      # Each step's sentence is in the question, so the question fixes the answer.
      assert line.split(":")[0] + "." in problem["question"]
      value = int(result)
    assert final == f"The answer is {value}."
    assert problem["answer"] == str(value)


def test_difficulty_knob_changes_the_task():
  def mean_answer(name):
    return np.mean([int(p["answer"]) for p in _problems(name)])
  assert mean_answer("easy") < mean_answer("medium") < mean_answer("hard")
  easy_ops = {op for p in _problems("easy") for op in re.findall(r" ([*/]) ", p["solution"])}
  hard_ops = {op for p in _problems("hard") for op in re.findall(r" ([*/]) ", p["solution"])}
  assert not easy_ops and hard_ops == {"*", "/"}


def test_custom_difficulty():
  one_step = arith.Difficulty(min_steps=1, max_steps=1, max_start=5, max_operand=3)
  for problem in _problems(one_step, 50):
    assert problem["solution"].count("\n") == 1


def test_splits_are_disjoint_and_deterministic():
  def make():
    splits = arith.generate_splits(3, "easy", {"test": 200, "train": 2000})
    return {name: list(examples) for name, examples in splits.items()}
  splits = make()
  assert len(splits["test"]) == 200 and len(splits["train"]) == 2000
  test_questions = {e["question"] for _, e in splits["test"]}
  train_questions = [e["question"] for _, e in splits["train"]]
  assert len(set(train_questions)) == 2000
  assert not test_questions & set(train_questions)
  assert splits == make()
  # Example i does not depend on the split size.
  small = list(arith.generate_splits(3, "easy", {"test": 200, "train": 10})["train"])
  assert small == splits["train"][:10]


def test_bad_difficulty():
  with pytest.raises(ValueError, match="valid"):
    arith.generate_problem(np.random.default_rng(0), "impossible")
  with pytest.raises(ValueError, match="min_steps"):
    arith.Difficulty(min_steps=3, max_steps=2, max_start=5, max_operand=5)
  tiny = arith.Difficulty(min_steps=1, max_steps=1, max_start=1, max_operand=1)
  with pytest.raises(ValueError, match="distinct"):
    list(arith.generate_splits(0, tiny, {"train": 2000})["train"])
