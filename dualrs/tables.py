"""Certificate and label tables (TSV), written atomically and resumable row by row.

Certificate rows are appended to ``<path>.partial`` and flushed one by one; the file is renamed to
``<path>`` only when every sample is done, so an interrupted run resumes where it stopped. One
process at a time writes an output: it holds the lock ``<path>.lock``. This module needs no torch,
so table-only commands (merge, report) start fast.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
import stat
import warnings
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
from filelock import FileLock, Timeout

GLOBAL_COLUMNS = ["idx", "label", "predict", "radius", "correct", "time"]
DUAL_COLUMNS = ["idx", "label", "predict", "sigma", "radius", "r_sigma", "r_c", "correct", "time"]
CASCADE_COLUMNS = ["idx", "label", "predict", "sigma", "radius", "stage", "correct", "time"]
ROUTER_COLUMNS = ["idx", "label", "predict", "expert", "sigma", "radius", "r_sigma", "r_c", "correct", "time"]
LABEL_COLUMNS = ["idx", "label", "predict", "count", "pA_lower", "radius", "correct"]
ROUTE_COLUMNS = ["idx", "sigma"]


class OutputError(RuntimeError):
    """An output that cannot be written now: another process is writing it, or the disk refused."""


@contextmanager
def atomic_file(path: Path | str) -> Iterator[Path]:
    """Yield a new hidden temporary sibling of ``path`` to write; rename it to ``path`` on success, delete
    it on failure, so readers never see a half-written file. Each call has its own temporary name, so
    concurrent writers of one path never write into one file (the last rename wins, whole). The file
    gets the mode of a file newly created under the umask (e.g. 0644 under 022), whatever mode the
    writer gave it (safetensors writes 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    mode = stat.S_IMODE(os.fstat(descriptor).st_mode)
    os.close(descriptor)
    try:
        yield tmp
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def give_default_modes(root: Path | str) -> None:
    """Give a tree written under a private temporary name (``tempfile.mkdtemp`` makes 0700, safetensors
    0600) the modes ``mkdir`` and ``open`` give under the umask: 0755 and 0644 under 022."""
    mask = os.umask(0)
    os.umask(mask)
    for folder, _, files in os.walk(root):
        os.chmod(folder, 0o777 & ~mask)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o666 & ~mask)


def file_digest(path: Path | str) -> str:
    """SHA-256 of a file's bytes (identifies a checkpoint in resumable settings)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """The JSON object in ``path``; text that is not JSON, or JSON that is not an object, is one error
    naming ``what`` the file is."""
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{what} is not valid JSON: {error}") from None
    if not isinstance(content, dict):
        raise ValueError(f"{what} must hold a JSON object, not {type(content).__name__}")
    return content


def write_json(path: Path | str, content: Mapping[str, Any]) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")


def write_table(path: Path | str, frame: pd.DataFrame) -> None:
    """Write a TSV atomically."""
    with atomic_file(path) as tmp:
        frame.to_csv(tmp, sep="\t", index=False)


def read_table(path: Path | str) -> pd.DataFrame:
    """The TSV at ``path``; a missing, empty or unparsable file is one error naming it."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"table not found: {path}")
    try:
        return pd.read_csv(path, sep="\t")
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not a tab-separated table with a header line: {error}") from None


def lock_output(path: Path) -> FileLock:
    """The exclusive lock ``<path>.lock`` that a writer of ``path`` holds for its whole life.

    It is an OS lock (flock), which ends with the process that holds it: the lock file a killed run
    leaves behind blocks nothing. A second writer fails at once instead of waiting: it is a rerun
    started while the first still runs (e.g. ``snakemake --unlock`` after the scheduler died and its
    jobs did not), and only the user can tell which of the two should go on.
    """
    lock = FileLock(path.with_name(path.name + ".lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise OutputError(f"{path} is being written by another process, which holds the lock {lock.lock_file}: "
                          "wait for that run to end, or stop it, then run again") from None
    except OSError as error:
        raise OutputError(f"cannot write {path}: creating its lock {lock.lock_file} failed "
                          f"({error.strerror or error})") from None
    return lock


class ResumableTable:
    """Rows appended to ``<path>.partial``; :meth:`done` lists indices already written.

    The writer holds :func:`lock_output` from opening to :meth:`close`. ``settings`` (JSON-able:
    everything the rows depend on) are recorded in ``<path>.partial.json``; a partial file written with
    other settings, or with none recorded, is started over with a warning, so rows of different settings
    never mix. ``expected`` maps each input of this output (idx) to its label (None: unknown). On
    resume, a last line without its newline was being written when the run stopped: it is dropped with
    a warning and that sample is done again. Any other row that could not have been written for these
    inputs (:func:`row_problem`) is an error naming the line.
    """

    def __init__(
        self, path: Path | str, columns: list[str], settings: Mapping[str, Any] | None = None,
        expected: Mapping[int, int | None] | None = None,
    ):
        self.path = Path(path)
        if self.path.is_dir():
            raise ValueError(f"output {self.path} is a directory; name a file to write")
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.settings_file = self.path.with_name(self.path.name + ".partial.json")
        self.columns, self.expected = columns, expected
        self.settings = None if settings is None else json.loads(json.dumps(settings, sort_keys=True, default=str))
        self.done: set[int] = set()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = lock_output(self.path)
        try:
            if self.partial.is_file() and self._same_settings():
                self._resume()
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> ResumableTable:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the lock; the partial file stays for a later run to resume."""
        self._lock.release()

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
        """The row's idx; an error naming file and line if the row is malformed (:func:`row_problem`)."""
        fields = line.split("\t")
        if len(fields) != len(self.columns):
            problem = f"{len(fields)} fields, expected {len(self.columns)} ({' '.join(self.columns)})"
        else:
            problem = row_problem(dict(zip(self.columns, fields)), self.expected)
        if problem:
            raise ValueError(f"{self.partial}:{number}: corrupt row {line!r}: {problem}; delete the file to restart")
        return int(fields[0])

    def append(self, row: Mapping[str, Any]) -> None:
        fresh = not self.partial.is_file() or self.partial.stat().st_size == 0
        try:
            if fresh and self.settings is not None:
                write_json(self.settings_file, self.settings)
            with self.partial.open("a") as handle:
                handle.write(("\t".join(self.columns) + "\n" if fresh else "")
                             + "\t".join(_format(row[c]) for c in self.columns) + "\n")
        except OSError as error:
            raise OutputError(f"cannot append to {self.partial} ({error.strerror or error}); the rows written "
                              "before are kept for the next run") from error
        self.done.add(int(row["idx"]))

    def finish(self) -> None:
        """Sort by index and move into place, once the partial file holds exactly the rows of this run
        and, with ``expected``, one row per input."""
        frame = read_table(self.partial) if self.partial.is_file() else pd.DataFrame(columns=self.columns)
        written = frame["idx"].astype(int)
        if set(written) != self.done or not written.is_unique:
            raise OutputError(f"{self.partial} holds {len(frame)} rows, but {len(self.done)} were written to it: "
                              "another process changed it; delete it and run again")
        missing = sorted(set(self.expected) - self.done) if self.expected is not None else []
        if missing:
            raise ValueError(f"{self.partial} lacks {len(missing)} of its {len(self.expected)} inputs "
                             f"(idx {missing[:5]}...): not writing an incomplete {self.path}")
        write_table(self.path, frame.sort_values("idx"))
        self.partial.unlink(missing_ok=True)
        self.settings_file.unlink(missing_ok=True)


#: Columns of integers; ``expert`` holds a name; every other column holds a float.
INTEGER_COLUMNS = frozenset({"idx", "label", "predict", "count", "correct", "stage"})
TEXT_COLUMNS = frozenset({"expert"})
RADIUS_COLUMNS = ("radius", "r_sigma", "r_c")


def row_problem(row: Mapping[str, str], expected: Mapping[int, int | None] | None = None) -> str | None:
    """What makes a certificate or label row impossible, or None.

    Integers where integers belong, finite floats (``sigma`` is NaN only on abstention), idx ≥ 0, predict a
    class or -1 (abstain), radii ≥ 0 and 0 on abstention, 0 ≤ pA_lower ≤ 1, time ≥ 0, ``correct`` =
    [predict = label]; with ``expected`` (idx → label, None: unknown), idx one of its inputs with that label.
    """
    value: dict[str, Any] = {}
    for column, text in row.items():
        if column in TEXT_COLUMNS:
            value[column] = text
        elif column in INTEGER_COLUMNS:
            if not re.fullmatch(r"-?[0-9]+", text):
                return f"{column} {text!r} is not an integer"
            value[column] = int(text)
        else:
            try:
                value[column] = float(text)
            except ValueError:
                return f"{column} {text!r} is not a number"
            if not math.isfinite(value[column]) and not (column == "sigma" and math.isnan(value[column])):
                return f"{column} {text!r} is not finite"
    abstains = value.get("predict") == -1
    checks = [
        (value.get("idx", 0) >= 0, "idx is negative"),
        (value.get("label", 0) >= 0, "label is negative"),
        (value.get("predict", -1) >= -1, "predict is neither a class nor -1 (abstain)"),
        (value.get("count", 0) >= 0, "count is negative"),
        (value.get("stage", 0) >= 0, "stage is negative"),
        (0 <= value.get("pA_lower", 0) <= 1, "pA_lower lies outside [0, 1]"),
        (value.get("time", 0) >= 0, "time is negative"),
        (not math.isnan(value.get("sigma", 1.0)) or abstains, "sigma is NaN, but the row does not abstain"),
        (math.isnan(value.get("sigma", 1.0)) or value.get("sigma", 1.0) > 0, "sigma is not positive"),
        *((value.get(c, 0) >= 0, f"{c} is negative") for c in RADIUS_COLUMNS),
        (not abstains or value.get("radius", 0) == 0, "radius is not 0, but the row abstains"),
    ]
    if "correct" in value:
        agree = value.get("predict") == value.get("label")
        checks.append((value["correct"] == int(agree),
                       f"correct is {value['correct']}, but predict and label {'agree' if agree else 'differ'}"))
    for ok, problem in checks:
        if not ok:
            return problem
    if expected is not None:
        idx = value["idx"]
        if idx not in expected:
            return f"idx {idx} is not one of the {len(expected)} inputs of this output"
        if "label" in value and expected[idx] is not None and value["label"] != expected[idx]:
            return f"label {value['label']}, but input {idx} has label {expected[idx]}"
    return None


@contextmanager
def resumable_table(
    path: Path | str, columns: list[str], settings: Mapping[str, Any] | None = None,
    expected: Mapping[int, int | None] | None = None,
) -> Iterator[ResumableTable]:
    """Open a :class:`ResumableTable`, finish it only if the block completes, release its lock."""
    with ResumableTable(path, columns, settings, expected) as table:
        yield table
        table.finish()


def concat_tables(inputs: Iterable[Path | str], output: Path | str) -> None:
    """Concatenate shard tables, sorted by ``idx``; shards must have the same columns and not overlap."""
    paths = list(inputs)
    frames = [read_table(p) for p in paths]
    for path, shard in zip(paths[1:], frames[1:]):
        if list(shard.columns) != list(frames[0].columns):
            raise ValueError(f"shard {path} has the columns {', '.join(shard.columns)}, but shard {paths[0]} has "
                             f"{', '.join(frames[0].columns)}: the shards come from different commands")
    frame = pd.concat(frames, ignore_index=True)
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
