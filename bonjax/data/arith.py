"""Multi-step integer arithmetic word problems, generated deterministically from a seed.

A problem starts a character with some items and applies a few operations to the count::

  question: Tom has 12 apples. He buys 7 more. He gives 5 to Ann. How many apples does Tom have
            now?
  solution: He buys 7 more: 12 + 7 = 19.
            He gives 5 to Ann: 19 - 5 = 14.
            The answer is 14.
  answer:   14

Why this task suits Best-of-N studies with a small model trained from scratch on a CPU:

- Every step is one operation on numbers of a few digits, written out on its own line, so a model
  only has to learn to copy the operands from the question and do one small sum per line. A model of
  a few million parameters learns the format and the easy steps within minutes.
- The arithmetic itself stays error-prone: with digits split into single tokens, the model writes
  each result most-significant digit first, so a carry must be anticipated before it is computed.
  Multi-digit sums with carries, products and exact divisions (hard config) fail a fair fraction of
  the time, and a problem needs every step right. Single tries therefore solve some problems but not
  all, and errors are largely independent between samples, so pass@N rises clearly with N: what BoN
  training is meant to exploit.
- Each error is local to one line and the final line repeats the last result, so the final answer
  is checked by exact integer match (``answer`` is a string of an integer, never negative).

The difficulty knob sets the number of steps, the operand ranges and which operations appear.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

# Results stay below this, so every number has at most 4 digits.
MAX_VALUE = 9999


@dataclasses.dataclass(frozen=True)
class Difficulty:
  """How hard a generated problem is.

  Attributes:
    min_steps: fewest operations in a problem.
    max_steps: most operations in a problem.
    max_start: the starting count is drawn from [1, max_start].
    max_operand: added and subtracted amounts are drawn from [1, max_operand].
    max_factor: multiplications and divisions use factors in [2, max_factor]; below 2 disables
      them.
  """

  min_steps: int
  max_steps: int
  max_start: int
  max_operand: int
  max_factor: int = 0

  def __post_init__(self):
    if not 1 <= self.min_steps <= self.max_steps:
      raise ValueError(f"Need 1 <= min_steps <= max_steps, got {self.min_steps}, "
                       f"{self.max_steps}.")
    if not 1 <= self.max_start <= MAX_VALUE or not 1 <= self.max_operand <= MAX_VALUE:
      raise ValueError(f"max_start and max_operand must lie in [1, {MAX_VALUE}].")


DIFFICULTIES = {
    # One or two additions/subtractions of small numbers: mostly no carries.
    "easy": Difficulty(min_steps=1, max_steps=2, max_start=20, max_operand=9),
    # Two-digit sums with carries, and small multiplications.
    "medium": Difficulty(min_steps=2, max_steps=3, max_start=50, max_operand=30, max_factor=3),
    # Longer chains, three-digit numbers, products and exact divisions.
    "hard": Difficulty(min_steps=3, max_steps=5, max_start=200, max_operand=99, max_factor=9),
}

_CHARACTERS = (("Tom", "He", "him"), ("Ann", "She", "her"), ("Sam", "He", "him"),
               ("Mia", "She", "her"), ("Leo", "He", "him"), ("Zoe", "She", "her"))
_ITEMS = ("apples", "pencils", "marbles", "stickers", "coins", "books", "cards", "shells")
_ADD = ("{He} buys {n} more", "{He} finds {n} more", "{Friend} gives {him} {n} more")
_SUB = ("{He} gives {n} to {Friend}", "{He} loses {n}", "{He} sells {n}")
_MUL = ("{He} ends up with {n} times as many",)
_DIV = ("{He} shares them equally among {n} boxes and keeps one box",)
_SYMBOL = {"add": "+", "sub": "-", "mul": "*", "div": "/"}


def get_difficulty(difficulty: str | Difficulty) -> Difficulty:
  """Returns a ``Difficulty`` from itself or from a preset name (``DIFFICULTIES``)."""
  if isinstance(difficulty, Difficulty):
    return difficulty
  if difficulty not in DIFFICULTIES:
    raise ValueError(f"Unknown difficulty {difficulty!r}; valid: {sorted(DIFFICULTIES)} or a "
                     "Difficulty instance.")
  return DIFFICULTIES[difficulty]


def _pick(rng: np.random.Generator, options):
  return options[int(rng.integers(len(options)))]


def _feasible_steps(value: int, d: Difficulty) -> list[tuple[str, int, int]]:
  """All (op, lo, hi) whose operand range [lo, hi] keeps the count in [0, MAX_VALUE]."""
  steps = []
  if value + 1 <= MAX_VALUE:
    steps.append(("add", 1, min(d.max_operand, MAX_VALUE - value)))
  if value >= 1:
    steps.append(("sub", 1, min(d.max_operand, value)))
  if d.max_factor >= 2 and value >= 1 and 2 * value <= MAX_VALUE:
    steps.append(("mul", 2, min(d.max_factor, MAX_VALUE // value)))
  if d.max_factor >= 2 and any(value % k == 0 for k in range(2, min(d.max_factor, value) + 1)):
    steps.append(("div", 2, min(d.max_factor, value)))
  return steps


def _draw_operand(rng: np.random.Generator, op: str, lo: int, hi: int, value: int) -> int:
  if op == "div":
    return _pick(rng, [k for k in range(lo, hi + 1) if value % k == 0])
  return int(rng.integers(lo, hi + 1))


def generate_problem(rng: np.random.Generator, difficulty: str | Difficulty) -> dict[str, str]:
  """Draws one problem: ``{'question', 'solution', 'answer'}`` (all strings).

  Deterministic given the state of ``rng``. The solution has one line per step, then
  ``The answer is <answer>.``
  """
  d = get_difficulty(difficulty)
  name, he, him = _pick(rng, _CHARACTERS)
  friend = _pick(rng, [c[0] for c in _CHARACTERS if c[0] != name])
  items = _pick(rng, _ITEMS)
  value = int(rng.integers(1, d.max_start + 1))
  sentences, lines = [f"{name} has {value} {items}."], []
  for _ in range(int(rng.integers(d.min_steps, d.max_steps + 1))):
    op, lo, hi = _pick(rng, _feasible_steps(value, d))
    n = _draw_operand(rng, op, lo, hi, value)
    template = _pick(rng, {"add": _ADD, "sub": _SUB, "mul": _MUL, "div": _DIV}[op])
    text = template.format(He=he, him=him, Friend=friend, n=n)
    result = {"add": value + n, "sub": value - n, "mul": value * n, "div": value // n}[op]
    sentences.append(f"{text}.")
    lines.append(f"{text}: {value} {_SYMBOL[op]} {n} = {result}.")
    value = result
  sentences.append(f"How many {items} does {name} have now?")
  lines.append(f"The answer is {value}.")
  return {"question": " ".join(sentences), "solution": "\n".join(lines), "answer": str(value)}


def generate_splits(
    seed: int,
    difficulty: str | Difficulty,
    sizes: dict[str, int],
) -> dict[str, Iterator[tuple[int, dict[str, str]]]]:
  """Deterministic splits of distinct problems: ``{split: iterator of (key, example)}``.

  Example ``i`` of split number ``s`` (in the order of ``sizes``) is drawn from its own generator
  seeded with ``(seed, s, i)``, so it does not depend on the other examples. A question that
  appears in an earlier split is skipped in later ones, so ``test`` (list it first) never leaks
  into ``train``. Keys count the draws of each split, skipped ones included.
  """
  seen: set[str] = set()

  def split_examples(split_id: int, size: int):
    count = 0
    index = 0
    while count < size:
      example = generate_problem(np.random.default_rng([seed, split_id, index]), difficulty)
      if example["question"] not in seen:
        seen.add(example["question"])
        count += 1
        yield index, example
      index += 1
      if index > 4 * size + 1000:
        raise ValueError(f"Could not draw {size} distinct problems; the difficulty "
                         f"{difficulty!r} allows too few different questions.")

  # Materialized in order so that the skipping never depends on which split is read first.
  return {name: iter(list(split_examples(i, size))) for i, (name, size) in enumerate(sizes.items())}
