"""Tables read as inputs (label tables, routes, certificates), checked before any work uses them.

Each reader names the columns it needs and the kind of value each holds; a missing column, a value
its kind cannot hold (text, NaN, a negative radius, a correct flag of 2), an index given twice or
one beyond the split raises :class:`TableError`, which names the file, the column and the line.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from dualrs.tables import read_table


class TableError(ValueError):
    """An input table lacks a column its reader needs or holds a value that column cannot hold."""


def _integers(low: int) -> Callable[[pd.Series], pd.Series]:
    return lambda v: v.notna() & (v >= low) & (v % 1 == 0)


def _finite(test: Callable[[pd.Series], pd.Series]) -> Callable[[pd.Series], pd.Series]:
    return lambda v: pd.Series(np.isfinite(v.to_numpy(dtype=float)), index=v.index) & test(v)


# kind -> (what the column holds, in words; which numeric values it allows)
COLUMN_KINDS: dict[str, tuple[str, Callable[[pd.Series], pd.Series]]] = {
    "idx": ("input indices (integers >= 0, each once)", _integers(0)),
    "label": ("class labels (integers >= 0)", _integers(0)),
    "predict": ("predictions (integers >= -1, -1 for an abstention)", _integers(-1)),
    "correct": ("0 or 1", lambda v: v.isin([0, 1])),
    "radius": ("radii (finite numbers >= 0)", _finite(lambda v: v >= 0)),
    "seconds": ("times in seconds (finite numbers >= 0)", _finite(lambda v: v >= 0)),
    "sigma": ("noise levels (finite numbers > 0)", _finite(lambda v: v > 0)),
    "sigma_or_empty": ("noise levels (finite numbers > 0), empty for an abstention",
                       lambda v: v.isna() | _finite(lambda w: w > 0)(v.fillna(1.0))),
}

# certificates of test inputs and labels (certificates of training inputs) alike
CERTIFICATE_KINDS = {"idx": "idx", "radius": "radius", "correct": "correct"}
CERTIFICATE_OPTIONAL_KINDS = {"label": "label", "predict": "predict", "sigma": "sigma_or_empty",
                              "r_sigma": "radius", "r_c": "radius", "time": "seconds"}
ROUTES_KINDS = {"idx": "idx", "sigma": "sigma"}


def read_input_table(
    path: Path | str, what: str, columns: Mapping[str, str], optional: Mapping[str, str] | None = None,
    num_items: int | None = None, split: str = "split",
) -> pd.DataFrame:
    """The TSV at ``path`` (``what`` names it in errors), whose ``columns`` (name -> kind of
    :data:`COLUMN_KINDS`) must exist and ``optional`` ones, where present, hold values of their kind; an
    ``idx`` column must not repeat an index nor, given ``num_items``, reach past the ``split``'s inputs."""
    frame = read_table(path)
    missing = [name for name in columns if name not in frame.columns]
    if missing:
        raise TableError(f"{path} ({what}) lacks the column{'s' * (len(missing) > 1)} {', '.join(missing)} "
                         f"(its columns: {', '.join(map(str, frame.columns)) or 'none'})")
    checked = dict(columns) | {k: v for k, v in (optional or {}).items() if k in frame.columns}
    for name, kind in checked.items():
        description, allowed = COLUMN_KINDS[kind]
        raw = frame[name]
        values = pd.to_numeric(raw, errors="coerce")
        bad = ~allowed(values) | (values.isna() & raw.notna())
        if bad.any():
            line = int(np.flatnonzero(bad.to_numpy())[0])
            raise TableError(f"{path} ({what}): column {name!r} holds {description}, but line {line + 2} holds "
                             f"{_shown(raw.iloc[line])}")
    if "idx" in checked:
        idx = frame["idx"].astype(int)
        if idx.duplicated().any():
            raise TableError(f"{path} ({what}): idx {int(idx[idx.duplicated()].iloc[0])} appears more than once")
        if num_items is not None and len(idx) and idx.max() >= num_items:
            raise TableError(f"{path} ({what}): idx {int(idx.max())} is past the {num_items} inputs of the {split} "
                             f"(idx 0 to {num_items - 1}): the table was made for another dataset or split")
    return frame


def _shown(value: object) -> str:
    if pd.isna(value):
        return "NaN or an empty field"
    return repr(value.item() if isinstance(value, np.generic) else value)
