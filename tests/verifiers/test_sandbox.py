"""The sandbox's limits, result parsing and layers, driven directly."""

import dataclasses
import os
import shutil
import tempfile

import pytest

from bonjax.verifiers import sandbox as sandbox_lib

CHECK = "def check(candidate):\n    assert candidate() == 1\n"


@pytest.fixture(scope="module")
def sandbox():
  return sandbox_lib.Sandbox(sandbox_lib.SandboxLimits(timeout_s=3.0, memory_mb=256))


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
    no_audit = sandbox_lib.Sandbox(sandbox.limits, audit=False)
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


def test_a_slow_interpreter_start_is_not_charged_to_the_program():
  directory = tempfile.mkdtemp(prefix="bonjax-slow-python-")
  try:
    slow_python = _interpreter(directory, "sleep 1.5\nexec {python} \"$@\"\n")
    limits = sandbox_lib.SandboxLimits(timeout_s=1.0, memory_mb=256)
    slow = sandbox_lib.Sandbox(limits, python=slow_python)
    assert slow.run("def f():\n    return 1\n", CHECK, "f").reason == "ok"
    sleeper = "import time\ndef f():\n    time.sleep(1.5)\n    return 1\n"
    assert slow.run(sleeper, CHECK, "f").reason == "timeout"
    too_slow = sandbox_lib.Sandbox(dataclasses.replace(limits, startup_timeout_s=0.5),
                                   python=slow_python)
    assert too_slow.run("def f():\n    return 1\n", CHECK, "f").reason == "timeout"
  finally:
    shutil.rmtree(directory)


def test_a_harness_that_cannot_start_is_a_launch_error_and_is_retried():
  directory = tempfile.mkdtemp(prefix="bonjax-flaky-python-")
  try:
    limits = sandbox_lib.SandboxLimits(timeout_s=3.0, memory_mb=256)
    # Fails as the harness does when it cannot start a thread, once, then works.
    flaky = _interpreter(directory, "[ -e {dir}/tried ] || {{ touch {dir}/tried; exit 3; }}\n"
                                    "exec {python} \"$@\"\n")
    assert sandbox_lib.Sandbox(limits, python=flaky).run(
        "def f():\n    return 1\n", CHECK, "f").reason == "ok"
    assert os.path.exists(os.path.join(directory, "tried"))
    broken = _interpreter(tempfile.mkdtemp(dir=directory), "exit 3\n")
    result = sandbox_lib.Sandbox(limits, python=broken).run("def f():\n    return 1\n", CHECK, "f")
    assert (result.reason, result.fraction) == ("launch_error", 0.0)
    # A program's own exit status 3 is the program failing, not a launch error.
    exits = "import os\ndef f():\n    os._exit(3)\n"
    assert sandbox_lib.Sandbox(limits).run(exits, CHECK, "f").reason == "failed"
  finally:
    shutil.rmtree(directory)


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
