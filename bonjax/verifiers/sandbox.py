"""Running untrusted Python programs against their unit tests, one fresh process each.

The layers, outermost first (each holds on its own if another is missing):

* a pristine ``python -I`` interpreter, never a fork of this process (which may hold jax), with a
  minimal environment, stdin from /dev/null, in its own session: by default a fork of the fork
  server (``_sandbox_server.py``), an interpreter started once with ``subprocess`` that holds the
  harness and nothing of any run; with ``fork_server=False`` an interpreter started per run;
* when this process is root: a dedicated unprivileged uid per concurrent run (so the program cannot
  signal this process or the server, read root's files, or count against another run's process
  limit) and a new network namespace per run without interfaces (no network at all);
* resource limits set by the child harness before the program runs (CPU seconds, address space,
  processes, file size, open files, no core dumps), a wall-clock deadline enforced from here, and a
  cap on captured output (a run writing more is killed);
* the child harness (``_sandbox_child.py``): the program and the tests in two processes that
  share no memory, with only plain data (no objects of the program's) passing from one to the
  other; an audit hook in the program's process against introspection, sockets, subprocesses and
  file access outside the run's temp dir; and a per-run secret token, known only to the tests'
  process, proving that the tests ran to the end.

After every run all processes of the run's uid (or session) are killed and its temp dir removed.
"""

from __future__ import annotations

import collections
import dataclasses
import fcntl
import json
import math
import os
import pathlib
import re
import secrets
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time

from bonjax.verifiers import fork_server as fork_server_lib

# The harness: the audit hook's file, then the child's, which uses it (see _sandbox_child.py).
_CHILD_SOURCE = "\n".join(pathlib.Path(__file__).with_name(name).read_text("utf-8")
                          for name in ("_sandbox_audit.py", "_sandbox_child.py"))
_CHILD_SOURCE += "\nmain(json.loads(sys.argv[1]))\n"
_MINIMAL_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0",
                "PYTHONDONTWRITEBYTECODE": "1", "HOME": "/nonexistent"}
# Sandbox uids are claimed with a lock file each, so that runs in several processes on one host
# never share a uid (and never kill each other's processes).
_LOCK_DIR = pathlib.Path(tempfile.gettempdir()) / "bonjax-sandbox-uids"
_LAUNCH_FAILED = 3  # The harness's exit status when it could not start (see _sandbox_child.py).
_LAUNCH_ATTEMPTS = 3
_SERVED_RESULT_FD = 3  # Where a run forked by the fork server finds the result pipe.
# Tests that mention NaN may expect it as a return value; otherwise a NaN fails the run.
_MENTIONS_NAN = re.compile(r"\bnan\b|isnan", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class SandboxLimits:
  """Resource limits for one program.

  Attributes:
    timeout_s: wall-clock seconds the program and its tests may run before they are killed,
      counted from the moment the harness is ready to run them.
    startup_timeout_s: wall-clock seconds allowed to start the interpreter and the harness (not
      counted in ``timeout_s``: on a loaded machine starting Python can take seconds); with the
      fork server, to start the server and, for each run, to fork it.
    cpu_s: CPU seconds (RLIMIT_CPU, which also counts the interpreter's start); defaults to
      ``ceil(timeout_s) + 1``. A run stopped by it is reported as a timeout.
    memory_mb: address-space limit (RLIMIT_AS) in MiB, of the program's process and of the
      tests' process each.
    max_processes: processes and threads of the run's uid (RLIMIT_NPROC; only with a sandbox uid).
    max_file_mb: the largest file the program may write (RLIMIT_FSIZE), in MiB.
    max_open_files: RLIMIT_NOFILE.
    max_output_bytes: stdout and stderr are each kept up to this size; more kills the run.
  """

  timeout_s: float = 10.0
  startup_timeout_s: float = 60.0
  cpu_s: int | None = None
  memory_mb: int = 1024
  max_processes: int = 16
  max_file_mb: int = 16
  max_open_files: int = 64
  max_output_bytes: int = 1 << 20

  def __post_init__(self):
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      if value is not None and not value > 0:
        raise ValueError(f"SandboxLimits.{field.name} must be positive, got {value!r}")

  def rlimits(self, with_nproc: bool) -> dict[str, int]:
    limits = {"RLIMIT_CPU": self.cpu_s or math.ceil(self.timeout_s) + 1,
              "RLIMIT_AS": self.memory_mb << 20,
              "RLIMIT_FSIZE": self.max_file_mb << 20,
              "RLIMIT_NOFILE": self.max_open_files,
              "RLIMIT_CORE": 0}
    if with_nproc:
      limits["RLIMIT_NPROC"] = self.max_processes
    return limits


@dataclasses.dataclass(frozen=True)
class RunResult:
  """What one sandboxed run gave.

  Attributes:
    passed: asserts passed (binary mode: ``total`` when ``check`` returned, else 0).
    total: asserts counted (binary mode: 1).
    finished: the harness reported with the right token and the process exited cleanly.
    returncode: the interpreter's exit status (negative: killed by that signal).
    reason: "ok", "failed", "timeout", "output_limit" or "launch_error".
    stdout, stderr: captured output, each cut at ``max_output_bytes``.
  """

  passed: int
  total: int
  finished: bool
  returncode: int | None
  reason: str
  stdout: str = ""
  stderr: str = ""

  @property
  def fraction(self) -> float:
    return self.passed / self.total if self.finished and self.total else 0.0


def _world_accessible(path: str) -> bool:
  """True when a user other than the owner may execute ``path`` and walk to it."""
  real = pathlib.Path(os.path.realpath(path))
  if not real.is_file() or not real.stat().st_mode & stat.S_IXOTH:
    return False
  return all(parent.stat().st_mode & stat.S_IXOTH for parent in real.parents)


def _processes_of(uid: int) -> list[int]:
  """Pids of the live (not zombie) processes owned by ``uid``."""
  pids = []
  for entry in os.scandir("/proc"):
    if not entry.name.isdigit():
      continue
    try:
      if entry.stat().st_uid != uid:
        continue
      with open(f"/proc/{entry.name}/stat", "rb") as f:
        state = f.read().rpartition(b")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
      continue
    if state not in (b"Z", b"X"):
      pids.append(int(entry.name))
  return pids


def _uids_owning_processes() -> set[int]:
  """The uids that own any process, unreaped zombies included: one pass over /proc."""
  owners = set()
  for entry in os.scandir("/proc"):
    if entry.name.isdigit():
      try:
        owners.add(entry.stat().st_uid)
      except FileNotFoundError:
        continue
  return owners


def default_python() -> str:
  """An interpreter an unprivileged uid can run: this one if it can, else the system python3."""
  if os.geteuid() != 0 or _world_accessible(sys.executable):
    return sys.executable
  for candidate in ("/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3"):
    if os.path.exists(candidate) and _world_accessible(candidate):
      return candidate
  return sys.executable


class _UidPool:
  """Hands out unprivileged uids, each held by at most one run on the host at a time.

  The least recently released uid goes first, and a uid still owning processes (zombies that
  init has not reaped yet count against RLIMIT_NPROC) only when no clean one is free.
  """

  def __init__(self, first_uid: int, size: int):
    self._order = collections.deque(range(first_uid, first_uid + size))
    self._lock = threading.Lock()
    self._held: dict[int, int] = {}  # uid -> lock-file descriptor
    self._available = threading.Semaphore(size)

  def acquire(self) -> int:
    self._available.acquire()
    _LOCK_DIR.mkdir(mode=0o700, exist_ok=True)
    if _LOCK_DIR.stat().st_uid != os.geteuid():  # Planted by someone else (a sandbox run?).
      raise PermissionError(f"{_LOCK_DIR} is not owned by this user; remove it and retry")
    while True:
      with self._lock:
        busy = _uids_owning_processes()
        for only_clean in (True, False):
          for uid in self._order:
            if uid in self._held or (only_clean and uid in busy):
              continue
            fd = os.open(_LOCK_DIR / f"{uid}.lock", os.O_CREAT | os.O_RDWR, 0o600)
            try:
              fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
              os.close(fd)
              continue
            self._held[uid] = fd
            self._order.remove(uid)
            self._order.append(uid)
            return uid
      time.sleep(0.01)  # All free-looking uids are held by other processes.

  def release(self, uid: int) -> None:
    with self._lock:
      os.close(self._held.pop(uid))  # Closing drops the flock.
    self._available.release()


_POOLS: dict[tuple[int, int], _UidPool] = {}
_POOLS_LOCK = threading.Lock()


def _uid_pool(first_uid: int, size: int) -> _UidPool:
  with _POOLS_LOCK:
    return _POOLS.setdefault((first_uid, size), _UidPool(first_uid, size))


class Sandbox:
  """Runs HumanEval-style programs in isolated processes. Thread-safe: call ``run`` from a pool.

  Args:
    limits: resource limits for every run.
    python: interpreter for the runs; default ``default_python()``.
    isolate_user: run each program as its own unprivileged uid (needs root). None: when root.
    isolate_network: a new network namespace per run (needs root, and the ``unshare`` command
      without the fork server). None: when possible.
    audit: install the child's audit hook (turn off only to test the outer layers alone).
    first_uid, num_uids: the uid range to use; ``num_uids`` bounds concurrent runs on the host.
    fork_server: fork each run from a pristine harness interpreter started once (see
      ``_sandbox_server.py``; ``python`` must be >= 3.9) instead of starting an interpreter per
      run: about 3x less CPU per run, the same layers.
  """

  def __init__(self, limits: SandboxLimits = SandboxLimits(), *, python: str | None = None,
               isolate_user: bool | None = None, isolate_network: bool | None = None,
               audit: bool = True, first_uid: int = 61000, num_uids: int = 64,
               fork_server: bool = True):
    is_root = os.geteuid() == 0
    if isolate_user is None:
      isolate_user = is_root
    if isolate_user and not is_root:
      raise ValueError("Sandbox(isolate_user=True) needs root (to switch to a sandbox uid)")
    unshare = shutil.which("unshare")
    can_unshare = fork_server or unshare is not None  # The server calls unshare(2) itself.
    if isolate_network is None:
      isolate_network = is_root and isolate_user and can_unshare
    if isolate_network and not (is_root and isolate_user and can_unshare):
      raise ValueError("Sandbox(isolate_network=True) needs root, isolate_user and, without the "
                       "fork server, `unshare`")
    self.limits = limits
    self.python = python or default_python()
    self.isolate_user = isolate_user
    self.isolate_network = isolate_network
    self.audit = audit
    self.fork_server = fork_server
    self.first_uid, self.num_uids = first_uid, num_uids
    self._unshare = unshare
    self._uids = _uid_pool(first_uid, num_uids) if isolate_user else None

  def __getstate__(self) -> dict:
    return {key: value for key, value in self.__dict__.items() if key != "_uids"}

  def __setstate__(self, state: dict) -> None:
    # The uid pool is per process (its locks guard this process's runs): join this one's.
    self.__dict__.update(state)
    self._uids = _uid_pool(self.first_uid, self.num_uids) if self.isolate_user else None

  def run(self, program: str, test: str, entry_point: str, *, num_asserts: int = 1,
          partial: bool = False, prompt: str = "", allow_nan: bool | None = None) -> RunResult:
    """Runs ``program``, then ``check(<entry_point>)`` of ``test``; never raises for the program.

    ``test`` is the (possibly assert-rewritten, see ``asserts.py``) test code; ``num_asserts`` the
    number of asserts it records in partial mode. The tests run in a process of their own, in a
    namespace that holds what the trusted ``prompt`` defines (when it compiles on its own: the
    helpers that HumanEval tests call) and what ``test`` defines, never the program's names; the
    entry point is a proxy to the program's function (see ``_sandbox_child.py``). ``allow_nan``:
    whether a NaN may be returned; None: when ``test`` mentions NaN. A run whose harness could
    not start (the machine's fault, not the program's) is tried again, up to
    ``_LAUNCH_ATTEMPTS`` times.
    """
    if allow_nan is None:
      allow_nan = bool(_MENTIONS_NAN.search(test))
    for attempt in range(_LAUNCH_ATTEMPTS):
      if attempt:
        time.sleep(0.1 * attempt)
      result = self._run_once(program, test, entry_point, num_asserts, partial, prompt,
                              allow_nan)
      if result.reason != "launch_error":
        break
    return result

  def _run_once(self, program: str, test: str, entry_point: str, num_asserts: int,
                partial: bool, prompt: str, allow_nan: bool) -> RunResult:
    uid = self._uids.acquire() if self._uids else None
    workdir = tempfile.mkdtemp(prefix="bonjax-sandbox-")
    read_fd, write_fd = os.pipe()
    process = None
    try:
      token = secrets.token_hex(16)
      payload = {"token": token, "program": program, "test": test, "prompt": prompt,
                 "entry_point": entry_point, "num_asserts": num_asserts, "partial": partial,
                 "allow_nan": allow_nan, "audit": self.audit,
                 "result_fd": _SERVED_RESULT_FD if self.fork_server else write_fd}
      payload_path = os.path.join(workdir, "payload.json")
      with open(os.open(payload_path, os.O_CREAT | os.O_WRONLY, 0o600), "w") as f:
        json.dump(payload, f)
      if uid is not None:
        os.chown(workdir, uid, uid)
        os.chown(payload_path, uid, uid)
      os.chmod(workdir, 0o700)
      try:
        process = self._launch(workdir, uid, write_fd)
      except OSError as error:
        return RunResult(0, num_asserts, False, None, "launch_error", stderr=str(error))
      os.close(write_fd)
      write_fd = -1
      return self._collect(process, read_fd, token, num_asserts)
    finally:
      if write_fd >= 0:
        os.close(write_fd)
      os.close(read_fd)
      self._kill_all(process, uid)
      if process is not None:
        for stream in (process.stdout, process.stderr):
          stream.close()
        if isinstance(process, fork_server_lib.ServedProcess):
          process.close()  # Its channel to the server.
      if uid is not None:
        self._uids.release(uid)
      shutil.rmtree(workdir, ignore_errors=True)

  def _launch(self, workdir: str, uid: int | None, result_fd: int):
    """The run's harness process: a fork of the fork server, or a fresh interpreter."""
    limits = self.limits.rlimits(with_nproc=uid is not None)
    if self.fork_server:
      server = fork_server_lib.server_for(self.python, _MINIMAL_ENV,
                                          self.limits.startup_timeout_s)
      request = {"workdir": workdir, "limits": limits, "uid": uid,
                 "isolate_network": self.isolate_network, "result_fd": _SERVED_RESULT_FD}
      return server.spawn(request, result_fd, self.limits.startup_timeout_s)
    command = [self.python, "-I", "-c", _CHILD_SOURCE, json.dumps(limits)]
    kwargs = {}
    if uid is not None:
      if self.isolate_network:
        command = [self._unshare, "--net", f"--setuid={uid}", f"--setgid={uid}", "--", *command]
      else:
        kwargs = {"user": uid, "group": uid, "extra_groups": []}
    return subprocess.Popen(
        command, cwd=workdir, env=_MINIMAL_ENV, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(result_fd,),
        start_new_session=True, close_fds=True, **kwargs)

  def _collect(self, process: subprocess.Popen, result_fd: int, token: str,
               num_asserts: int) -> RunResult:
    """Reads output until the process exits or the deadline passes; parses the result."""
    cap = self.limits.max_output_bytes
    buffers = {process.stdout.fileno(): bytearray(), process.stderr.fileno(): bytearray(),
               result_fd: bytearray()}
    deadline = time.monotonic() + self.limits.startup_timeout_s
    started = False  # Whether the harness reported that the program is about to run.
    reason = None
    with selectors.DefaultSelector() as selector:
      for fd in buffers:
        os.set_blocking(fd, False)
        selector.register(fd, selectors.EVENT_READ)
      exited = False
      while selector.get_map():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
          reason = "timeout"
          break
        # After the main process exits, descendants may keep the pipes open: stop soon after.
        events = selector.select(timeout=0.0 if exited else min(remaining, 0.1))
        for key, _ in events:
          try:
            chunk = os.read(key.fd, 65536)
          except BlockingIOError:
            continue
          if not chunk:
            selector.unregister(key.fd)
            continue
          buffers[key.fd] += chunk
          if key.fd == result_fd and not started and b"\n" in buffers[result_fd]:
            started = True
            deadline = time.monotonic() + self.limits.timeout_s
          if len(buffers[key.fd]) > cap:
            reason = "output_limit"
        if reason:
          break
        if exited and not events:
          break
        exited = exited or process.poll() is not None
    if reason is None:
      try:  # The process may have closed its pipes and still be running.
        process.wait(timeout=max(0.0, deadline - time.monotonic()))
      except subprocess.TimeoutExpired:
        reason = "timeout"
    if reason:
      self._kill_all(process, None)
    returncode = process.wait()
    if reason is None and returncode == -signal.SIGXCPU:
      reason = "timeout"
    if reason is None and not started and returncode == _LAUNCH_FAILED:
      reason = "launch_error"
    if reason is None and getattr(process, "server_lost", False):
      reason = "launch_error"  # The fork server died, not the run.
    stdout, stderr, report = (bytes(buffers[fd][:cap]).decode("utf-8", "replace")
                              for fd in buffers)
    passed, finished = 0, False
    for line in report.splitlines():
      fields = line.split()
      if len(fields) == 3 and fields[0] == token and fields[2] == str(num_asserts):
        passed, finished = int(fields[1]), returncode == 0
    if reason is None:
      reason = "ok" if finished and passed == num_asserts else "failed"
    return RunResult(passed if finished else 0, num_asserts, finished, returncode, reason,
                     stdout, stderr)

  def _kill_all(self, process: subprocess.Popen | None, uid: int | None) -> None:
    """Kills the run's process group and, with a sandbox uid, every process of that uid."""
    if process is None:
      return
    try:
      os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
      pass
    if uid is not None:
      # Descendants may have left the session. kill(-1) sent by a process of the uid reaches all
      # its processes; repeated while any remain (a fork bomb forks between the kill's visits).
      for attempt in range(50):
        if not _processes_of(uid):
          break
        time.sleep(0.002 * attempt)  # Let SIGKILLed processes die before looking again.
        subprocess.run(["/bin/kill", "-9", "--", "-1"], user=uid, group=uid, extra_groups=[],
                       env=_MINIMAL_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=False)
    try:
      process.wait(timeout=5)
    except subprocess.TimeoutExpired:
      process.kill()
