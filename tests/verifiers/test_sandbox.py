"""The sandbox's limits, result parsing and layers, driven directly."""

import os

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


@pytest.mark.skipif(os.geteuid() == 0, reason="checks the error a non-root user gets")
def test_isolate_user_needs_root():
  with pytest.raises(ValueError, match="needs root"):
    sandbox_lib.Sandbox(isolate_user=True)
