"""The sandbox's limits, result parsing and layers, driven directly."""

import ast
import dataclasses
import os
import shutil
import signal
import tempfile
import threading

import pytest

from bonjax.verifiers import fork_server as fork_server_lib
from bonjax.verifiers import sandbox as sandbox_lib

CHECK = "def check(candidate):\n    assert candidate() == 1\n"


@pytest.fixture(scope="module", params=[True, False], ids=["fork_server", "interpreter_per_run"])
def sandbox(request):
  return sandbox_lib.Sandbox(sandbox_lib.SandboxLimits(timeout_s=3.0, memory_mb=256),
                             fork_server=request.param)


def test_pass_fail_and_captured_output(sandbox):
  ok = sandbox.run("def f():\n    print('hello')\n    return 1\n", CHECK, "f")
  assert (ok.reason, ok.passed, ok.finished, ok.fraction) == ("ok", 1, True, 1.0)
  assert ok.stdout == "hello\n"
  bad = sandbox.run("def f():\n    return 2\n", CHECK, "f")
  assert (bad.reason, bad.fraction) == ("failed", 0.0)
  assert "AssertionError" in bad.stderr


def test_memory_limit(sandbox):
  result = sandbox.run("def f():\n    x = bytearray(512 << 20)\n    return 1\n", CHECK, "f")
  assert result.reason == "failed" and "MemoryError" in result.stderr


def test_runs_as_an_unprivileged_user_without_network_when_root(sandbox):
  program = ("import os, socket\ndef f():\n    assert os.getuid() not in (0, %d)\n"
             "    return 1\n" % os.getuid())
  result = sandbox.run(program, CHECK, "f")
  assert result.reason == ("ok" if sandbox.isolate_user else "failed")
  if sandbox.isolate_network:
    # With the audit hook off, only the empty network namespace stands between it and the host.
    no_audit = sandbox_lib.Sandbox(sandbox.limits, audit=False, fork_server=sandbox.fork_server)
    program = ("import socket\ndef f():\n"
               "    return int([name for _, name in socket.if_nameindex()] == ['lo'])\n")
    assert no_audit.run(program, CHECK, "f").reason == "ok"  # Only a loopback, and it is down.


def test_interpreter_is_runnable_by_the_sandbox_user(sandbox):
  assert sandbox_lib._world_accessible(sandbox.python) or not sandbox.isolate_user


@pytest.mark.parametrize("field, value", [("timeout_s", 0), ("memory_mb", -1),
                                          ("max_output_bytes", 0)])
def test_limits_must_be_positive(field, value):
  with pytest.raises(ValueError, match=f"SandboxLimits.{field} must be positive"):
    sandbox_lib.SandboxLimits(**{field: value})


def test_isolate_user_needs_root(monkeypatch):
  monkeypatch.setattr(sandbox_lib.os, "geteuid", lambda: 1000)  # As a non-root user sees it.
  with pytest.raises(ValueError, match="needs root"):
    sandbox_lib.Sandbox(isolate_user=True)


def _interpreter(directory: str, script: str) -> str:
  """A wrapper around the sandbox's python, runnable by the sandbox uids."""
  os.chmod(directory, 0o777)  # The sandbox uid writes the marker of the flaky wrapper here.
  path = os.path.join(directory, "python3")
  with open(path, "w") as f:
    f.write("#!/bin/sh\n" + script.format(python=sandbox_lib.default_python(), dir=directory))
  os.chmod(path, 0o755)
  return path


def _stop_server(python: str) -> None:
  server = fork_server_lib._SERVERS.pop(python, None)
  if server is not None:
    server.close()


def test_a_slow_interpreter_start_is_not_charged_to_the_program():
  directory = tempfile.mkdtemp(prefix="bonjax-slow-python-")
  try:
    slow_python = _interpreter(directory, "sleep 1.5\nexec {python} \"$@\"\n")
    limits = sandbox_lib.SandboxLimits(timeout_s=1.0, memory_mb=256)
    sleeper = "import time\ndef f():\n    time.sleep(1.5)\n    return 1\n"
    for fork_server in (False, True):
      slow = sandbox_lib.Sandbox(limits, python=slow_python, fork_server=fork_server)
      assert slow.run("def f():\n    return 1\n", CHECK, "f").reason == "ok"
      assert slow.run(sleeper, CHECK, "f").reason == "timeout"
    _stop_server(slow_python)
    too_slow = dataclasses.replace(limits, startup_timeout_s=0.5)
    # Started per run, it is the run that times out; a server that cannot start is the machine's.
    assert sandbox_lib.Sandbox(too_slow, python=slow_python, fork_server=False).run(
        "def f():\n    return 1\n", CHECK, "f").reason == "timeout"
    result = sandbox_lib.Sandbox(too_slow, python=slow_python).run(
        "def f():\n    return 1\n", CHECK, "f")
    assert result.reason == "launch_error" and "did not start within 0.5 s" in result.stderr
  finally:
    _stop_server(slow_python)
    shutil.rmtree(directory)


@pytest.mark.parametrize("fork_server", [True, False])
def test_a_harness_that_cannot_start_is_a_launch_error_and_is_retried(fork_server):
  directory = tempfile.mkdtemp(prefix="bonjax-flaky-python-")
  try:
    limits = sandbox_lib.SandboxLimits(timeout_s=3.0, memory_mb=256)
    # Fails as the harness does when it cannot start a thread, once, then works.
    flaky = _interpreter(directory, "[ -e {dir}/tried ] || {{ touch {dir}/tried; exit 3; }}\n"
                                    "exec {python} \"$@\"\n")
    assert sandbox_lib.Sandbox(limits, python=flaky, fork_server=fork_server).run(
        "def f():\n    return 1\n", CHECK, "f").reason == "ok"
    assert os.path.exists(os.path.join(directory, "tried"))
    broken = _interpreter(tempfile.mkdtemp(dir=directory), "exit 3\n")
    result = sandbox_lib.Sandbox(limits, python=broken, fork_server=fork_server).run(
        "def f():\n    return 1\n", CHECK, "f")
    assert (result.reason, result.fraction) == ("launch_error", 0.0)
    # A program's own exit status 3 is the program failing, not a launch error.
    exits = "import os\ndef f():\n    os._exit(3)\n"
    assert sandbox_lib.Sandbox(limits, fork_server=fork_server).run(
        exits, CHECK, "f").reason == "failed"
  finally:
    for python in list(fork_server_lib._SERVERS):
      if python.startswith(directory):
        _stop_server(python)
    shutil.rmtree(directory)


def test_the_fork_server_is_shared_and_started_again_when_it_dies():
  limits = sandbox_lib.SandboxLimits(timeout_s=5.0, memory_mb=256)
  sandbox = sandbox_lib.Sandbox(limits)
  assert sandbox.run("def f():\n    return 1\n", CHECK, "f").reason == "ok"
  server = fork_server_lib._SERVERS[sandbox.python]
  other = sandbox_lib.Sandbox(dataclasses.replace(limits, timeout_s=4.0), audit=False)
  assert other.run("def f():\n    return 1\n", CHECK, "f").reason == "ok"
  assert fork_server_lib._SERVERS[sandbox.python] is server  # One server per interpreter.
  # Killed while a run is under way: that attempt is the machine's fault, so the run is tried
  # again on a new server, and passes.
  killer = threading.Timer(1.0, lambda: os.kill(server.process.pid, signal.SIGKILL))
  killer.start()
  sleeper = "import time\ndef f():\n    time.sleep(2.0)\n    return 1\n"
  result = sandbox.run(sleeper, CHECK, "f")
  killer.join()
  assert result.reason == "ok", result
  assert fork_server_lib._SERVERS[sandbox.python] is not server
  assert server.process.poll() == -signal.SIGKILL


def test_a_run_forked_by_the_server_starts_clean():
  """Each run sees a pristine interpreter: no descriptors of the server's, fresh `random` state,
  its own session, and (as root) its own uid and network namespace."""
  program = ("import os, random, sys\n"
             "FDS = sorted(int(fd) for fd in os.listdir('/proc/self/fd'))\n"
             "def f():\n"
             "    return (FDS, random.random(), os.getsid(0) == os.getppid(),\n"
             "            os.getuid(), os.readlink('/proc/self/ns/net'))\n")
  test = "def check(candidate):\n    print(repr(candidate()))\n"
  sandbox = sandbox_lib.Sandbox(sandbox_lib.SandboxLimits(timeout_s=5.0, memory_mb=256),
                                audit=False)
  first, second = (ast.literal_eval(sandbox.run(program, test, "f").stdout) for _ in range(2))
  fds, _, own_session, uid, net = first
  assert fds[:3] == [0, 1, 2] and len(fds) <= 6, fds  # Its two pipes and listdir's own.
  assert first[1] != second[1]  # `random` is seeded per run, not inherited from the server.
  assert own_session  # The harness (its parent) leads the run's session.
  if sandbox.isolate_user:
    assert uid != 0
  if sandbox.isolate_network:
    assert net not in (os.readlink("/proc/self/ns/net"), second[4])


def test_uids_are_handed_out_least_recently_used_first():
  pool = sandbox_lib._UidPool(61100, 3)  # Outside the range the other tests use.
  first = pool.acquire()
  pool.release(first)
  second = pool.acquire()
  pool.release(second)
  assert second != first


def test_a_uid_still_owning_processes_is_handed_out_only_when_no_clean_one_is_free(monkeypatch):
  monkeypatch.setattr(sandbox_lib, "_uids_owning_processes", lambda: {61200})  # e.g. zombies
  pool = sandbox_lib._UidPool(61200, 2)
  clean = pool.acquire()
  assert clean == 61201
  assert pool.acquire() == 61200  # The only one left.
  pool.release(clean)
  pool.release(61200)


def test_the_programs_process_holds_nothing_of_the_tests():
  """The tests' source (and so their expected values) never reaches the program's process: with
  the audit hook off it scans every object it can reach for a marker that only the tests hold."""
  program = ("import gc, os, sys\ndef f():\n"
             "    marker = '-'.join(['TESTS', 'ONLY', 'MARKER'])  # Not a folded constant.\n"
             "    seen = [o for o in gc.get_objects() if isinstance(o, (tuple, list, dict))]\n"
             "    texts = [v for o in seen for v in (o.values() if isinstance(o, dict) else o)\n"
             "             if isinstance(v, str)]\n"
             "    return (os.listdir('.'), sum(marker in t for t in texts), len(texts) > 1000)\n")
  test = "def check(candidate):\n    assert candidate() == ([], 0, True), 'TESTS-ONLY-MARKER'\n"
  no_audit = sandbox_lib.Sandbox(sandbox_lib.SandboxLimits(timeout_s=5.0), audit=False)
  result = no_audit.run(program, test, "f")
  assert result.reason == "ok", result.stderr
