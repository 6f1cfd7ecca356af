"""Problems with several solution strategies of different reliability: a task designed to show
what Best-of-N-aware training is for, stated plainly.

    question: Combine 4 and 7.
    solution: Multiply: 4 * 7 = 28.
              The answer is 28.
    answer:   28

Each problem's answer comes from one of three rules — add, multiply, or subtract the smaller
number from the larger — and which rule it is is drawn once per problem, independently of the
numbers, with probabilities 0.5, 0.3 and 0.2 (`RULE_WEIGHTS`). The question does not say which:
no policy can know it. The reference solution applies the problem's rule.

So a policy is judged by how it spreads its tries over the rules. Always adding — what
maximizing the single-sample reward converges to — solves half the problems at pass@1 and never
more, whatever N. A policy that keeps every rule in its samples solves nearly every problem at
pass@N for large N (pass@1 of a policy that picks rule r with probability q_r is sum_r w_r q_r;
pass@N is sum_r w_r (1 - (1 - q_r)^N)). SFT on the reference solutions learns q = w. Standard RL
should trade pass@N for pass@1; BoN-aware RL should keep the spread — the paper's finding
(Chow et al. 2025) in a task small enough for a CPU.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

RULES = ('add', 'multiply', 'subtract')
RULE_WEIGHTS = (0.5, 0.3, 0.2)
MAX_NUMBER = 12


def _apply(rule: str, a: int, b: int) -> tuple[str, int]:
  if rule == 'add':
    return f'Add: {a} + {b} = {a + b}.', a + b
  if rule == 'multiply':
    return f'Multiply: {a} * {b} = {a * b}.', a * b
  big, small = max(a, b), min(a, b)
  return f'Subtract: {big} - {small} = {big - small}.', big - small


def generate_problem(rng: np.random.Generator) -> dict[str, str]:
  """One problem: ``{'question', 'solution', 'answer', 'rule'}`` (all strings)."""
  a, b = (int(x) for x in rng.integers(2, MAX_NUMBER + 1, size=2))
  rule = RULES[int(rng.choice(len(RULES), p=RULE_WEIGHTS))]
  line, answer = _apply(rule, a, b)
  return {'question': f'Combine {a} and {b}.', 'solution': f'{line}\nThe answer is {answer}.',
          'answer': str(answer), 'rule': rule}


def best_pass_at_n(q: tuple[float, ...], n: int) -> float:
  """pass@n of a policy that picks the rules with probabilities q (and computes correctly)."""
  return float(sum(w * (1 - (1 - p) ** n) for w, p in zip(RULE_WEIGHTS, q)))


def generate_splits(seed: int, sizes: dict[str, int]) -> dict[str, Iterator[tuple[int, dict]]]:
  """Deterministic splits: example i of split s is drawn from a generator seeded (seed, s, i).

  Questions repeat across problems (there are only 121 number pairs), but each problem draws its
  own rule, so two problems with the same question may have different answers: the point.
  """
  return {name: iter([(i, generate_problem(np.random.default_rng([seed, s, i])))
                      for i in range(size)])
          for s, (name, size) in enumerate(sizes.items())}
