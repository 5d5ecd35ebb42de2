"""One GPU per process on a shared machine, claimed with an exclusive file lock.

Snakemake's ``gpu`` resource caps how many GPU jobs run at once but does not tell a job which
device to use, so every job would start on GPU 0. A job instead claims slot k, the first of
``<lock dir>/gpu0.lock ... gpu{N-1}.lock`` it can ``flock`` exclusively, and sets
``CUDA_VISIBLE_DEVICES=k`` before CUDA initialises. The kernel drops the lock when the process
exits, however it exits, so a crashed job never keeps its GPU. Processes that share a lock
directory never hold the same slot at once; when all N are held, a claim waits for one to free.
"""
from __future__ import annotations

import fcntl
import os
import sys
import tempfile
import time
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path

LOCK_DIR_VARIABLE = "DUALRS_GPU_LOCK_DIR"


@dataclass
class GpuSlot:
    """A held slot: ``index`` is the GPU; the lock lasts until ``release()`` or process exit."""

    index: int
    lock_fd: int

    def release(self) -> None:
        os.close(self.lock_fd)


def lock_dir(environ: MutableMapping[str, str] = os.environ) -> Path:
    """``$DUALRS_GPU_LOCK_DIR``, else one folder per user in the temp directory."""
    if environ.get(LOCK_DIR_VARIABLE):
        return Path(environ[LOCK_DIR_VARIABLE])
    return Path(tempfile.gettempdir()) / f"dualrs-gpu-slots-{os.getuid()}"


def try_claim(num_slots: int, directory: Path) -> GpuSlot | None:
    """The lowest free slot in ``[0, num_slots)``, locked; ``None`` when all are held."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    for index in range(num_slots):
        # read-only: any user who can read the lock file can lock it (a shared lock directory)
        lock_fd = os.open(directory / f"gpu{index}.lock", os.O_RDONLY | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            continue
        return GpuSlot(index, lock_fd)
    return None


def claim(num_slots: int, directory: Path, poll_seconds: float = 1.0) -> GpuSlot:
    """Lock a free slot, waiting (polling every ``poll_seconds``) while all are held."""
    if num_slots < 1:
        raise ValueError(f"num_slots must be at least 1, got {num_slots}")
    waiting = False
    while (slot := try_claim(num_slots, directory)) is None:
        if not waiting:
            print(f"dualrs: all {num_slots} GPU slots in {directory} are held; waiting", file=sys.stderr)
            waiting = True
        time.sleep(poll_seconds)
    return slot


def pin_gpu(device_count: int, environ: MutableMapping[str, str] = os.environ) -> GpuSlot | None:
    """Claim a slot and set ``CUDA_VISIBLE_DEVICES`` to it, unless GPUs are already assigned.

    Nothing is done when no GPU is visible (``device_count == 0``) or when
    ``CUDA_VISIBLE_DEVICES`` is set, by Slurm for a job granted GPUs or by the user.
    """
    if device_count < 1 or "CUDA_VISIBLE_DEVICES" in environ:
        return None
    slot = claim(device_count, lock_dir(environ))
    environ["CUDA_VISIBLE_DEVICES"] = str(slot.index)
    return slot
