"""The parent's side of the sandbox's fork server (the server is ``_sandbox_server.py``).

One server interpreter per interpreter path and process, started on the first run and shared by
every ``Sandbox`` (and thread) that uses that interpreter; a server found dead is started again.
``ForkServer.spawn`` returns a ``ServedProcess``, which looks to ``sandbox.py`` as much like a
``subprocess.Popen`` as it needs: ``pid``, ``stdout``, ``stderr``, ``poll``, ``wait``.
"""

from __future__ import annotations

import json
import os
import pathlib
import select
import signal
import socket
import subprocess
import threading
import weakref

_SOURCE = "\n".join(pathlib.Path(__file__).with_name(name).read_text("utf-8")
                    for name in ("_sandbox_audit.py", "_sandbox_child.py", "_sandbox_server.py"))
_MAX_MESSAGE = 64


class ServerLost(OSError):
  """The fork server died (or never started): the machine's fault, not the program's."""


class ServedProcess:
  """A run's harness process, forked by the server; its exit status arrives on ``channel``."""

  def __init__(self, pid: int, channel: socket.socket, stdout: int, stderr: int):
    self.pid = pid
    self.returncode: int | None = None
    self.server_lost = False  # The server died before it reported the exit status.
    self._channel = channel
    self.stdout = open(stdout, "rb", buffering=0)
    self.stderr = open(stderr, "rb", buffering=0)

  def poll(self) -> int | None:
    return self._status(0.0)

  def wait(self, timeout: float | None = None) -> int:
    status = self._status(timeout)
    if status is None:
      raise subprocess.TimeoutExpired(f"sandbox run {self.pid}", timeout)
    return status

  def kill(self) -> None:
    if self.poll() is None:
      try:
        os.killpg(self.pid, signal.SIGKILL)
      except (ProcessLookupError, PermissionError):
        pass

  def close(self) -> None:
    self._channel.close()

  def _status(self, timeout: float | None) -> int | None:
    if self.returncode is not None:
      return self.returncode
    if not select.select([self._channel], [], [], timeout)[0]:
      return None
    message = self._channel.recv(_MAX_MESSAGE)
    if message.startswith(b"exit "):
      self.returncode = int(message[5:])
    else:  # EOF: the server died with the run still running (or unreaped).
      self.server_lost = True
      self.returncode = -signal.SIGKILL
    return self.returncode


class ForkServer:
  """A running server interpreter and the parent's end of its control socket."""

  def __init__(self, python: str, env: dict[str, str], startup_timeout_s: float):
    parent_end, server_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
      self.process = subprocess.Popen(
          [python, "-I", "-c", _SOURCE + f"\nserve({server_end.fileno()})\n"], env=env,
          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
          pass_fds=(server_end.fileno(),), start_new_session=True, close_fds=True)
    except OSError as error:
      parent_end.close()
      raise ServerLost(f"could not start the fork server: {error}") from error
    finally:
      server_end.close()
    self._control = parent_end
    self._lock = threading.Lock()
    self._stop = weakref.finalize(self, _stop, parent_end, self.process)
    ready = select.select([parent_end], [], [], startup_timeout_s)[0]
    if not ready or parent_end.recv(_MAX_MESSAGE) != b"ready":
      self.close()
      why = self.process.stderr.read()[-2000:].decode("utf-8", "replace").strip()
      self.process.stderr.close()
      raise ServerLost(f"the fork server did not start within {startup_timeout_s} s "
                       f"(exit status {self.process.returncode}){': ' + why if why else ''}")
    self.process.stderr.close()  # Its runs write to their own pipes; a crash is seen as EOF.

  def alive(self) -> bool:
    return self.process.poll() is None

  def spawn(self, request: dict, result_fd: int, timeout_s: float) -> ServedProcess:
    """Forks a run; ``request`` as ``_sandbox_server.py`` reads it, ``result_fd`` the write end."""
    stdout_read, stdout_write = os.pipe()
    stderr_read, stderr_write = os.pipe()
    channel, server_channel = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    stdin = os.open(os.devnull, os.O_RDONLY)
    try:
      with self._lock:
        socket.send_fds(self._control, [json.dumps(request).encode()],
                        [server_channel.fileno(), stdin, stdout_write, stderr_write, result_fd])
      ready = select.select([channel], [], [], timeout_s)[0]
      message = channel.recv(_MAX_MESSAGE) if ready else b""
      if not message.startswith(b"pid "):
        raise ServerLost("the fork server did not fork the run")
    except OSError as error:  # ServerLost included.
      for fd in (stdout_read, stderr_read):
        os.close(fd)
      channel.close()
      raise ServerLost(str(error)) from error
    finally:
      for fd in (stdin, stdout_write, stderr_write):
        os.close(fd)
      server_channel.close()
    return ServedProcess(int(message[4:]), channel, stdout_read, stderr_read)

  def close(self) -> None:
    """Stops the server (runs it forked go on until their parent kills them)."""
    self._stop()


def _stop(control: socket.socket, process: subprocess.Popen) -> None:
  control.close()  # The server exits on EOF.
  try:
    process.wait(timeout=5)
  except subprocess.TimeoutExpired:
    process.kill()
    process.wait()


_SERVERS: dict[str, ForkServer] = {}
_SERVERS_LOCK = threading.Lock()


def _forget_servers() -> None:
  """In a forked child: the servers are the parent's; the child starts its own when it needs one."""
  global _SERVERS_LOCK
  _SERVERS_LOCK = threading.Lock()  # Another thread may have held it at the fork.
  _SERVERS.clear()


os.register_at_fork(after_in_child=_forget_servers)


def server_for(python: str, env: dict[str, str], startup_timeout_s: float) -> ForkServer:
  """This process's server for ``python``, started (again) when there is none alive."""
  with _SERVERS_LOCK:
    server = _SERVERS.get(python)
    if server is None or not server.alive():
      if server is not None:
        server.close()
      _SERVERS[python] = server = ForkServer(python, env, startup_timeout_s)
    return server
