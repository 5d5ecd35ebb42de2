"""Datasets and architectures from other packages, found by their entry points.

A package adds a dataset or an architecture without changing dualrs by declaring an entry point (PEP 621,
``[project.entry-points."dualrs.datasets"]``): the entry point's name is the name a configuration uses,
its object a :class:`dualrs.data.DatasetSpec` (group ``dualrs.datasets``) or a model builder
``fn(num_classes, in_chans, **kwargs) -> nn.Module`` (group ``dualrs.models``). Names are read from the
installed distributions' metadata without importing the plugin, so a configuration is checked in
milliseconds; the object is imported when a job first uses it.
"""
from __future__ import annotations

import functools
import sys
from importlib.metadata import EntryPoint, entry_points
from typing import Any

DATASETS_GROUP = "dualrs.datasets"
MODELS_GROUP = "dualrs.models"


def _entry_points(group: str) -> dict[str, list[EntryPoint]]:
    """The entry points of ``group`` by name, read once per import path (a scan of every installed
    distribution's metadata takes milliseconds, and a configuration check asks for each key)."""
    return _scan(group, tuple(sys.path))


@functools.cache
def _scan(group: str, path: tuple[str, ...]) -> dict[str, list[EntryPoint]]:
    found: dict[str, list[EntryPoint]] = {}
    for point in entry_points(group=group):
        found.setdefault(point.name, []).append(point)
    return found


def plugin_names(group: str) -> list[str]:
    """The names that installed distributions declare in entry point ``group``."""
    return sorted(_entry_points(group))


def load_plugin(group: str, name: str) -> Any:
    """The object behind entry point ``name`` of ``group``; one error naming the problem otherwise."""
    points = _entry_points(group).get(name, [])
    if not points:
        raise KeyError(f"no entry point {name!r} in group {group!r}")
    if len({point.value for point in points}) > 1:
        raise ValueError(f"entry point {name!r} of group {group!r} is declared twice, as "
                         f"{' and '.join(sorted({point.value for point in points}))}; uninstall one")
    try:
        return points[0].load()
    except (ImportError, AttributeError) as error:
        raise ImportError(f"entry point {name!r} of group {group!r} ({points[0].value}) cannot be loaded: "
                          f"{error}") from error
