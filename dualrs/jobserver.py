"""A job server: one process imports torch, pandas, timm, diffusers and dualrs once, then forks a child
for each ``dualrs`` command a client (:mod:`dualrs.launch`) sends it, so that a pipeline's jobs skip the
2.5 s (classifiers) to 8 s (diffusion denoisers) of imports each would spend starting from nothing.

The child is the command's process in all but its parent: it runs in the client's working directory and
environment, on the client's stdin, stdout and stderr; the client relays SIGINT, SIGTERM and SIGHUP to it
and exits with its status. A client that goes away takes its child with it (SIGTERM), and the server
stops when the process that started it (Snakemake) is gone. The server never runs a torch operation, so
every child starts with no thread pool and no CUDA context, as a fresh process does.

Protocol, one UNIX-socket connection per command:

- client → server: one JSON line ``{"argv", "cwd", "env", "prefix", "package"}`` with the client's file
  descriptors 0, 1 and 2 attached (SCM_RIGHTS);
- server → client: ``refused <reason>`` (the client runs the command itself), or ``pid <pid>`` and, when
  the child has ended, ``status <exit code>`` (negative: killed by that signal).

A client is refused unless it runs the server's Python environment (``sys.prefix``) and dualrs package.
"""
from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import sys
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path

import dualrs

SOCKET_VARIABLE = "DUALRS_JOB_SERVER"  # the socket's path, in the environment of the jobs that may use it
PRELOAD = ("torch", "pandas", "scipy.special", "timm", "dualrs.cli", "dualrs.tasks", "dualrs.certify",
           "dualrs.denoise")
PARENT_POLL_S = 1.0


@dataclass
class Request:
    """A command for a child to run as if started as ``dualrs *argv`` in ``cwd`` with ``env`` and ``fds``."""
    argv: list[str]
    cwd: str
    env: dict[str, str]
    fds: list[int]


def identity() -> dict[str, str]:
    """What a client must share with the server: the Python environment and the dualrs package."""
    return {"prefix": sys.prefix, "package": str(Path(dualrs.__file__).resolve().parent)}


def serve(path: Path, parent: int) -> Request:
    """Preload :data:`PRELOAD`, listen at ``path`` and fork a child per request.

    Returns only in a child, with the request it is to run; the server itself exits (SystemExit) on
    SIGTERM or SIGINT or once its parent process is not ``parent`` (the process that started it is gone,
    perhaps before this one ran), first sending SIGTERM to its running children.
    """
    if os.getppid() != parent:
        raise SystemExit(0)
    from dualrs.host_memory import keep_freed_memory  # here, not at the top: every job's client imports this module

    keep_freed_memory()
    for module in PRELOAD:
        import_module(module)
    server, stopping = os.getpid(), []
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, lambda number, frame: stopping.append(number))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))  # the path appears only now: until then clients run their commands themselves
    listener.listen(64)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    children: dict[int, tuple[socket.socket, int]] = {}  # pid -> (connection, pidfd)
    try:
        while not stopping and os.getppid() == parent:
            for key, _ in selector.select(PARENT_POLL_S):
                if key.fileobj is listener:
                    request = _accept(listener, selector, children)
                    if request is not None:  # this is the child
                        return request
                elif key.data[1] not in children:  # reaped earlier in this round
                    continue
                elif key.data[0] == "exited":
                    _reap(key.data[1], selector, children)
                else:  # "client gone": a running child's connection is readable only at its client's end
                    selector.unregister(key.fileobj)
                    os.kill(key.data[1], signal.SIGTERM)
    finally:
        if os.getpid() == server:  # a child leaves through here too, with its request
            _shut_down(path, listener, selector, children)
    raise SystemExit(0)


def _accept(listener: socket.socket, selector: selectors.BaseSelector,
            children: dict[int, tuple[socket.socket, int]]) -> Request | None:
    """Read one request and fork its child; in the child, return the request, in the server None."""
    connection, _ = listener.accept()
    try:
        request = _read_request(connection)
    except (OSError, ValueError, KeyError, TypeError) as error:
        _send(connection, f"refused unreadable request ({error!r})")
        connection.close()
        return None
    if not isinstance(request, Request):
        _send(connection, f"refused {request}")
        connection.close()
        return None
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        selector.close()
        listener.close()
        connection.close()
        for other, pidfd in children.values():
            other.close()
            os.close(pidfd)
        for stop_signal in (signal.SIGTERM, signal.SIGINT):
            signal.signal(stop_signal, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        return request
    for fd in request.fds:
        os.close(fd)
    pidfd = os.pidfd_open(pid)
    children[pid] = (connection, pidfd)
    selector.register(pidfd, selectors.EVENT_READ, ("exited", pid))
    selector.register(connection, selectors.EVENT_READ, ("client gone", pid))
    _send(connection, f"pid {pid}")
    return None


def _read_request(connection: socket.socket) -> Request | str:
    """The client's request, or why it is refused (the descriptors of a refused request are closed)."""
    data, fds, _, _ = socket.recv_fds(connection, 1 << 16, 3)
    accepted = False
    try:
        while not data.endswith(b"\n"):
            more = connection.recv(1 << 16)
            if not more:
                raise ValueError("connection closed before the end of the request")
            data += more
        message = json.loads(data)
        mismatch = [key for key, value in identity().items() if message.get(key) != value]
        if mismatch:
            return f"different {' and '.join(mismatch)} from the server's"
        if len(fds) != 3:
            return f"3 file descriptors expected, got {len(fds)}"
        request = Request(list(message["argv"]), message["cwd"], dict(message["env"]), fds)
        accepted = True
        return request
    finally:
        if not accepted:
            for fd in fds:
                os.close(fd)


def _reap(pid: int, selector: selectors.BaseSelector, children: dict[int, tuple[socket.socket, int]]) -> None:
    connection, pidfd = children.pop(pid)
    _, status = os.waitpid(pid, 0)
    selector.unregister(pidfd)
    os.close(pidfd)
    _send(connection, f"status {os.waitstatus_to_exitcode(status)}")
    try:
        selector.unregister(connection)
    except KeyError:
        pass  # unregistered when its client went away
    connection.close()


def _shut_down(path: Path, listener: socket.socket, selector: selectors.BaseSelector,
               children: dict[int, tuple[socket.socket, int]]) -> None:
    """Stop listening, SIGTERM the running children and wait for them."""
    path.unlink(missing_ok=True)
    listener.close()
    for pid in list(children):
        os.kill(pid, signal.SIGTERM)
    for pid in list(children):
        _reap(pid, selector, children)
    selector.close()


def _send(connection: socket.socket, line: str) -> None:
    """Send one line; a client that has gone away gets nothing."""
    try:
        connection.sendall(line.encode() + b"\n")
    except OSError:
        pass


def become(request: Request) -> None:
    """Make this forked child the request's process: its working directory, environment and stdio."""
    os.chdir(request.cwd)
    os.environ.clear()
    os.environ.update(request.env)
    for target, fd in enumerate(request.fds):
        os.dup2(fd, target)
        os.close(fd)
    sys.argv = ["dualrs", *request.argv]
    from dualrs.runlog import PREFIX  # here, not at the top: every job's client imports this module

    print(f"{PREFIX} forked by job server {os.getppid()}", file=sys.stderr, flush=True)
