"""glibc's malloc tuned for batched sampling on the CPU: freed memory stays in the process for the next batch.

By default glibc serves a block of 128 KiB or more (a batch of noise, an activation) with a fresh ``mmap``
and hands it back to the kernel on ``free``, and trims the heap's free top once it passes 128 KiB; every
batch then touches new pages, and a certification job spent about a quarter of its time in page faults
(``benchmarks.dag`` reports the whole DAG's CPU time). :func:`keep_freed_memory` raises both thresholds,
as PyTorch's CPU performance guide advises a caching allocator (jemalloc, tcmalloc) for. The numbers are
unchanged: only where memory comes from changes.
"""
from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters of glibc's <malloc.h>
MMAP_THRESHOLD = 32 * 2**20  # the largest glibc accepts on 64-bit systems (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 2**31 - 1   # mallopt takes an int: never trim below 2 GiB of free heap


def keep_freed_memory() -> bool:
    """Serve blocks up to 32 MiB from the heap and keep freed heap memory (glibc's ``mallopt``).

    Returns whether both settings took effect; False off Linux or without glibc (e.g. musl), where
    nothing changes.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
