"""Progress bars that suit both a terminal and a log file.

On a terminal (or in a notebook) :func:`progress` is an ordinary tqdm bar. Otherwise, e.g. when
stderr goes to a Snakemake log, the same bar is written as one plain line every ``interval``
seconds (and once at the start and the end), instead of ``\\r`` redraws that make one huge line.
"""
from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TextIO, TypeVar

from tqdm import tqdm
from tqdm.auto import tqdm as auto_tqdm

T = TypeVar("T")

LOG_INTERVAL = 30.0  # seconds between progress lines in a log file


class LineWriter:
    """A text stream that turns tqdm's ``\\r`` redraws into whole lines of ``stream``."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def write(self, text: str) -> None:
        for line in text.replace("\r", "\n").split("\n"):
            if line.strip():
                self.stream.write(line.rstrip() + "\n")

    def flush(self) -> None:
        self.stream.flush()


def interactive(stream: TextIO) -> bool:
    """Whether ``stream`` is a terminal or a Jupyter kernel's output."""
    return stream.isatty() or "ipykernel" in sys.modules


def progress(iterable: Iterable[T], desc: str, total: int | None = None, *, initial: int = 0,
             disable: bool = False, interval: float = LOG_INTERVAL, **kwargs: Any) -> tqdm:
    """A tqdm bar over ``iterable`` on stderr: redrawn on a terminal, plain periodic lines otherwise."""
    if interactive(sys.stderr):
        return auto_tqdm(iterable, desc=desc, total=total, initial=initial, disable=disable, **kwargs)
    return tqdm(iterable, desc=desc, total=total, initial=initial, disable=disable, file=LineWriter(sys.stderr),
                mininterval=interval, maxinterval=interval, ascii=True, ncols=100, dynamic_ncols=False, **kwargs)
