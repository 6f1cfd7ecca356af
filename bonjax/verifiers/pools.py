"""Worker pools that outlive a ``score`` call: started on first use, reused, replaced when broken.

Starting a pool of spawned processes costs seconds (each worker imports bonjax and sympy), far
more than scoring one batch of completions; RL scores a batch every step. So a verifier keeps one
``WorkerPool``: the executor is created by the first ``map``, serves every later one, and when it
is broken (a worker was killed: the OOM killer, a segfault in sympy) it is shut down, a fresh one
is started and the ``map`` is run again, once. Processes are always started with 'spawn': a fork
of a process that holds jax can deadlock.

``close()`` shuts the executor down (a later ``map`` starts a new one); so does dropping the last
reference to the pool, and so does interpreter exit. A pickled pool carries its settings only, so
a verifier holding one stays picklable (and its copy starts its own executor when first used).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any

_KINDS = ("process", "thread")


class WorkerPool:
  """A lazily started, reused executor of ``num_workers`` spawned processes or threads.

  Thread-safe: several threads may ``map`` at once (they share the executor).
  """

  def __init__(self, num_workers: int, kind: str = "process"):
    if kind not in _KINDS:
      raise ValueError(f"WorkerPool: kind must be one of {_KINDS}, got {kind!r}")
    if not isinstance(num_workers, int) or num_workers < 1:
      raise ValueError(f"WorkerPool: num_workers must be a positive int, got {num_workers!r}")
    self.num_workers = num_workers
    self.kind = kind
    self._lock = threading.Lock()
    self._executor: concurrent.futures.Executor | None = None
    self._finalizer: weakref.finalize | None = None

  def map(self, function: Callable[..., Any], *iterables: Iterable[Any],
          chunksize: int = 1) -> list[Any]:
    """``list(executor.map(function, *iterables))``, retried once on a fresh executor when broken.

    ``function`` and the items must be picklable for a process pool. A second break in a row
    raises ``concurrent.futures.BrokenExecutor``.
    """
    columns = [list(items) for items in iterables]  # Replayable for the retry.
    executor = self._started()
    try:
      return list(executor.map(function, *columns, chunksize=chunksize))
    except concurrent.futures.BrokenExecutor:
      self._discard(executor)
    return list(self._started().map(function, *columns, chunksize=chunksize))

  def worker_ids(self) -> list[int]:
    """Pids of the worker processes (thread idents for a thread pool); [] before the first map."""
    with self._lock:
      executor = self._executor
    if executor is None:
      return []
    if self.kind == "process":
      return sorted(executor._processes or {})  # There is no public accessor.
    return sorted(thread.ident for thread in executor._threads)

  def close(self) -> None:
    """Shuts the executor down, waiting for running work; a later ``map`` starts a new one."""
    with self._lock:
      finalizer, self._executor, self._finalizer = self._finalizer, None, None
    if finalizer is not None:
      finalizer()

  def _started(self) -> concurrent.futures.Executor:
    with self._lock:
      executor = self._executor
    if executor is not None and self.kind == "process" and not _all_alive(executor):
      # A worker that died between maps may go unnoticed by the executor when the others finish
      # the next map alone; replace it now, so every map starts with num_workers live workers.
      self._discard(executor)
    with self._lock:
      if self._executor is None:
        if self.kind == "process":
          self._executor = concurrent.futures.ProcessPoolExecutor(
              self.num_workers, mp_context=multiprocessing.get_context("spawn"))
        else:
          self._executor = concurrent.futures.ThreadPoolExecutor(self.num_workers)
        # Runs on close(), when the pool is garbage-collected, or at interpreter exit.
        self._finalizer = weakref.finalize(self, self._executor.shutdown, wait=True,
                                           cancel_futures=True)
      return self._executor

  def _discard(self, broken: concurrent.futures.Executor) -> None:
    with self._lock:
      if self._executor is not broken:
        return  # Another thread replaced it already.
      finalizer, self._executor, self._finalizer = self._finalizer, None, None
    finalizer.detach()
    broken.shutdown(wait=False, cancel_futures=True)

  def __getstate__(self) -> dict[str, Any]:
    return {"num_workers": self.num_workers, "kind": self.kind}

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.__init__(**state)


def _all_alive(executor: concurrent.futures.ProcessPoolExecutor) -> bool:
  processes = dict(executor._processes or {})  # There is no public accessor.
  return all(process.is_alive() for process in processes.values())


class ClosingContext:
  """Mixin: ``with verifier: ...`` calls the class's ``close()`` on the way out."""

  def __enter__(self):
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()
