"""The harness that runs inside each sandboxed interpreter (stdlib only, Python >= 3.8).

``main`` runs as an unprivileged user in a fresh temp dir holding the run's ``payload.json``, in a
pristine interpreter: a fork of the fork server (``_sandbox_server.py``, which holds this file), or
``python -I -c <_sandbox_audit.py + this file + "main(...)">`` started for the run. This file is
never imported by the parent.

``main`` lowers its own resource limits (CPU, memory, processes, file size, open files, core dumps)
and forks, before it has read anything of the run (this interpreter holds no jax, so forking it is
safe). From then on the program and the tests live in two processes that share no memory:

* The **test process** (the parent) reads the payload (the per-run secret token, the tests, the
  task's trusted prompt, the number of the result pipe) and deletes it, then sends the program's
  source to the other process. It runs the prompt and the tests in a namespace of its own and calls
  ``check(candidate)``, where ``candidate`` is a proxy: each call sends the arguments (marshal bytes
  of plain data) to the program process and turns the reply back into a value or an exception.
  It writes ``<token> <passed> <total>`` to the result pipe only after ``check`` returned and no
  reply broke the rules below. No program code ever runs in this process.
* The **program process** (the child) closes every descriptor but its two pipes, installs the
  audit hook of ``_sandbox_audit.py`` (no sockets, subprocesses, forks, ``os.kill``, tracing,
  introspection, ctypes, nor files outside its temp dir and the interpreter's library dirs), runs
  the program and then serves the calls.

What crosses from the program to the tests is plain data only: None, bool, int, float, complex,
str, bytes, and tuples, lists, dicts, sets and frozensets of plain data, each of exactly that type
(checked in the test process after ``marshal.loads``, which builds nothing else but code objects,
``...`` and ``StopIteration``, all refused). The program process converts what the entry point
returns: a subclass of a plain type becomes the base type's value, read with the base type's own
methods (an ``int`` subclass overriding ``__eq__`` arrives as the plain int it holds); anything
else (a generator, an object with its own ``__eq__``, a numpy array) is refused. A NaN anywhere in
a value is refused unless the tests mention NaN (``allow_nan``): every comparison with NaN is
False, so NaN passes tests written as ``assert not abs(x - y) > tol``. An exception the entry
point raises arrives as a fresh instance of the nearest builtin ``Exception`` class in its MRO,
with its args when they are plain data; a ``BaseException`` that is not an ``Exception``
(SystemExit, KeyboardInterrupt) fails the run. A refused reply, a reply over ``_MAX_MESSAGE``
bytes, or a program process that died fails the whole run (partial credit included), even when
the tests catch the exception that the proxy raises for it.
"""

import builtins
import json
import marshal
import os
import resource
import signal
import sys

# sandbox.py runs this file after _sandbox_audit.py, which defines make_audit_hook.

_PAYLOAD = "payload.json"
# Exit status when the harness itself could not start (before the program ran): the parent
# reports a launch error, never a failed program.
_LAUNCH_FAILED = 3
_RECORDER = "__bonjax_record_assert__"
_MAX_MESSAGE = 1 << 24  # Bytes of one call or reply; a larger reply fails the run.
_HEADER = 8  # A message is its length (big-endian) and then its marshal bytes.
_ATOMS = (type(None), bool, int, float, complex, str, bytes)
_CONTAINERS = (tuple, list, set, frozenset, dict)
_PLAIN = frozenset(_ATOMS + _CONTAINERS)
# What an exception raised by the entry point arrives as: the nearest of these in its MRO.
_BUILTIN_EXCEPTIONS = frozenset(value for value in vars(builtins).values()
                                if isinstance(value, type) and issubclass(value, BaseException))


class _PipeClosed(Exception):
  """The other process closed its end (marshal's own EOFError means truncated data)."""


def _set_limits(limits):
  for name, value in limits.items():
    resource.setrlimit(getattr(resource, name), (value, value))


def _send(fd, message):
  data = marshal.dumps(message)
  view = memoryview(len(data).to_bytes(_HEADER, "big") + data)
  while view:
    view = view[os.write(fd, view):]


def _read_exactly(fd, size):
  chunks, left = [], size
  while left:
    chunk = os.read(fd, min(left, 1 << 20))
    if not chunk:
      raise _PipeClosed()
    chunks.append(chunk)
    left -= len(chunk)
  return b"".join(chunks)


def _receive(fd):
  size = int.from_bytes(_read_exactly(fd, _HEADER), "big")
  if size > _MAX_MESSAGE:
    raise ValueError("a message of %d bytes (the limit is %d)" % (size, _MAX_MESSAGE))
  return marshal.loads(_read_exactly(fd, size))


def _report(error, prefix="sandbox: "):
  """Best effort: the error's type and message on stderr, for whoever debugs a failure."""
  try:
    os.write(2, ("%s%s: %s\n" % (prefix, type(error).__name__, error))[:2000].encode())
  except BaseException:
    pass


# The program process. Nothing here is trusted by the tests: whatever it sends is checked there.

def _to_plain(value):
  """``value`` as plain data; a subclass of a plain type becomes its base type's value."""
  kind = type(value)
  if kind in _ATOMS:
    return value
  if issubclass(kind, int):  # bool cannot be subclassed: an int subclass (IntEnum, ...).
    return int.__int__(value)
  if issubclass(kind, float):
    return float.__float__(value)
  if issubclass(kind, complex):
    return complex(complex.real.__get__(value), complex.imag.__get__(value))
  if issubclass(kind, str):
    return str.__str__(value)
  if issubclass(kind, bytes):
    return bytes.__getitem__(value, slice(None))
  if issubclass(kind, tuple):  # namedtuples too.
    return tuple(_to_plain(item) for item in tuple.__iter__(value))
  if issubclass(kind, list):
    return [_to_plain(item) for item in list.__iter__(value)]
  if issubclass(kind, dict):  # Counter, defaultdict, OrderedDict too.
    return {_to_plain(key): _to_plain(item) for key, item in dict.items(value)}
  if issubclass(kind, frozenset):
    return frozenset(_to_plain(item) for item in frozenset.__iter__(value))
  if issubclass(kind, set):
    return {_to_plain(item) for item in set.__iter__(value)}
  raise TypeError("a %s is not plain data" % kind.__name__)


def _exception_reply(error):
  name = "BaseException"
  for kind in type(error).__mro__:
    if kind in _BUILTIN_EXCEPTIONS:
      name = kind.__name__
      break
  try:
    args = _to_plain(tuple(BaseException.args.__get__(error)))
  except BaseException:
    args = ()
  return ("raise", name, args)


def _flush_output():
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except BaseException:
      pass


def _program_side(calls, replies):
  """Runs the program, then answers calls until the test process closes its pipe. Never returns."""
  keep = {0, 1, 2, calls, replies}
  for name in os.listdir("/proc/self/fd"):  # The result pipe and whatever else was inherited.
    if int(name) not in keep:
      try:
        os.close(int(name))
      except OSError:
        pass
  _, program, entry_point, audit = _receive(calls)
  if audit:
    read_roots = [os.path.realpath(p) for p in sys.path if p and os.path.isdir(p)]
    read_roots += [os.path.realpath(p) for p in (sys.prefix, sys.base_prefix)]
    sys.addaudithook(make_audit_hook(os.path.realpath(os.getcwd()), tuple(read_roots)))
  try:
    namespace = {"__name__": "__sandbox__", "__builtins__": builtins}
    exec(compile(program, "program.py", "exec"), namespace)
    candidate = namespace.get(entry_point)
    if not callable(candidate):
      raise NameError("the program defines no function %s" % entry_point)
    reply = ("loaded",)
  except BaseException as error:  # Anything the program raises (SystemExit included) fails.
    _report(error, "sandbox: program: ")
    reply = ("invalid", "the program raised %s" % type(error).__name__)
  _flush_output()
  _send(replies, reply)
  if reply != ("loaded",):
    os._exit(1)
  while True:
    try:
      _, args, kwargs = _receive(calls)
    except _PipeClosed:
      os._exit(0)
    try:
      value = candidate(*args, **kwargs)
    except BaseException as error:
      reply = _exception_reply(error)
    else:
      try:
        reply = ("return", _to_plain(value))
      except BaseException as error:
        reply = ("invalid", "%s returned %s" % (entry_point, error))
    _flush_output()
    _send(replies, reply)


# The test process. Only the harness, the prompt and the tests run here.

class _ProgramFailed(BaseException):
  """A reply broke the rules; a BaseException so that the tests' ``except Exception`` lets it by."""


def _plain_problem(value, allow_nan):
  """Why ``value`` (built by marshal.loads) is not plain data, or None when it is."""
  pending, seen = [value], set()
  while pending:
    item = pending.pop()
    kind = type(item)
    if kind not in _PLAIN:
      return "a %s" % kind.__name__
    if not allow_nan and ((kind is float and item != item)
                          or (kind is complex and (item.real != item.real
                                                   or item.imag != item.imag))):
      return "a NaN (the tests do not mention NaN)"
    if kind in _CONTAINERS and id(item) not in seen:  # marshal can build cyclic values.
      seen.add(id(item))  # Only ids of objects inside the value, alive while it is.
      if kind is dict:
        pending.extend(item.keys())
        pending.extend(item.values())
      else:
        pending.extend(item)
  return None


class _Proxy:
  """Calls the entry point in the program process; records the first broken rule in ``failure``."""

  def __init__(self, calls, replies, allow_nan):
    self.calls, self.replies, self.allow_nan = calls, replies, allow_nan
    self.failure = None
    self.exceptions = {kind.__name__: kind for kind in _BUILTIN_EXCEPTIONS
                       if issubclass(kind, Exception)}

  def fail(self, why):
    if self.failure is None:
      self.failure = why
    raise _ProgramFailed(self.failure)

  def receive(self):
    try:
      reply = _receive(self.replies)
    except (_PipeClosed, OSError):
      self.fail("the program's process exited")
    except Exception as error:  # Oversized or not marshal data.
      self.fail("a malformed reply (%s: %s)" % (type(error).__name__, error))
    problem = _plain_problem(reply, self.allow_nan)
    if problem is not None:
      self.fail("the reply holds %s" % problem)
    if type(reply) is not tuple or not reply or type(reply[0]) is not str:
      self.fail("a malformed reply")
    return reply

  def loaded(self):
    reply = self.receive()
    if reply != ("loaded",):
      self.fail(reply[1] if reply[0] == "invalid" and len(reply) == 2 else "a malformed reply")

  def __call__(self, *args, **kwargs):
    if self.failure is not None:
      raise _ProgramFailed(self.failure)
    try:
      _send(self.calls, ("call", args, kwargs))
    except ValueError:
      raise TypeError("sandbox: the tests may pass plain data only to the entry point") from None
    except OSError:
      self.fail("the program's process exited")
    reply = self.receive()
    if reply[0] == "return" and len(reply) == 2:
      return reply[1]
    if reply[0] == "raise" and len(reply) == 3 and type(reply[2]) is tuple:
      kind = self.exceptions.get(reply[1])
      if kind is None:
        self.fail("the entry point raised %s" % reply[1])
      try:
        error = kind(*reply[2])
      except Exception:
        error = kind()
      raise error
    self.fail(reply[1] if reply[0] == "invalid" and len(reply) == 2 else "a malformed reply")


def _test_side(child, calls, replies):
  """Runs the tests against the program in ``child``; returns this process's exit status."""
  try:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # A KeyboardInterrupt could skip a recording.
    with open(_PAYLOAD, "r", encoding="utf-8") as f:
      payload = json.load(f)
    os.unlink(_PAYLOAD)  # Before the program (sent next) can run.
    result_fd = payload["result_fd"]
    _send(calls, ("program", payload["program"], payload["entry_point"], payload["audit"]))
  except BaseException as error:
    _report(error)
    return _LAUNCH_FAILED
  results = {}

  def record_assert(index, ok):
    results[index] = results.get(index, True) and ok

  # The parent starts the program's wall-clock deadline here, so a slow interpreter start on a
  # loaded machine is not charged to the program.
  os.write(result_fd, b"ready\n")
  proxy = _Proxy(calls, replies, payload["allow_nan"])
  try:
    namespace = {"__name__": "__sandbox__", "__builtins__": builtins}
    try:
      prompt = compile(payload["prompt"], "prompt.py", "exec")
    except SyntaxError:  # e.g. a prompt ending in a bare `def` line: it defines no helpers.
      prompt = None
    if prompt is not None:
      exec(prompt, namespace)  # The task's helpers (HumanEval/38's encode_cyclic) for the tests.
    exec(compile(payload["test"], "test.py", "exec"), namespace)
    check = namespace["check"]
    namespace[payload["entry_point"]] = proxy  # Tests that call it by name (HumanEval/33).
    namespace[_RECORDER] = record_assert
    proxy.loaded()
    check(proxy)
    finished = True
  except _ProgramFailed:
    finished = False  # Reported below.
  except BaseException as error:
    _report(error)
    finished = False
  finally:
    os.kill(child, signal.SIGKILL)
    os.waitpid(child, 0)
  if proxy.failure is not None:
    os.write(2, ("sandbox: the run fails: %s\n" % proxy.failure)[:2000].encode())
    return 1
  total = payload["num_asserts"]
  if payload["partial"]:  # Asserts already recorded count even when check stopped early.
    passed = sum(1 for ok in results.values() if ok is True)
  elif finished:
    passed = total
  else:
    return 1
  os.write(result_fd, ("%s %d %d\n" % (payload["token"], passed, total)).encode("ascii"))
  return 0


def main(limits):
  """Lowers the rlimits ``{name: value}``, forks the program's process, runs the tests."""
  try:
    _set_limits(limits)
    calls_read, calls_write = os.pipe()
    replies_read, replies_write = os.pipe()
    child = os.fork()
  except BaseException as error:
    _report(error)
    os._exit(_LAUNCH_FAILED)
  if child == 0:
    try:
      os.close(calls_write)
      os.close(replies_read)
      _program_side(calls_read, replies_write)
    finally:
      os._exit(1)
  os.close(calls_read)
  os.close(replies_write)
  status = _test_side(child, calls_write, replies_read)
  _flush_output()
  os._exit(status)
