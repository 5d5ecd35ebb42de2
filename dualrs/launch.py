"""The ``dualrs`` command: runs in a job server's preloaded child when one serves this environment
(:mod:`dualrs.jobserver`, named by ``$DUALRS_JOB_SERVER``), else in this process; the results are the same.
Either way the process ends without tearing down its modules (about 2 s once torch, timm and diffusers
are loaded): stdio is flushed and the atexit handlers run, then the process exits.

``dualrs job-server SOCKET PARENT_PID`` starts a server that stops when its parent is not PARENT_PID (the
workflow starts one per local Snakemake run, naming itself).
"""
from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from dualrs import jobserver

RELAYED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def main(argv: Sequence[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["job-server"]:
        if len(argv) != 3 or not argv[2].isdigit():
            sys.exit("usage: dualrs job-server SOCKET PARENT_PID")
        request = jobserver.serve(Path(argv[1]), int(argv[2]))  # returns only in a forked child
        jobserver.become(request)
        argv = request.argv
    elif os.environ.get(jobserver.SOCKET_VARIABLE):
        code = delegate(argv, os.environ[jobserver.SOCKET_VARIABLE])
        if code is not None:
            exit_like(code)
    from dualrs.cli import main as run

    try:
        run(argv)
    except SystemExit as stop:
        exit_fast(stop.code)
    exit_fast(0)


def delegate(argv: Sequence[str], path: str) -> int | None:
    """Run ``dualrs *argv`` in the server listening at ``path``: the command's exit code (negative: the
    signal that killed it), or None when no server takes it (none listening, or another environment)."""
    if not all(_is_open(fd) for fd in (0, 1, 2)):
        return None
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(path)
        request = {"argv": list(argv), "cwd": os.getcwd(), "env": dict(os.environ), **jobserver.identity()}
        socket.send_fds(connection, [json.dumps(request).encode() + b"\n"], [0, 1, 2])
        replies = connection.makefile("r")
        first = replies.readline().split()
    except OSError:
        connection.close()
        return None
    if first[:1] != ["pid"]:
        connection.close()
        return None
    pid = int(first[1])
    for number in RELAYED_SIGNALS:
        signal.signal(number, lambda received, frame: _relay(pid, received))
    last = replies.readline().split()
    connection.close()
    if last[:1] != ["status"]:
        _relay(pid, signal.SIGTERM)
        print(f"dualrs: the job server at {path} stopped while running process {pid}", file=sys.stderr)
        return 1
    return int(last[1])


def exit_like(code: int) -> None:
    """Exit as the child did: with its code, or killed by its signal."""
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.exit(code)


def exit_fast(code: int | str | None) -> NoReturn:
    """Exit as ``sys.exit(code)`` would (a message goes to stderr, status 1), without the teardown of
    every loaded module: the atexit handlers run, stdio is flushed, then ``os._exit``."""
    if isinstance(code, int) or code is None:
        status = code or 0
    else:
        print(code, file=sys.stderr)
        status = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)


def _relay(pid: int, number: int) -> None:
    try:
        os.kill(pid, number)
    except ProcessLookupError:
        pass


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True
