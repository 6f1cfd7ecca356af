"""The harness that runs inside each sandboxed interpreter (stdlib only, Python >= 3.8).

``sandbox.py`` starts ``python -I -c <this file's source + "main()">`` as an unprivileged user in a
fresh temp dir. This file is never imported by the parent. ``main``:

1. lowers its own resource limits (CPU, memory, processes, file size, open files, core dumps);
2. reads the run's payload from ``payload.json`` and deletes it; the payload holds the per-run
   secret token and the number of the result pipe, and both stay in the local variables of the
   worker thread's frame, which nothing in the program can reach once step 3 is done;
3. installs an audit hook that refuses frame and object introspection (``sys._getframe`` except
   from the few stdlib functions that only read a module name, ``tb_frame``, ``gc.get_objects``,
   tracing, ctypes), sockets, subprocesses, signals to other processes, and file access outside
   the temp dir and the interpreter's own library dirs;
4. runs the program, then the tests in a private namespace whose builtins are a copy taken before
   the program ran (so a program that patches ``builtins`` cannot fool the asserts), then
   ``check(candidate)``;
5. writes ``<token> <passed> <total>`` to the result pipe only after ``check`` returned.

A program that exits early, crashes, loops or forges output never writes the token, so it fails.
"""

import builtins
import json
import os
import resource
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


def _set_limits(limits):
  for name, value in limits.items():
    resource.setrlimit(getattr(resource, name), (value, value))


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


def _worker(outcome):
  """Runs program and tests; writes the token only when the tests ran to the end."""
  # Captured before the program runs: it may patch builtins and modules, not these locals.
  write, run, copy_dict, count = os.write, exec, dict, sum
  with open(_PAYLOAD, "r", encoding="utf-8") as f:
    payload = json.load(f)
  os.unlink(_PAYLOAD)
  token, result_fd = payload["token"], payload["result_fd"]
  total, partial = payload["num_asserts"], payload["partial"]
  recorder_name, entry_point = _RECORDER, payload["entry_point"]
  pristine_builtins = copy_dict(builtins.__dict__)
  program_code = compile(payload["program"], "program.py", "exec")
  test_code = compile(payload["test"], "test.py", "exec")
  if payload["audit"]:
    read_roots = [os.path.realpath(p) for p in sys.path if p and os.path.isdir(p)]
    read_roots += [os.path.realpath(p) for p in (sys.prefix, sys.base_prefix)]
    sys.addaudithook(_make_audit_hook(os.path.realpath(os.getcwd()), tuple(read_roots)))
  del payload
  results = {}

  def record_assert(index, ok):
    results[index] = results.get(index, True) and ok

  # The parent starts the program's wall-clock deadline here, so a slow interpreter start on a
  # loaded machine is not charged to the program.
  write(result_fd, b"ready\n")
  try:
    program_globals = {"__name__": "__sandbox__", "__builtins__": builtins}
    run(program_code, program_globals)
    # The tests get their own namespace: the program cannot rebind the names they use.
    test_globals = copy_dict(program_globals)
    test_globals["__builtins__"] = pristine_builtins
    test_globals[recorder_name] = record_assert
    run(test_code, test_globals)
    check, candidate = test_globals["check"], test_globals[entry_point]
  except BaseException as error:  # Anything the program raises (SystemExit included) fails.
    _report(error)
    outcome.append("error")
    return
  try:
    check(candidate)
    finished = True
  except BaseException as error:
    _report(error)
    finished = False
  if partial:  # Asserts already recorded count even when check stopped early.
    passed = count(1 for ok in results.values() if ok is True)
  elif finished:
    passed = total
  else:
    outcome.append("failed")
    return
  write(result_fd, ("%s %d %d\n" % (token, passed, total)).encode("ascii"))
  outcome.append("done")


def _report(error):
  """Best effort: the error's type and message on stderr, for whoever debugs a failure."""
  try:
    os.write(2, ("sandbox: %s: %s\n" % (type(error).__name__, error))[:2000].encode())
  except BaseException:
    pass


def main():
  outcome = []
  try:
    _set_limits(json.loads(sys.argv[1]))
    # In a thread of its own, so a signal handler installed by the program (which runs in the
    # main thread and is handed the main thread's frame) never sees the worker's frame.
    thread = threading.Thread(target=_worker, args=(outcome,), daemon=True)
    thread.start()
  except BaseException as error:
    _report(error)
    os._exit(_LAUNCH_FAILED)
  thread.join()
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except BaseException:
      pass
  os._exit(0 if outcome == ["done"] else 1)
