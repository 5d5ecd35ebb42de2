"""Checkpoints (safetensors weights + JSON metadata) and certificate TSVs, all written atomically.

Certificate rows are appended to ``<path>.partial`` and flushed one by one; the file is renamed to
``<path>`` only when every sample is done, so an interrupted run resumes where it stopped.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import safetensors.torch
import torch
from torch import nn

from dualrs.models import create_model

GLOBAL_COLUMNS = ["idx", "label", "predict", "radius", "correct", "time"]
DUAL_COLUMNS = ["idx", "label", "predict", "sigma", "radius", "r_sigma", "r_c", "correct", "time"]
LABEL_COLUMNS = ["idx", "label", "predict", "count", "pA_lower", "radius", "correct"]
_BUILD_ONLY_KWARGS = ("weights", "pretrained")


def metadata_path(checkpoint: Path | str) -> Path:
    return Path(checkpoint).with_suffix(".json")


def save_checkpoint(path: Path | str, model: nn.Module, meta: Mapping[str, Any]) -> None:
    """Write ``path`` (safetensors) and its ``.json`` metadata; ``meta`` must name arch, num_classes, in_chans."""
    missing = {"arch", "num_classes", "in_chans"} - set(meta)
    if missing:
        raise ValueError(f"checkpoint metadata lacks {sorted(missing)}")
    with atomic_file(path) as tmp:
        safetensors.torch.save_model(model, str(tmp))
        write_json(metadata_path(path), dict(meta))


def load_checkpoint(path: Path | str, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model named in the metadata and load its weights; eval mode, on ``device``."""
    path, meta_file = Path(path), metadata_path(path)
    for required in (path, meta_file):
        if not required.is_file():
            raise FileNotFoundError(f"checkpoint file not found: {required}")
    meta = json.loads(meta_file.read_text())
    kwargs = {k: v for k, v in meta.get("model_kwargs", {}).items() if k not in _BUILD_ONLY_KWARGS}
    model = create_model(meta["arch"], meta["num_classes"], meta["in_chans"], **kwargs)
    try:
        safetensors.torch.load_model(model, str(path), device=str(device))
    except RuntimeError as error:
        raise ValueError(f"checkpoint {path} does not match architecture {meta['arch']!r}: {error}") from None
    return model.to(device).eval(), meta


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
    """Rows appended to ``<path>.partial``; :meth:`done` lists indices already written."""

    def __init__(self, path: Path | str, columns: list[str]):
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.columns = columns
        self.done: set[int] = set()
        if self.partial.is_file():
            text = self.partial.read_text()
            lines = text.splitlines()
            if text and not text.endswith("\n"):
                lines = lines[:-1]  # the row being written when the run was interrupted
            if lines and lines[0].split("\t") != columns:
                raise ValueError(f"{self.partial} has columns {lines[0]!r}, expected {columns}; delete it to restart")
            complete = [line for line in lines[1:] if line.count("\t") == len(columns) - 1]
            self.partial.write_text("\n".join(lines[:1] + complete) + ("\n" if lines else ""))
            self.done = {int(line.split("\t", 1)[0]) for line in complete}

    def append(self, row: Mapping[str, Any]) -> None:
        fresh = not self.partial.is_file() or self.partial.stat().st_size == 0
        with self.partial.open("a") as handle:
            if fresh:
                handle.write("\t".join(self.columns) + "\n")
            handle.write("\t".join(_format(row[c]) for c in self.columns) + "\n")
        self.done.add(int(row["idx"]))

    def finish(self) -> None:
        """Sort by index and move into place."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        frame = read_table(self.partial) if self.partial.is_file() else pd.DataFrame(columns=self.columns)
        write_table(self.path, frame.sort_values("idx"))
        self.partial.unlink(missing_ok=True)


@contextmanager
def resumable_table(path: Path | str, columns: list[str]) -> Iterator[ResumableTable]:
    """Open a :class:`ResumableTable` and finish it only if the block completes."""
    table = ResumableTable(path, columns)
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
        return f"{value:.6g}"
    if isinstance(value, bool):
        return str(int(value))
    return str(value)
