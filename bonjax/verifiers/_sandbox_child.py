"""The harness that runs inside each sandboxed interpreter (stdlib only, Python >= 3.8).

``sandbox.py`` starts ``python -I -c <this file's source + "main()">`` as an unprivileged user in a
fresh temp dir holding the run's ``payload.json``. This file is never imported by the parent.

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
* The **program process** (the child) closes every descriptor but its two pipes, installs an audit
  hook, runs the program and then serves the calls. The hook refuses sockets, subprocesses and
  forks, signals sent with ``os.kill``, file access outside the temp dir and the interpreter's own
  library dirs, tracing, frame and object introspection (``sys._getframe`` except from the few
  stdlib functions that only read a module name, ``tb_frame``, ``gc.get_objects``) and ctypes.

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
import threading

# Imported before the audit hook is installed (some of them take frames at import time).
import collections  # noqa: F401
import enum  # noqa: F401
import functools  # noqa: F401
import typing  # noqa: F401

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
      raise EOFError("the other process closed its pipe")
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
    sys.addaudithook(_make_audit_hook(os.path.realpath(os.getcwd()), tuple(read_roots)))
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
    except EOFError:
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


def _frame_takers():
  """{code: module globals} of stdlib functions that call sys._getframe only to read a module name."""
  takers = {}
  for module, path in ((typing, "_caller"), (collections, "namedtuple"),
                       (enum, "EnumType._create_"), (enum, "EnumMeta._create_")):
    function = module
    for name in path.split("."):
      function = getattr(function, name, None)
    code = getattr(function, "__code__", None)
    if code is not None:
      takers[code] = module.__dict__
  return takers


def _make_audit_hook(cwd, read_roots):
  """Returns an audit hook confining the program; it uses only references captured here."""
  # The program may patch modules and builtins, so the hook must not look any name up later.
  lstat, readlink, str_slice = os.lstat, os.readlink, str.__getitem__
  bytes_slice, bytes_decode = bytes.__getitem__, bytes.decode
  permission_error, os_error = PermissionError, OSError
  is_instance, exact_str, exact_bytes, exact_int = isinstance, str, bytes, int
  text_types, full_slice, any_of, to_bool = (str, bytes), slice(None), any, bool
  write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
  forbidden_events = frozenset([
      "sys.settrace", "sys.setprofile",
      "sys._current_frames", "gc.get_objects", "gc.get_referrers", "gc.get_referents",
      "os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn", "os.system",
      "subprocess.Popen", "os.kill", "os.killpg", "signal.pthread_kill",
      "os.chdir", "os.chroot", "os.link", "os.symlink", "os.setuid", "os.setgid",
      "resource.setrlimit", "resource.prlimit", "sys.remote_exec", "faulthandler.enable"])
  frame_attributes = frozenset(["tb_frame", "gi_frame", "cr_frame", "ag_frame"])
  get_frame, get_ident, in_hook = sys._getframe, threading.get_ident, set()
  frame_takers = _frame_takers()
  path_events = frozenset(["os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod",
                           "os.chown", "os.utime", "os.truncate", "os.listdir", "os.scandir",
                           "shutil.rmtree", "shutil.copyfile", "shutil.move", "glob.glob"])
  writing_path_events = frozenset(["os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod",
                                   "os.chown", "os.utime", "os.truncate", "shutil.rmtree",
                                   "shutil.copyfile", "shutil.move"])
  allowed_devices = frozenset(["/dev/null", "/dev/urandom", "/dev/random", "/dev/zero"])

  def as_text(path):
    # Exact copies of str/bytes paths, so a subclass with overridden methods cannot lie to us.
    if is_instance(path, exact_str):
      return str_slice(path, full_slice)
    if is_instance(path, exact_bytes):
      return bytes_decode(bytes_slice(path, full_slice), "utf-8", "surrogateescape")
    raise permission_error("sandbox: paths must be str or bytes")

  def resolve(path):
    """Absolute path with '.', '..' and symlinks resolved (missing components kept as they are)."""
    if not path.startswith("/"):
      path = cwd + "/" + path
    pending = path.split("/")[::-1]
    parts = []
    hops = 0
    while pending:
      part = pending.pop()
      if part in ("", "."):
        continue
      if part == "..":
        if parts:
          parts.pop()
        continue
      candidate = "/" + "/".join(parts + [part])
      try:
        mode = lstat(candidate).st_mode
      except os_error:
        parts.append(part)
        continue
      if mode & 0o170000 == 0o120000:
        hops += 1
        if hops > 40:
          raise permission_error("sandbox: too many symbolic links")
        target = readlink(candidate)
        if target.startswith("/"):
          parts = []
        pending.extend(target.split("/")[::-1])
      else:
        parts.append(part)
    return "/" + "/".join(parts)

  def inside(path, root):
    return path == root or path.startswith(root.rstrip("/") + "/")

  def check_path(path, writing):
    if is_instance(path, exact_int):
      return  # An already open descriptor.
    resolved = resolve(as_text(path))
    if resolved in allowed_devices:
      return
    if inside(resolved, cwd):
      return
    if not writing:
      for root in read_roots:
        if inside(resolved, root):
          return
    raise permission_error("sandbox: no access to %s outside the sandbox dir" % resolved)

  def may_take_frame():
    """True when sys._getframe was called by a known stdlib function that only reads a name."""
    caller = get_frame(2)  # 0: this function, 1: hook; sys._getframe itself has no frame.
    return frame_takers.get(caller.f_code) is caller.f_globals

  def hook(event, args):
    thread = get_ident()
    if thread in in_hook:
      return  # The hook's own sys._getframe and frame attribute reads.
    if event == "sys._getframe":
      in_hook.add(thread)
      try:
        allowed = may_take_frame()
      finally:
        in_hook.discard(thread)
      if not allowed:
        raise permission_error("sandbox: sys._getframe is not allowed")
    if event in forbidden_events or event.startswith(("socket.", "ctypes.")):
      raise permission_error("sandbox: %s is not allowed" % event)
    if event == "object.__getattr__" and args[1] in frame_attributes:
      raise permission_error("sandbox: frame introspection is not allowed")
    if event == "import" and args[0] in ("ctypes", "_ctypes", "_xxsubinterpreters"):
      raise permission_error("sandbox: module %s is not allowed" % args[0])
    if event == "open":
      path, mode, flags = args
      writing = to_bool(flags & write_flags) if mode is None else any_of(c in mode for c in "wax+")
      check_path(path, writing)
      if not is_instance(path, exact_int):
        try:
          is_dir = lstat(resolve(as_text(path))).st_mode & 0o170000 == 0o040000
        except os_error:
          is_dir = False
        if is_dir:  # Directory descriptors would allow dir_fd tricks past the path check.
          raise permission_error("sandbox: opening directories is not allowed")
    elif event in path_events:
      for path in args:
        if is_instance(path, text_types):
          check_path(path, event in writing_path_events)

  return hook


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
      seen.add(id(item))
      pending.extend(item.items() if kind is dict else item)
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
    except (EOFError, OSError):
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


def main():
  try:
    _set_limits(json.loads(sys.argv[1]))
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
