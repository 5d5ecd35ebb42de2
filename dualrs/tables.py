"""Certificate and label tables (TSV), written atomically and resumable row by row.

Certificate rows are appended to ``<path>.partial`` and flushed one by one; the file is renamed to
``<path>`` only when every sample is done, so an interrupted run resumes where it stopped. This
module needs no torch, so table-only commands (merge, report) start fast.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

GLOBAL_COLUMNS = ["idx", "label", "predict", "radius", "correct", "time"]
DUAL_COLUMNS = ["idx", "label", "predict", "sigma", "radius", "r_sigma", "r_c", "correct", "time"]
CASCADE_COLUMNS = ["idx", "label", "predict", "sigma", "radius", "stage", "correct", "time"]
ROUTER_COLUMNS = ["idx", "label", "predict", "expert", "sigma", "radius", "r_sigma", "r_c", "correct", "time"]
LABEL_COLUMNS = ["idx", "label", "predict", "count", "pA_lower", "radius", "correct"]

@contextmanager
def atomic_file(path: Path | str) -> Iterator[Path]:
    """Yield a hidden temporary sibling of ``path`` to write; rename it to ``path`` on success,
    delete it on failure, so readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def file_digest(path: Path | str) -> str:
    """SHA-256 of a file's bytes (identifies a checkpoint in resumable settings)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json(path: Path | str, content: Mapping[str, Any]) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")


def write_table(path: Path | str, frame: pd.DataFrame) -> None:
    """Write a TSV atomically."""
    with atomic_file(path) as tmp:
        frame.to_csv(tmp, sep="\t", index=False)


def read_table(path: Path | str) -> pd.DataFrame:
    if not Path(path).is_file():
        raise FileNotFoundError(f"table not found: {path}")
    return pd.read_csv(path, sep="\t")


class ResumableTable:
    """Rows appended to ``<path>.partial``; :meth:`done` lists indices already written.

    ``settings`` (JSON-able: everything the rows depend on) are recorded in ``<path>.partial.json``;
    a partial file written with other settings, or with none recorded, is started over with a warning,
    so rows of different settings never mix. On resume, a last line without its newline was being
    written when the run stopped: it is dropped with a warning and that sample is done again. Any
    other malformed row is an error naming the line.
    """

    def __init__(self, path: Path | str, columns: list[str], settings: Mapping[str, Any] | None = None):
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.settings_file = self.path.with_name(self.path.name + ".partial.json")
        self.columns = columns
        self.settings = None if settings is None else json.loads(json.dumps(settings, sort_keys=True, default=str))
        self.done: set[int] = set()
        if self.partial.is_file() and self._same_settings():
            self._resume()

    def _same_settings(self) -> bool:
        """Whether the partial file was written with these settings; if not, it is deleted."""
        if self.settings is None:
            return True
        try:
            recorded = json.loads(self.settings_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            recorded = None
        if recorded == self.settings:
            return True
        if isinstance(recorded, dict):
            changed = sorted(k for k in recorded.keys() | self.settings.keys()
                             if recorded.get(k) != self.settings.get(k))
            why = f"was written with other settings ({', '.join(changed)})"
        else:
            why = "has no record of its settings"
        warnings.warn(f"{self.partial} {why}: starting over", stacklevel=4)
        self.partial.unlink()
        return False

    def _resume(self) -> None:
        text = self.partial.read_text()
        lines = text.splitlines()
        if text and not text.endswith("\n"):
            warnings.warn(f"{self.partial}:{len(lines)}: dropping the incomplete last line {lines[-1]!r} "
                          "(cut off when the run stopped); that sample is certified again", stacklevel=3)
            lines = lines[:-1]
        if not lines:
            self.partial.unlink()
            return
        if lines[0].split("\t") != self.columns:
            raise ValueError(f"{self.partial} has columns {lines[0]!r}, expected {self.columns}; delete it to restart")
        first_line: dict[int, int] = {}
        for number, line in enumerate(lines[1:], start=2):
            idx = self._parse_row(line, number)
            if idx in first_line:
                raise ValueError(f"{self.partial}:{number}: idx {idx} was already written on line "
                                 f"{first_line[idx]}; delete the file to restart")
            first_line[idx] = number
        with atomic_file(self.partial) as tmp:
            tmp.write_text("\n".join(lines) + "\n")
        self.done = set(first_line)

    def _parse_row(self, line: str, number: int) -> int:
        """The row's idx; an error naming file and line unless every column holds a number."""
        fields = line.split("\t")
        problem = None
        if len(fields) != len(self.columns):
            problem = f"{len(fields)} fields, expected {len(self.columns)} ({' '.join(self.columns)})"
        elif not fields[0].isdigit():
            problem = f"idx {fields[0]!r} is not a non-negative integer"
        else:
            for column, value in zip(self.columns[1:], fields[1:]):
                try:
                    float(value)
                except ValueError:
                    problem = f"{column} {value!r} is not a number"
                    break
        if problem:
            raise ValueError(f"{self.partial}:{number}: corrupt row {line!r}: {problem}; delete the file to restart")
        return int(fields[0])

    def append(self, row: Mapping[str, Any]) -> None:
        fresh = not self.partial.is_file() or self.partial.stat().st_size == 0
        if fresh and self.settings is not None:
            write_json(self.settings_file, self.settings)
        with self.partial.open("a") as handle:
            handle.write(("\t".join(self.columns) + "\n" if fresh else "")
                         + "\t".join(_format(row[c]) for c in self.columns) + "\n")
        self.done.add(int(row["idx"]))

    def finish(self) -> None:
        """Sort by index and move into place."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        frame = read_table(self.partial) if self.partial.is_file() else pd.DataFrame(columns=self.columns)
        write_table(self.path, frame.sort_values("idx"))
        self.partial.unlink(missing_ok=True)
        self.settings_file.unlink(missing_ok=True)


@contextmanager
def resumable_table(
    path: Path | str, columns: list[str], settings: Mapping[str, Any] | None = None,
) -> Iterator[ResumableTable]:
    """Open a :class:`ResumableTable` and finish it only if the block completes."""
    table = ResumableTable(path, columns, settings)
    yield table
    table.finish()


def concat_tables(inputs: Iterable[Path | str], output: Path | str) -> None:
    """Concatenate shard tables, sorted by ``idx``; shards must not overlap."""
    frame = pd.concat([read_table(p) for p in inputs], ignore_index=True)
    duplicated = frame["idx"][frame["idx"].duplicated()]
    if len(duplicated):
        raise ValueError(f"shards overlap on idx {sorted(duplicated)[:5]}")
    write_table(output, frame.sort_values("idx"))


def _format(value: Any) -> str:
    if isinstance(value, float):
        return repr(float(value))  # shortest string that reads back as the same float64
    if isinstance(value, bool):
        return str(int(value))
    return str(value)
