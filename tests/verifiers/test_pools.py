"""Worker pools live across score calls, survive a killed worker, and close."""

import os
import pickle
import signal
import threading
import time

import numpy as np
import pytest

from bonjax import verifiers
from bonjax.verifiers.pools import WorkerPool

COMPLETIONS = [[r"\boxed{0.5}", r"\boxed{\frac{1}{3}}"], ["The answer is 18", "19"]]
METADATA = [{"answer": r"\frac{1}{2}"}, {"answer": "18"}]
EXPECTED = [[1.0, 0.0], [1.0, 0.0]]


def _score(verifier):
  return verifier.score(["a", "b"], COMPLETIONS, METADATA)


def _wait_until_dead(pid):
  for _ in range(500):
    try:
      with open(f"/proc/{pid}/stat") as f:
        if f.read().rpartition(")")[2].split()[0] in ("Z", "X"):
          return
    except FileNotFoundError:
      return
    time.sleep(0.01)
  raise AssertionError(f"worker {pid} did not die")


@pytest.fixture(scope="module")
def math_verifier():
  with verifiers.get("math_answer", num_workers=2) as verifier:
    yield verifier


def test_math_answer_reuses_its_worker_processes(math_verifier):
  np.testing.assert_array_equal(_score(math_verifier), EXPECTED)
  pids = math_verifier._pool.worker_ids()
  assert len(pids) == 2 and os.getpid() not in pids
  np.testing.assert_array_equal(_score(math_verifier), EXPECTED)
  assert math_verifier._pool.worker_ids() == pids


def _wait_until_reaped(pool, pid):
  # /proc shows a killed process as a zombie as soon as its main thread exits, while its other
  # threads may still be exiting: until they are, waitpid (and so the pool) still sees it alive.
  process = pool._executor._processes[pid]
  for _ in range(500):
    process.join(timeout=0.01)
    if not process.is_alive():
      return
  raise AssertionError(f"worker {pid} was not reaped")


def test_math_answer_survives_a_killed_worker(math_verifier):
  _score(math_verifier)
  victim = math_verifier._pool.worker_ids()[0]
  os.kill(victim, signal.SIGKILL)
  _wait_until_reaped(math_verifier._pool, victim)
  np.testing.assert_array_equal(_score(math_verifier), EXPECTED)
  pids = math_verifier._pool.worker_ids()
  assert len(pids) == 2 and victim not in pids


def test_close_stops_the_workers_and_a_later_call_starts_new_ones():
  pool = WorkerPool(2, "process")
  assert pool.worker_ids() == []
  assert pool.map(abs, [-1, 2, -3]) == [1, 2, 3]
  pids = pool.worker_ids()
  pool.close()
  assert pool.worker_ids() == []
  for pid in pids:
    _wait_until_dead(pid)
  assert pool.map(abs, [-4]) == [4]
  assert not set(pool.worker_ids()) & set(pids)
  pool.close()


def test_a_pool_that_breaks_twice_raises():
  pool = WorkerPool(1, "process")
  with pytest.raises(Exception, match="terminated abruptly"):
    pool.map(os._exit, [1])  # Kills its worker on every try.
  pool.close()


def test_code_execution_reuses_its_threads():
  verifier = verifiers.get("code_execution", timeout_s=5.0, max_workers=2)
  task = {"prompt": "def f():\n", "test": "def check(candidate):\n    assert candidate() == 1\n",
          "entry_point": "f"}
  for _ in range(2):
    scores = verifier.score(["p"], [["    return 1\n", "    return 2\n"]], [task])
    np.testing.assert_array_equal(scores, [[1.0, 0.0]])
    threads = verifier._pool.worker_ids()
    assert 1 <= len(threads) <= 2 and threading.get_ident() not in threads
    if _:
      assert threads == first
    first = threads
  verifier.close()
  assert verifier._pool.worker_ids() == []


@pytest.mark.parametrize("name, kwargs", [("math_answer", {"num_workers": 2}),
                                          ("code_execution", {"max_workers": 3})])
def test_verifiers_with_pools_pickle_without_them(name, kwargs):
  verifier = verifiers.get(name, **kwargs)
  verifier._pool.map(abs, [-1])  # Started: the executor must not travel.
  copy = pickle.loads(pickle.dumps(verifier))
  assert copy._pool.worker_ids() == [] and copy._pool.num_workers == verifier._pool.num_workers
  verifier.close()


def test_bad_pool_arguments():
  with pytest.raises(ValueError, match="kind must be one of"):
    WorkerPool(2, "fork")
  with pytest.raises(ValueError, match="num_workers must be a positive int"):
    WorkerPool(0)
