"""The audit hook of the sandboxed program's process (stdlib only, Python >= 3.8).

``sandbox.py`` runs this file's source, then ``_sandbox_child.py``'s, in one ``python -I -c``;
the child installs ``make_audit_hook(...)`` in the program's process before the program runs.
The hook refuses sockets, subprocesses and forks, signals sent with ``os.kill`` (so the program
cannot stop the tests' process), file access outside the run's temp dir and the interpreter's own
library dirs (``/proc/<pid>/mem`` of the tests' process included), tracing, frame and object
introspection (``sys._getframe`` except from the few stdlib functions that only read a module
name, ``tb_frame``, ``gc.get_objects``) and ctypes. The program's process holds nothing of the
tests, so the introspection rules are defence in depth; the file rules keep it off the host.
"""

import os
import sys
import threading

# Imported before the audit hook is installed (some of them take frames at import time).
import collections  # noqa: F401
import enum  # noqa: F401
import functools  # noqa: F401
import typing  # noqa: F401


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


def make_audit_hook(cwd, read_roots):
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
