"""The paper's published numbers (``dualrs/published_numbers.yaml``), each with its source and version.

Only numbers read in a source are recorded; the data file's header lists the tables that could not be
found. A published row names the row of our table it is compared with (``method``).
"""
from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

DATA = Path(__file__).with_name("published_numbers.yaml")
ROW_COLUMNS = ["paper", "method", "radius", "certified_accuracy", "version", "source", "test_set"]
CLAIM_COLUMNS = ["key", "paper", "method", "radius", "value", "unit", "wording", "version", "source"]


@cache
def _data() -> dict[str, Any]:
    return yaml.safe_load(DATA.read_text())


def published_table(experiment: str) -> pd.DataFrame | None:
    """Long table ``paper method radius certified_accuracy version source test_set`` (accuracy in %)
    of the experiment's published rows; None when none are recorded."""
    rows = [
        {"paper": row["paper"], "method": row["ours"], "radius": float(radius), "certified_accuracy": float(value),
         "version": row["version"], "source": row["source"], "test_set": row.get("test_set", "")}
        for row in _data().get(experiment, {}).get("rows", [])
        for radius, value in row["certified_accuracy"].items()
    ]
    return pd.DataFrame(rows, columns=ROW_COLUMNS) if rows else None


def published_claims(experiment: str) -> pd.DataFrame | None:
    """Single numbers of the paper's text (e.g. ``inference_overhead`` in %), one row each; None when
    none are recorded."""
    claims = [{"key": c["key"], "paper": c.get("paper", ""), "method": c.get("ours", ""),
               "radius": float(c.get("radius", "nan")), "value": float(c["value"]), "unit": c["unit"],
               "wording": c["wording"], "version": c["version"], "source": c["source"]}
              for c in _data().get(experiment, {}).get("claims", [])]
    return pd.DataFrame(claims, columns=CLAIM_COLUMNS) if claims else None
