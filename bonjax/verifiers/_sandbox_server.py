"""The fork server: one pristine harness interpreter that forks a sandboxed run per request.

``fork_server.py`` starts ``python -I -c <_sandbox_audit.py + _sandbox_child.py + this file +
"serve(...)">`` once, with the sandbox's minimal environment and in a session of its own. Starting
an interpreter and importing the harness is most of what a run costs, so the server does it once
and every run is a ``fork`` of it (on 2 cores: 8 ms of CPU per run, against 24 ms with an
interpreter started per run): of an interpreter that holds the harness and nothing else (never
jax, never a run's data, never a line of a program), which is what a fresh ``python -I`` would
hold after the same imports.

The server runs no untrusted code and reads nothing but requests from its parent, over a
``socketpair`` that only the parent holds the other end of (no listening socket that another
user could reach). A request is a small JSON object (the run's temp dir, its rlimits, its uid,
whether to leave the network, the number the result pipe takes) and five descriptors: the
run's own channel back to the parent, stdin, stdout, stderr and the result pipe. The server
forks, sends the pid on the run's channel and, when the run's process exits, its exit status
(``os.waitstatus_to_exitcode``); then it closes that channel. The parent closing the control
socket stops the server.

The forked child undoes what the server set up (signal handlers, descriptors, sockets), starts
a session, moves to the run's dir, leaves the network namespace, drops to the run's uid, and
then does exactly what ``main`` does in a fresh interpreter: lowers the rlimits and forks the
program's process (see ``_sandbox_child.py``).
"""

import json
import os
import resource
import select
import signal
import socket
import sys

# fork_server.py runs this file after _sandbox_audit.py and _sandbox_child.py, which define
# main, _report and _LAUNCH_FAILED.

_CLONE_NEWNET = 0x40000000
_MAX_REQUEST = 1 << 16
_RUN_FDS = 5  # The run's channel, stdin, stdout, stderr, result pipe.


def _leave_network():
  """A new network namespace with no interface but a loopback that is down."""
  if hasattr(os, "unshare"):  # Python >= 3.12.
    os.unshare(os.CLONE_NEWNET)
    return
  import ctypes  # Only here: the server imports nothing it does not need.
  libc = ctypes.CDLL(None, use_errno=True)
  if libc.unshare(_CLONE_NEWNET) != 0:
    error = ctypes.get_errno()
    raise OSError(error, "unshare(CLONE_NEWNET): %s" % os.strerror(error))
  for name in [name for name in sys.modules if name == "ctypes" or name.startswith("ctypes.")]:
    del sys.modules[name]  # The program cannot import it back (the audit hook refuses).


def _start_run(request, fds, sockets):
  """In the forked child: becomes the run's harness. Never returns."""
  try:
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for sock in sockets:
      sock.detach()  # Forget the server's sockets without closing anything twice.
    channel, stdin, stdout, stderr, result = fds
    os.setsid()
    os.dup2(stdin, 0)
    os.dup2(stdout, 1)
    os.dup2(stderr, 2)
    os.dup2(result, request["result_fd"])
    # Everything else the server held: its sockets, its wake-up pipe, the originals of the above.
    os.closerange(max(3, request["result_fd"] + 1), resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    os.chdir(request["workdir"])
    if request["isolate_network"]:
      _leave_network()
    uid = request["uid"]
    if uid is not None:
      os.setgroups([])
      os.setresgid(uid, uid, uid)
      os.setresuid(uid, uid, uid)
  except BaseException as error:
    _report(error)
    os._exit(_LAUNCH_FAILED)
  main(request["limits"])


def _reap(runs):
  """Sends each exited run's status to its channel and closes it."""
  while True:
    try:
      pid, status = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
      return
    if pid == 0:
      return
    channel = runs.pop(pid, None)
    if channel is not None:
      try:
        channel.send(b"exit %d" % os.waitstatus_to_exitcode(status))
      except OSError:
        pass  # The parent gave up on the run.
      channel.close()


def serve(control_fd):
  """Serves fork requests on ``control_fd`` until the parent closes it."""
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  control = socket.socket(fileno=control_fd)
  wakeup_read, wakeup_write = os.pipe()
  os.set_blocking(wakeup_read, False)
  os.set_blocking(wakeup_write, False)
  signal.set_wakeup_fd(wakeup_write)
  signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # Wakes the select below.
  runs = {}  # pid -> the run's channel
  control.send(b"ready")
  while True:
    readable = select.select([control, wakeup_read], [], [])[0]
    if wakeup_read in readable:
      while True:
        try:
          if not os.read(wakeup_read, 4096):
            break
        except BlockingIOError:
          break
      _reap(runs)
    if control not in readable:
      continue
    message, fds, _, _ = socket.recv_fds(control, _MAX_REQUEST, _RUN_FDS)
    if not message:
      os._exit(0)  # The parent is gone; running runs go on and the parent's cleanup ends them.
    if len(fds) != _RUN_FDS:
      for fd in fds:
        os.close(fd)
      continue
    request = json.loads(message)
    pid = os.fork()
    if pid == 0:
      _start_run(request, fds, [control, *runs.values()])
    channel = socket.socket(fileno=fds[0])
    for fd in fds[1:]:
      os.close(fd)
    try:
      channel.send(b"pid %d" % pid)
    except OSError:
      pass
    runs[pid] = channel
    _reap(runs)
