"""The model names of the installed timm, remembered per timm version.

Checking that ``timm/<name>`` names a model needs timm's registry, and ``import timm`` loads torch and
every model module (about 5 s). The names the installed timm registers are written once to
``<user cache dir>/dualrs/timm-<version>-models.txt`` (platformdirs; ``$XDG_CACHE_HOME`` on Linux), so
a later check of a known name reads that file instead. Only a hit is trusted: a name the file lacks is
checked against timm itself.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import platformdirs


def cache_file() -> Path | None:
    """Where the names of the installed timm are kept; None without timm."""
    try:
        timm_version = version("timm")
    except PackageNotFoundError:
        return None
    return Path(platformdirs.user_cache_dir("dualrs")) / f"timm-{timm_version}-models.txt"


def remembered(arch: str) -> bool:
    """Whether ``arch`` (a timm architecture name, without a pretrained tag) is among the remembered names."""
    path = cache_file()
    try:
        return path is not None and arch in path.read_text().split("\n")
    except (OSError, UnicodeDecodeError):  # not written yet, or unreadable: ask timm
        return False


def remember(names: list[str]) -> None:
    """Keep timm's model names for later checks (atomically; where the cache cannot be written, not at all)."""
    path = cache_file()
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError:
        return
    try:
        with os.fdopen(handle, "w") as file:
            file.write("\n".join(names) + "\n")
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
