"""The header and the summary line every ``dualrs`` command writes to stderr.

The header says what ran, where and on what (command line, versions, device, seed, host, the
SHA-256 of each input checkpoint or folder); the summary says how it ended (exit status, wall
time, peak memory), so a job's log identifies its run on its own.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import platform
import resource
import shlex
import socket
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable

PREFIX = "[dualrs]"


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def tree_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, or of a folder's relative file names and bytes in sorted order."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if file != path:
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _paths(value: Any) -> Iterator[Path]:
    """The paths inside a parsed argument value (a path, a ``KEY=PATH`` pair, a list, a JSON spec)."""
    if isinstance(value, Path):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _paths(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _paths(item)


def subcommand(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The parser of subcommand ``name`` (its errors carry its own usage line and name)."""
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]


def input_paths(parser: argparse.ArgumentParser, args: argparse.Namespace,
                input_types: Iterable[Callable[[str], Any]]) -> dict[str, list[Path]]:
    """Each argument of the chosen subcommand whose type reads an input, with the paths given to it."""
    types = set(input_types)
    command = subcommand(parser, args.command)
    found = {}
    for action in command._actions:
        if action.type in types and getattr(args, action.dest, None) is not None:
            paths = [p for p in _paths(getattr(args, action.dest)) if p.exists()]
            if paths:
                found[action.option_strings[0] if action.option_strings else action.dest] = paths
    return found


def device_description(device: str) -> str:
    """``device`` as the command will resolve it (CUDA is initialised only when it will be used)."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "all")
        return f"{device} ({torch.cuda.get_device_name(device)}, CUDA_VISIBLE_DEVICES={visible})"
    return device


def header(argv: Sequence[str], args: argparse.Namespace, inputs: dict[str, list[Path]],
           device: str | None) -> list[str]:
    """The header lines: command, versions, host, device, seed and input digests."""
    lines = [f"command: {shlex.join(['dualrs', *argv])}",
             f"versions: dualrs {package_version('dualrs')}, torch {package_version('torch')}, "
             f"python {platform.python_version()}",
             f"host: {socket.gethostname()}, pid {os.getpid()}, cwd {Path.cwd()}"]
    if device is not None:
        lines.append(f"device: {device}")
    if getattr(args, "seed", None) is not None:
        lines.append(f"seed: {args.seed}")
    lines += [f"input {flag}: {path} sha256 {tree_digest(path)[:12]}"
              for flag, paths in inputs.items() for path in paths]
    return [f"{PREFIX} {line}" for line in lines]


def exit_status(error: BaseException | None) -> str:
    """The process exit status a raised exception (or none) leads to, as text."""
    if error is None:
        return "0"
    if isinstance(error, SystemExit):
        code = error.code
        return str(code) if isinstance(code, int) else "0" if code is None else "1"
    return f"1 ({type(error).__name__})"


def peak_rss_mib() -> float:
    """Peak resident memory of this process (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


@contextmanager
def logged(lines: Sequence[str]) -> Iterator[None]:
    """Write ``lines`` to stderr, run the block, then write its one-line summary, however it ends."""
    start = time.monotonic()
    print("\n".join(lines), file=sys.stderr, flush=True)
    error = None
    try:
        yield
    except BaseException as raised:
        error = raised
        raise
    finally:
        print(f"{PREFIX} done: exit {exit_status(error)}, wall {time.monotonic() - start:.1f} s, "
              f"peak RSS {peak_rss_mib():.0f} MiB", file=sys.stderr, flush=True)
