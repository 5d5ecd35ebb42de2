"""Certified-accuracy tables and figures.

Certified accuracy at radius r is the fraction of test inputs whose certificate is correct with
radius ≥ r (Cohen et al. 2019, Sec. 4); ACR is the mean certified radius, counting 0 for wrong or
abstained inputs (Zhai et al. 2020).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from dualrs.io import read_table


def certified_accuracy(certificates: pd.DataFrame, radii: Sequence[float]) -> np.ndarray:
    """P[correct ∧ radius ≥ r] for each r."""
    correct = certificates["correct"].to_numpy() == 1
    radius = certificates["radius"].to_numpy()
    return np.array([(correct & (radius >= r)).mean() for r in radii])


def average_certified_radius(certificates: pd.DataFrame) -> float:
    return float((certificates["radius"] * (certificates["correct"] == 1)).mean())


def summary_table(methods: Mapping[str, pd.DataFrame], radii: Sequence[float]) -> pd.DataFrame:
    """Rows = methods; columns = certified accuracy (%) at each radius, ACR, the sample count and the
    mean certification time per input (seconds, where the certificates record it)."""
    reference = None
    rows = {}
    for name, frame in methods.items():
        ids = frozenset(frame["idx"])
        if reference is not None and ids != reference:
            raise ValueError(f"method {name!r} was certified on other test samples than the first method")
        reference = ids
        row = {f"r={r:g}": 100 * a for r, a in zip(radii, certified_accuracy(frame, radii))}
        rows[name] = {**row, "ACR": average_certified_radius(frame), "n": len(frame)}
        if "time" in frame:
            rows[name]["s/input"] = float(frame["time"].mean())
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "method"
    return table


def write_tables(table: pd.DataFrame, csv_path: Path | str) -> list[Path]:
    """Write ``.csv`` and its ``.md`` and ``.tex`` siblings; returns the paths."""
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    rounded = table.round({c: 1 for c in table.columns if c.startswith("r=")}).round({"ACR": 3, "s/input": 4})
    paths = [csv_path, csv_path.with_suffix(".md"), csv_path.with_suffix(".tex")]
    rounded.to_csv(paths[0])
    paths[1].write_text(rounded.to_markdown() + "\n")
    paths[2].write_text(rounded.to_latex(float_format="%.1f"))
    return paths


def plot_figures(
    methods: Mapping[str, pd.DataFrame], dual: Mapping[str, pd.DataFrame], out_dir: Path | str, title: str,
) -> list[Path]:
    """Accuracy–radius curves of all methods; for each dual run: σ histogram and R_σ vs R_c."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    top = max(float(f["radius"].max()) for f in methods.values()) * 1.05 + 1e-6
    grid = np.linspace(0, top, 400)
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, frame in methods.items():
        ax.plot(grid, 100 * certified_accuracy(frame, grid), label=name, ls="-" if name.startswith("dual") else "--")
    ax.set(xlabel="radius (ℓ2)", ylabel="certified accuracy (%)", title=title, ylim=(0, 100))
    ax.grid(alpha=0.3)
    ax.legend()
    written = _save(fig, out_dir / "certified_accuracy")
    for name, frame in dual.items():
        stem = name.replace(" ", "_").replace("(", "").replace(")", "").replace(",", "")
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
        chosen = frame["sigma"].dropna()
        values, counts = np.unique(chosen, return_counts=True)
        left.bar([f"{v:g}" for v in values], counts)
        left.set(xlabel="estimated σ", ylabel="test inputs", title=f"{name}: σ chosen (abstained: {frame['sigma'].isna().sum()})")
        certified = frame[frame["predict"] >= 0]
        right.scatter(certified["r_c"], certified["r_sigma"], s=8, c=certified["sigma"], cmap="viridis")
        limit = max(float(certified[["r_c", "r_sigma"]].max().max()), 1e-3) if len(certified) else 1.0
        right.plot([0, limit], [0, limit], "k:", lw=1)
        right.set(xlabel="R_c (classifier)", ylabel="R_σ (estimator)", title="which radius binds")
        written += _save(fig, out_dir / f"{stem}_sigma")
    return written


def _save(fig: plt.Figure, stem: Path) -> list[Path]:
    fig.tight_layout()
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for path in paths:
        fig.savefig(path, dpi=150)
    plt.close(fig)
    return paths


def load_methods(paths: Mapping[str, Path | str]) -> dict[str, pd.DataFrame]:
    return {name: read_table(path) for name, path in paths.items()}
