"""Certified-accuracy tables and figures.

Certified accuracy at radius r is the fraction of test inputs whose certificate is correct with
radius ≥ r (Cohen et al. 2019, Sec. 4); ACR is the mean certified radius, counting 0 for wrong or
abstained inputs (Zhai et al. 2020).
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from dualrs.tables import atomic_file, read_table


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


def accuracy_curves(methods: Mapping[str, pd.DataFrame], grid: Sequence[float]) -> pd.DataFrame:
    """Long table ``method radius certified_accuracy`` (%) over ``grid``: the data of the curves figure."""
    return pd.concat([
        pd.DataFrame({"method": name, "radius": grid, "certified_accuracy": 100 * certified_accuracy(frame, grid)})
        for name, frame in methods.items()
    ], ignore_index=True)


def write_tables(table: pd.DataFrame, csv_path: Path | str) -> list[Path]:
    """Write ``.csv`` and its ``.md``, ``.tex`` (booktabs) and ``.json`` (metrics) siblings."""
    csv_path = Path(csv_path)
    rounded = table.round({c: 1 for c in table.columns if c.startswith("r=")}).round({"ACR": 3, "s/input": 4})
    paths = [csv_path.with_suffix(ext) for ext in (".csv", ".md", ".tex", ".json")]
    metrics = {name: {k: float(v) for k, v in row.items()} for name, row in rounded.iterrows()}
    contents = [rounded.to_csv(), rounded.to_markdown() + "\n", rounded.to_latex(float_format="%.1f"),
                json.dumps(metrics, indent=1, ensure_ascii=False) + "\n"]
    for path, text in zip(paths, contents):
        with atomic_file(path) as tmp:
            tmp.write_text(text)
    return paths


def write_curves(methods: Mapping[str, pd.DataFrame], path: Path | str, step: float = 0.05) -> None:
    """:func:`accuracy_curves` on the grid 0, step, … up to the largest radius, as CSV (DVC plots)."""
    top = max(float(frame["radius"].max()) for frame in methods.values())
    grid = np.round(np.arange(0.0, top + step, step), 6)
    with atomic_file(path) as tmp:
        accuracy_curves(methods, grid).to_csv(tmp, index=False)


def correct_radius(frame: pd.DataFrame, column: str = "radius") -> np.ndarray:
    """The radius of each correct certificate, 0 for wrong or abstained ones."""
    return np.where(frame["correct"].to_numpy() == 1, frame[column].to_numpy(dtype=np.float64), 0.0)


def delta_classifier_radius(routed: pd.DataFrame, global_by_sigma: Mapping[float, pd.DataFrame]) -> np.ndarray:
    """ΔR_c per input: the classifier's certified radius at the estimated σ minus the best certified
    radius over the global-σ runs (0 for wrong or abstained certificates on either side)."""
    index = routed["idx"].to_numpy()
    best = np.max([correct_radius(g.set_index("idx").loc[index].reset_index()) for g in global_by_sigma.values()],
                  axis=0)
    return correct_radius(routed, "r_c") - best


def plot_figures(
    methods: Mapping[str, pd.DataFrame], routed: Sequence[str], global_by_sigma: Mapping[float, pd.DataFrame],
    out_dir: Path | str, title: str,
) -> list[Path]:
    """Accuracy–radius curves of all methods; ECDF of ΔR_c; per routed method (dual RS, router): the
    σ or expert chosen per class and R_σ vs R_c."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = _curves(methods, out_dir / "certified_accuracy", title)
    if global_by_sigma and routed:
        written += _delta_ecdf({name: methods[name] for name in routed}, global_by_sigma,
                               out_dir / "delta_rc_ecdf", title)
    for name in routed:
        written += _choices(name, methods[name], out_dir / f"{slug(name)}_choices")
    return written


def slug(name: str) -> str:
    """A file-name form of a method name: 'dual (finetuned, round 1)' → 'dual_finetuned_round_1'."""
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", name).strip("_")


def _curves(methods: Mapping[str, pd.DataFrame], stem: Path, title: str) -> list[Path]:
    top = max(float(f["radius"].max()) for f in methods.values()) * 1.05 + 1e-6
    curves = accuracy_curves(methods, np.linspace(0, top, 400))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, curve in curves.groupby("method", sort=False):
        style = "--" if name.startswith(("global", "expert")) else "-"
        ax.plot(curve["radius"], curve["certified_accuracy"], style, label=name)
    ax.set(xlabel="radius (ℓ2)", ylabel="certified accuracy (%)", title=title, ylim=(0, 100))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, stem)


def _delta_ecdf(
    routed: Mapping[str, pd.DataFrame], global_by_sigma: Mapping[float, pd.DataFrame], stem: Path, title: str,
) -> list[Path]:
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, frame in routed.items():
        delta = np.sort(delta_classifier_radius(frame, global_by_sigma))
        ax.step(delta, np.arange(1, len(delta) + 1) / len(delta), where="post", label=name)
    ax.axvline(0, color="k", lw=0.8, ls=":")
    ax.set(xlabel="ΔR_c = R_c at estimated σ − best global-σ radius", ylabel="fraction of test inputs",
           title=f"{title}: ECDF of ΔR_c", ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, stem)


def _choices(name: str, frame: pd.DataFrame, stem: Path) -> list[Path]:
    """Left: how often each σ (or expert) is chosen, per true class; right: R_σ vs R_c."""
    choice = frame["expert"] if "expert" in frame else frame["sigma"].map(lambda s: f"σ={s:g}", na_action="ignore")
    counts = pd.crosstab(frame["label"], choice.fillna("abstain"))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    counts.plot.bar(stacked=True, ax=left, width=0.8, colormap="viridis")
    left.set(xlabel="true class", ylabel="test inputs", title=f"{name}: choice per class")
    left.legend(fontsize=7)
    certified = frame[frame["predict"] >= 0]
    points = right.scatter(certified["r_c"], certified["r_sigma"], s=8, c=certified["sigma"], cmap="viridis")
    fig.colorbar(points, ax=right, label="σ")
    limit = max(float(certified[["r_c", "r_sigma"]].max().max()), 1e-3) if len(certified) else 1.0
    right.plot([0, limit], [0, limit], "k:", lw=1)
    right.set(xlabel="R_c (classifier)", ylabel="R_σ (estimator)", title="which radius binds")
    return _save(fig, stem)


def _save(fig: plt.Figure, stem: Path) -> list[Path]:
    fig.tight_layout()
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for path in paths:
        fig.savefig(path, dpi=150)
    plt.close(fig)
    return paths


def load_methods(paths: Mapping[str, Path | str]) -> dict[str, pd.DataFrame]:
    return {name: read_table(path) for name, path in paths.items()}


def report_experiment(
    global_tables: Mapping[float, Path], other_tables: Mapping[str, Path], routed_tables: Mapping[str, Path],
    radii: Sequence[float], table: Path, figures: Path | None, title: str,
) -> None:
    """Summary table (csv/md/tex/json), the accuracy–radius curves as CSV and the figures of one experiment.

    Rows: global σ runs, then ``other_tables`` (cascade, experts alone), then the routed methods (dual RS,
    router), whose certificates record the σ chosen per input.
    """
    named_globals = {f"global σ={s:g}": p for s, p in sorted(global_tables.items())}
    methods = load_methods(named_globals | dict(other_tables) | dict(routed_tables))
    summary = summary_table(methods, radii)
    write_tables(summary, table)
    write_curves(methods, Path(table).with_name(f"{Path(table).stem}_curve.csv"))
    if figures is not None:
        by_sigma = {s: methods[name] for s, name in zip(sorted(global_tables), named_globals)}
        plot_figures(methods, list(routed_tables), by_sigma, figures, title)
    print(summary.round(3).to_string())
