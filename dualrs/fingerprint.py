"""Fingerprints of the files a certificate depends on, recorded with a resumable table's settings.

Checkpoints and denoiser directories are identified by content (SHA-256), so a model retrained into
the same path is a different model. A prepared dataset folder is identified by the content of its
files; the image files a dataset lists from elsewhere (ImageNet's ``test.tsv`` names JPEGs in the
source folder) by path, size and modification time, which any rewrite of an image changes, at the cost
of one ``stat`` per image instead of reading gigabytes. Hidden entries (``.cache``, ``.git``, a killed
atomic write's ``.*.tmp``) are not part of a model or dataset and are skipped.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from dualrs.tables import file_digest


def path_digest(path: Path | str) -> str:
    """SHA-256 of a file, or of a directory: every visible file below it (symlinks followed) by
    relative path and content digest."""
    path = Path(path)
    if path.is_file():
        return file_digest(path)
    if not path.is_dir():
        raise FileNotFoundError(f"no file or directory {path}")
    digest = hashlib.sha256()
    for folder, dirs, files in os.walk(path, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(f for f in files if not f.startswith(".")):
            file = Path(folder, name)
            digest.update(f"{file.relative_to(path).as_posix()}\0{file_digest(file)}\n".encode())
    return digest.hexdigest()


def stat_digest(paths: Iterable[Path | str]) -> str:
    """SHA-256 of each file's path, size and modification time (ns), in the order given."""
    digest = hashlib.sha256()
    for path in paths:
        try:
            info = os.stat(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"the dataset lists {path}, which does not exist") from None
        digest.update(f"{path}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def sample_files_digest(dataset: Dataset) -> str | None:
    """:func:`stat_digest` of the files a dataset reads its items from: the ``samples`` list of
    ``(path, label)`` that torchvision's ImageFolder and ``dualrs.data``'s image lists keep (through
    any ``Subset``); None for a dataset held in memory or in its prepared folder."""
    indices = None
    while isinstance(dataset, Subset):
        indices = [dataset.indices[i] for i in indices] if indices is not None else list(dataset.indices)
        dataset = dataset.dataset
    samples = getattr(dataset, "samples", None)
    if samples is None:
        return None
    chosen = samples if indices is None else [samples[i] for i in indices]
    return stat_digest(path for path, _ in chosen)


def module_digest(model: nn.Module) -> str:
    """SHA-256 of a module's state (names, dtypes, shapes and bytes): identifies it in resume settings."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
