"""Certified-accuracy tables and figures.

Certified accuracy at radius r is the fraction of test inputs whose certificate is correct with
radius ≥ r (Cohen et al. 2019, Sec. 4); ACR is the mean certified radius, counting 0 for wrong or
abstained inputs (Zhai et al. 2020). Every figure draws a method in the colour of :func:`method_colour`.
"""
from __future__ import annotations

import json
import math
import re
import warnings
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import to_hex
from scipy.stats import binomtest

from dualrs.published import published_claims, published_table
from dualrs.table_checks import CERTIFICATE_KINDS, CERTIFICATE_OPTIONAL_KINDS, TableError, read_input_table
from dualrs.tables import atomic_file
from dualrs.validation import check_output_path

ORACLE = "oracle over global σ (not a certificate)"


def certified_counts(certificates: pd.DataFrame, radii: Sequence[float]) -> np.ndarray:
    """#{inputs: correct ∧ radius ≥ r} for each r."""
    correct = certificates["correct"].to_numpy() == 1
    radius = certificates["radius"].to_numpy()
    return np.array([int((correct & (radius >= r)).sum()) for r in radii])


def certified_accuracy(certificates: pd.DataFrame, radii: Sequence[float]) -> np.ndarray:
    """P[correct ∧ radius ≥ r] for each r."""
    return certified_counts(certificates, radii) / len(certificates)


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


SAME_CHOICE, RADIUS_CHANGE = "same choice (%)", "mean abs ΔR"


def choice_agreement(routed: Mapping[str, pd.DataFrame], reference: pd.DataFrame) -> pd.DataFrame:
    """How far each routed row is from ``reference`` input by input (an ablation's rows from the experiment's
    own round-0 dual RS), where a difference of certified accuracy alone could hide or exaggerate it:

    - ``same choice (%)``: the share of test inputs whose selector chose what the reference's chose (the σ
      of dual RS, the expert of a router; a selector that abstains chooses nothing, which counts too);
    - ``mean abs ΔR``: the mean over test inputs of |R − R_ref|, R the certified radius of a correct
      certificate and 0 otherwise (the radius certified accuracy and ACR count).

    Rows that differ only by training randomness (the ``estimator_seed`` ablation) show how much of either
    is noise."""
    column = "expert" if "expert" in reference else "sigma"
    reference = reference.set_index("idx")
    rows = {}
    for name, frame in routed.items():
        if column not in frame:
            raise ValueError(f"method {name!r} records no {column} column, but the reference chose by {column}: "
                             "compare a router with a router and dual RS with dual RS")
        if frozenset(frame["idx"]) != frozenset(reference.index):
            raise ValueError(f"method {name!r} was certified on other test samples than the reference")
        matched = reference.loc[frame["idx"]]
        same = choice_labels(frame[column]) == choice_labels(matched[column])
        change = np.abs(correct_radius(frame) - correct_radius(matched))
        rows[name] = {SAME_CHOICE: 100 * float(np.mean(same)), RADIUS_CHANGE: float(np.mean(change))}
    return pd.DataFrame.from_dict(rows, orient="index")


def choice_labels(choices: pd.Series) -> np.ndarray:
    """Each choice as text, "" where the selector abstained (chose nothing)."""
    return np.array(["" if pd.isna(choice) else str(choice) for choice in choices])


ABSTAIN = "abstain"


def choice_shares(methods: Mapping[str, pd.DataFrame], sigmas: Sequence[float] = ()) -> pd.DataFrame:
    """Share (%) of test inputs on which each selecting row chose each candidate: the σ of dual RS, of the
    cascade stage that answered and of the oracle's certificate; the expert of a router; ``abstain`` where
    nothing was chosen (the estimator, or every cascade stage, abstained). Rows without a choice (global σ,
    experts alone) are left out; a row's cells for the other kind of candidate are NaN. Columns: the σ
    chosen by a row and every σ of ``sigmas`` (the candidate set Σ, chosen or not), in increasing order;
    the experts chosen, by name.

    Beside the oracle's row, it shows whether a selector chooses per input at all: one that picks the same
    σ for every input is global RS at σ, whatever its certified accuracy."""
    kinds = {name: "expert" if "expert" in frame else "sigma"
             for name, frame in methods.items() if "expert" in frame or "sigma" in frame}
    def chosen(kind: str) -> set:
        return {value for name in kinds if kinds[name] == kind for value in methods[name][kind].dropna()}

    sigmas = sorted({float(s) for s in chosen("sigma")} | {float(s) for s in sigmas})
    experts = sorted(str(e) for e in chosen("expert"))
    candidates = {"sigma": [sigma_label(s) for s in sigmas], "expert": experts}
    rows = {}
    for name, kind in kinds.items():
        label = sigma_label if kind == "sigma" else str
        counts = methods[name][kind].map(label, na_action="ignore").fillna(ABSTAIN).value_counts()
        rows[name] = {c: 100 * counts.get(c, 0) / len(methods[name]) for c in [*candidates[kind], ABSTAIN]}
    table = pd.DataFrame.from_dict(rows, orient="index", columns=[*candidates["sigma"], *experts, ABSTAIN], dtype=float)
    table.index.name = "method"
    return table


def sigma_label(sigma: float) -> str:
    return f"σ={float(sigma):g}"


def accuracy_curves(methods: Mapping[str, pd.DataFrame], grid: Sequence[float]) -> pd.DataFrame:
    """Long table ``method radius certified_accuracy`` (%) over ``grid``: the data of the curves figure."""
    return pd.concat([
        pd.DataFrame({"method": name, "radius": grid, "certified_accuracy": 100 * certified_accuracy(frame, grid)})
        for name, frame in methods.items()
    ], ignore_index=True)


def oracle_certificates(global_by_sigma: Mapping[float, pd.DataFrame]) -> pd.DataFrame:
    """Per test input, the best of the global-σ certificates: among the σ that certify the true class,
    the one with the largest radius (ties: the smallest σ); without one, the smallest σ that predicts
    (a wrong class), else an abstention. ``sigma`` is the σ picked, ``time`` the sum over σ.

    Not a certificate: σ is chosen after seeing every run's outcome on the input, so it upper-bounds
    what any selection of σ from these runs can certify (up to Monte Carlo noise).
    """
    frames = [frame.assign(sigma=sigma) for sigma, frame in sorted(global_by_sigma.items())]
    reference = frozenset(frames[0]["idx"])
    if any(frozenset(f["idx"]) != reference for f in frames):
        raise ValueError("the global-σ runs were certified on different test samples")
    stacked = pd.concat(frames, ignore_index=True)
    stacked = stacked.assign(_correct=stacked["correct"] == 1, _radius=correct_radius(stacked),
                             _answered=stacked["predict"] >= 0)
    ranked = stacked.sort_values(["idx", "_correct", "_radius", "_answered", "sigma"],
                                 ascending=[True, False, False, False, True], kind="stable")
    best = ranked.groupby("idx", sort=True).head(1).drop(columns=["_correct", "_radius", "_answered"])
    if all("time" in f for f in frames):
        best = best.assign(time=stacked.groupby("idx")["time"].sum().loc[best["idx"]].to_numpy())
    return best.reset_index(drop=True)


def headroom_table(summary: pd.DataFrame, global_rows: Sequence[str], rows: Sequence[str]) -> pd.DataFrame:
    """Share (%) of the oracle's headroom each row captures, per radius column and for ACR:
    100 (row − best global) / (oracle − best global), where best global is the best global-σ row at that
    column; NaN where the oracle has no headroom (oracle = best global). The first row, :data:`HEADROOM`,
    is the headroom itself (oracle − best global, in points and ACR units), so that a share is read with
    its denominator."""
    columns = [c for c in summary.columns if c.startswith("r=")] + ["ACR"]
    best = summary.loc[list(global_rows), columns].max()
    room = summary.loc[ORACLE, columns] - best
    shares = 100 * (summary.loc[list(rows), columns] - best) / room.where(room > 0)
    shares = pd.concat([room.to_frame(HEADROOM).T, shares])
    shares.index.name = "method"
    return shares


HEADROOM = "headroom: oracle − best global σ (absolute)"


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper–Pearson) two-sided interval of a binomial proportion k/n."""
    interval = binomtest(k, n).proportion_ci(confidence_level=level, method="exact")
    return interval.low, interval.high


VS_PAPER_COLUMNS = ["method", "paper_method", "metric", "radius", "reproduced", "ci_low", "ci_high", "n",
                    "published", "difference", "version", "source", "paper_test_set"]


def vs_paper_table(methods: Mapping[str, pd.DataFrame], experiment: str, global_rows: Sequence[str]) -> pd.DataFrame:
    """Reproduced vs published, one row per (method, metric, radius) present in both: certified accuracy
    (%) with its 95% Clopper–Pearson interval at the reproduced n, and the inference overhead (%) of a
    method, 100 (mean s/input of the method / mean over σ of the global runs' s/input − 1)."""
    rows = []
    published = published_table(experiment)
    for _, paper in (published if published is not None else pd.DataFrame()).iterrows():
        if paper["method"] not in methods:
            continue
        frame = methods[paper["method"]]
        k, n = int(certified_counts(frame, [paper["radius"]])[0]), len(frame)
        low, high = clopper_pearson(k, n)
        rows.append({"method": paper["method"], "paper_method": paper["paper"], "metric": "certified accuracy (%)",
                     "radius": paper["radius"], "reproduced": 100 * k / n, "ci_low": 100 * low, "ci_high": 100 * high,
                     "n": n, "published": paper["certified_accuracy"], "version": paper["version"],
                     "source": paper["source"], "paper_test_set": paper["test_set"]})
    claims = published_claims(experiment)
    overheads = claims[claims["key"] == "inference_overhead"] if claims is not None else pd.DataFrame()
    for _, claim in overheads.iterrows():
        timed = [methods[g]["time"].mean() for g in global_rows if "time" in methods[g]]
        if claim["method"] not in methods or "time" not in methods[claim["method"]] or not timed:
            continue
        overhead = 100 * (methods[claim["method"]]["time"].mean() / np.mean(timed) - 1)
        rows.append({"method": claim["method"], "paper_method": claim["paper"], "metric": "inference overhead (%)",
                     "reproduced": overhead, "n": len(methods[claim["method"]]), "published": claim["value"],
                     "version": claim["version"], "source": claim["source"]})
    table = pd.DataFrame(rows, columns=VS_PAPER_COLUMNS)
    table["difference"] = table["reproduced"] - table["published"]
    return table


def column_formatter(column: str) -> Callable[[float], str]:
    """How a column is printed in markdown and LaTeX: accuracies and shares %.1f, ACR %.3f, s/input with
    3 significant digits, n as an integer; missing values blank."""
    if column == "n":
        form = "{:.0f}".format
    elif column in ("ACR", RADIUS_CHANGE):
        form = "{:.3f}".format
    elif column == "s/input":
        form = "{:#.3g}".format
    else:
        form = "{:.1f}".format
    return lambda value: value if isinstance(value, str) else "" if pd.isna(value) else form(value)


def shown_columns(table: pd.DataFrame) -> list[str]:
    """Columns of the markdown and LaTeX tables: those not zero (or missing) on every row."""
    return [c for c in table.columns if not (table[c].fillna(0) == 0).all()]


def text_table(
    table: pd.DataFrame, formats: Mapping[str, Callable[[float], str]] | None = None, drop_zero: bool = True,
) -> pd.DataFrame:
    """``table`` with its index as the first column, every value printed by its column's formatter; with
    ``drop_zero``, only the :func:`shown_columns`."""
    formats = formats or {}
    columns = shown_columns(table) if drop_zero else list(table.columns)
    text = pd.DataFrame({c: table[c].map(formats.get(c, column_formatter(c))) for c in columns})
    return text.set_axis(table.index).reset_index()


GREEK = {"σ": r"\sigma", "λ": r"\lambda", "α": r"\alpha", "β": r"\beta", "Σ": r"\Sigma", "Δ": r"\Delta",
         "≥": r"\geq", "≤": r"\leq", "−": "-"}
LATEX_SPECIAL = {c: "\\" + c for c in "&%$#_{}"} | {"~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                                                     "\\": r"\textbackslash{}"}


def latex_text(text: str) -> str:
    """Plain text as LaTeX: special characters escaped, Greek letters and ≥ ≤ as math ($\\sigma$)."""
    escaped = "".join(LATEX_SPECIAL.get(c, c) for c in str(text))
    return re.sub("[" + "".join(GREEK) + "]", lambda m: f"${GREEK[m.group()]}$", escaped)


def latex_header(column: str) -> str:
    return f"${column}$" if column.startswith("r=") or column == "n" else latex_text(column)


def latex_table(table: pd.DataFrame, formats: Mapping[str, Callable[[float], str]] | None = None) -> str:
    """booktabs tabular (pandas Styler): one header row, method names and headers escaped, values
    printed by :func:`column_formatter`, all-zero columns dropped."""
    text = text_table(table, formats)
    text = text.map(latex_text).rename(columns=latex_header)
    return text.style.hide(axis="index").to_latex(hrules=True, column_format="l" + "r" * (text.shape[1] - 1))


def markdown_table(
    table: pd.DataFrame, formats: Mapping[str, Callable[[float], str]] | None = None, drop_zero: bool = True,
) -> str:
    return text_table(table, formats, drop_zero).to_markdown(index=False, disable_numparse=True) + "\n"


def write_tables(table: pd.DataFrame, csv_path: Path | str) -> list[Path]:
    """Write ``.csv`` and its ``.md``, ``.tex`` (booktabs) and ``.json`` (metrics, missing as null)
    siblings; the CSV and JSON keep every column."""
    csv_path = Path(csv_path)
    rounded = table.round({c: 1 for c in table.columns if c.startswith("r=")})
    rounded = rounded.round({"ACR": 3, "s/input": 4, SAME_CHOICE: 1, RADIUS_CHANGE: 3})
    paths = [csv_path.with_suffix(ext) for ext in (".csv", ".md", ".tex", ".json")]
    metrics = {name: {k: None if pd.isna(v) else float(v) for k, v in row.items()} for name, row in rounded.iterrows()}
    contents = [rounded.to_csv(), markdown_table(table), latex_table(table),
                json.dumps(metrics, indent=1, ensure_ascii=False) + "\n"]
    _write_texts(paths, contents)
    return paths


def write_headroom(shares: pd.DataFrame, csv_path: Path | str) -> list[Path]:
    """The headroom shares (%) as ``.csv`` and ``.md``."""
    paths = [Path(csv_path).with_suffix(ext) for ext in (".csv", ".md")]
    note = ("First row: the headroom itself (accuracy points; ACR in its units). Other rows: share (%) of "
            "the headroom of the oracle over global σ (not a certificate) captured, "
            "100 (row − best global σ) / (oracle − best global σ); blank: no headroom.\n\n")
    formats = {c: column_formatter("ACR" if c == "ACR" else "r=") for c in shares.columns}
    _write_texts(paths, [shares.round(3).to_csv(), note + markdown_table(shares, formats)])
    return paths


def write_choices(shares: pd.DataFrame, csv_path: Path | str) -> list[Path]:
    """The choice shares (%) of :func:`choice_shares` as ``.csv`` and ``.md``."""
    paths = [Path(csv_path).with_suffix(ext) for ext in (".csv", ".md")]
    note = ("Share (%) of test inputs on which each row chose each σ (each expert, for a router); abstain: "
            f"nothing chosen. The row of the {ORACLE} gives the σ of each input's best global certificate, "
            "chosen after seeing every outcome.\n\n")
    formats = {c: column_formatter("r=") for c in shares.columns}
    _write_texts(paths, [shares.round(1).to_csv(), note + markdown_table(shares, formats, drop_zero=False)])
    return paths


def write_vs_paper(comparison: pd.DataFrame, experiment: str, csv_path: Path | str) -> list[Path]:
    """The comparison with the paper as ``.csv`` and ``.md`` (a note when nothing is comparable)."""
    paths = [Path(csv_path).with_suffix(ext) for ext in (".csv", ".md")]
    shown = comparison.drop(columns=["source", "paper_test_set"]).set_index("method")
    if len(comparison):
        sources = "\n".join(f"- {v}: {s}" for v, s in comparison[["version", "source"]].drop_duplicates().to_numpy())
        formats = {"n": column_formatter("n"), "radius": lambda r: "" if pd.isna(r) else f"{r:g}"}
        markdown = markdown_table(shown, formats) + f"\nSources:\n{sources}\n"
    else:
        markdown = (f"No published number of {experiment!r} is recorded for a row of this table "
                    "(see dualrs/published_numbers.yaml).\n")
    _write_texts(paths, [comparison.round(3).to_csv(index=False), markdown])
    return paths


def _write_texts(paths: Sequence[Path], contents: Sequence[str]) -> None:
    for path, text in zip(paths, contents):
        with atomic_file(path) as tmp:
            tmp.write_text(text)


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


FIXED_COLOURS = {ORACLE: "black", "dual": "tab:orange", "dual (off-the-shelf)": "tab:orange",
                 "router": "tab:purple", "cascade": "tab:green", ABSTAIN: "lightgrey"}


def method_colour(name: str) -> str:
    """The colour of a method in every figure, from its name alone: global σ rows in blues, darker for
    larger σ (σ = 1/8 … 2 on a log scale); finetuned dual rounds in reds (estimator retrained:
    red-purples), darker for later rounds; cascade rows in greens, experts alone in browns; oracle
    black; others from a fixed palette by a checksum of the name."""
    if name in FIXED_COLOURS:
        return to_hex(FIXED_COLOURS[name])
    if match := re.fullmatch(r"global σ=(\S+)", name):
        position = min(max((math.log2(float(match.group(1))) + 3) / 4, 0.0), 1.0)
        return to_hex(plt.get_cmap("Blues")(0.35 + 0.6 * position))
    if match := re.fullmatch(r"dual \(finetuned(, estimator retrained)?(?:, round (\d+))?\)", name):
        palette = "RdPu" if match.group(1) else "Reds"
        return to_hex(plt.get_cmap(palette)(min(0.45 + 0.2 * int(match.group(2) or 1), 1.0)))
    for prefix, palette in (("cascade", "Greens"), ("expert", "YlOrBr")):
        if name.startswith(prefix):
            return to_hex(plt.get_cmap(palette)(0.45 + 0.5 * (zlib.crc32(name.encode()) % 8) / 7))
    return to_hex(plt.get_cmap("tab10")(zlib.crc32(name.encode()) % 10))


def method_style(name: str) -> str:
    """Line style: dashed for single-σ runs (global, experts), dotted for the oracle, else solid."""
    return ":" if name == ORACLE else "--" if name.startswith(("global", "expert")) else "-"


def plot_figures(
    methods: Mapping[str, pd.DataFrame], routed: Sequence[str], global_by_sigma: Mapping[float, pd.DataFrame],
    out_dir: Path | str, title: str,
) -> list[Path]:
    """Accuracy–radius curves of all methods; ECDF of ΔR_c; per routed method (dual RS, router): the
    σ or expert chosen per class and R_σ vs R_c."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = _save(curves_figure(methods, title), out_dir / "certified_accuracy")
    if global_by_sigma and routed:
        written += _save(delta_ecdf_figure({name: methods[name] for name in routed}, global_by_sigma, title),
                         out_dir / "delta_rc_ecdf")
    for name in routed:
        written += _save(choices_figure(name, methods[name]), out_dir / f"{slug(name)}_choices")
    return written


def slug(name: str) -> str:
    """A file-name form of a method name: 'dual (finetuned, round 1)' → 'dual_finetuned_round_1'."""
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", name).strip("_")


def curves_figure(methods: Mapping[str, pd.DataFrame], title: str) -> plt.Figure:
    top = max(float(f["radius"].max()) for f in methods.values()) * 1.05 + 1e-6
    curves = accuracy_curves(methods, np.linspace(0, top, 400))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, curve in curves.groupby("method", sort=False):
        ax.plot(curve["radius"], curve["certified_accuracy"], method_style(name), color=method_colour(name), label=name)
    ax.set(xlabel="radius (ℓ2)", ylabel="certified accuracy (%)", title=title, ylim=(0, 100))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def delta_ecdf_figure(
    routed: Mapping[str, pd.DataFrame], global_by_sigma: Mapping[float, pd.DataFrame], title: str,
) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, frame in routed.items():
        delta = np.sort(delta_classifier_radius(frame, global_by_sigma))
        ax.step(delta, np.arange(1, len(delta) + 1) / len(delta), where="post", color=method_colour(name), label=name)
    ax.axvline(0, color="k", lw=0.8, ls=":")
    ax.set(xlabel="ΔR_c = R_c at estimated σ − best global-σ radius", ylabel="fraction of test inputs",
           title=f"{title}: ECDF of ΔR_c", ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def choices_figure(name: str, frame: pd.DataFrame) -> plt.Figure:
    """Left: how often each σ (or expert) is chosen, per true class, in the colour of that σ's global
    row (that expert's row); right: R_σ vs R_c."""
    if "expert" in frame:
        choice, row = frame["expert"], "expert {}".format
    else:
        choice, row = frame["sigma"].map(sigma_label, na_action="ignore"), "global {}".format
    counts = pd.crosstab(frame["label"], choice.fillna(ABSTAIN))
    colours = [method_colour(c if c == ABSTAIN else row(c)) for c in counts.columns]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    counts.plot.bar(stacked=True, ax=left, width=0.8, color=colours)
    left.set(xlabel="true class", ylabel="test inputs", title=f"{name}: choice per class")
    left.legend(fontsize=7)
    certified = frame[frame["predict"] >= 0]
    points = right.scatter(certified["r_c"], certified["r_sigma"], s=8, c=certified["sigma"], cmap="viridis")
    fig.colorbar(points, ax=right, label="σ")
    limit = max(float(certified[["r_c", "r_sigma"]].max().max()), 1e-3) if len(certified) else 1.0
    right.plot([0, limit], [0, limit], "k:", lw=1)
    right.set(xlabel="R_c (classifier)", ylabel="R_σ (estimator)", title="which radius binds")
    return fig


def vs_paper_figure(methods: Mapping[str, pd.DataFrame], comparison: pd.DataFrame, title: str) -> plt.Figure:
    """Reproduced certified-accuracy curves with their 95% Clopper–Pearson band, and the published
    points (markers) of the same methods."""
    accuracy = comparison[comparison["metric"] == "certified accuracy (%)"]
    grid = np.linspace(0, float(accuracy["radius"].max()) * 1.1 + 1e-6, 120)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, published in accuracy.groupby("method", sort=False):
        frame, colour = methods[name], method_colour(name)
        counts = certified_counts(frame, grid)
        band = 100 * np.array([clopper_pearson(int(k), len(frame)) for k in counts])
        ax.plot(grid, 100 * counts / len(frame), method_style(name), color=colour, label=f"{name} (reproduced)")
        ax.fill_between(grid, band[:, 0], band[:, 1], color=colour, alpha=0.2, lw=0)
        ax.plot(published["radius"], published["published"], "o", color=colour, mec="k",
                label=f"{published['paper_method'].iloc[0]} (published, {published['version'].iloc[0]})")
    ax.set(xlabel="radius (ℓ2)", ylabel="certified accuracy (%)", title=f"{title}: reproduced vs published",
           ylim=(0, 100))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _save(fig: plt.Figure, stem: Path) -> list[Path]:
    fig.tight_layout()
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for path in paths:
        fig.savefig(path, dpi=150)
    plt.close(fig)
    return paths


GLOBAL_KINDS = CERTIFICATE_KINDS | {"predict": "predict"}  # the oracle prefers a wrong answer to an abstention
ROUTED_KINDS = CERTIFICATE_KINDS | {"sigma": "sigma_or_empty"}  # dual RS and routers record the σ chosen per input
FIGURE_KINDS = {"label": "label", "predict": "predict", "r_sigma": "radius", "r_c": "radius"}  # a routed row's figures


def check_outputs(table: Path, figures: Path | None) -> None:
    """Refuse, before anything is written, a ``table`` that is not a ``.csv`` name, and either output where it
    cannot be written (:func:`~dualrs.validation.check_output_path`)."""
    if table.suffix != ".csv":
        raise ValueError(f"argument --table: {table} does not end in .csv; name the CSV file to write (the .md, "
                         ".tex, .json and other tables are written beside it)")
    check_output_path("--table", table)
    if figures is not None:
        check_output_path("--figures", figures, folder=True)


def report_rows(
    global_tables: Mapping[float, Path], other_tables: Mapping[str, Path], routed_tables: Mapping[str, Path],
    figures: bool,
) -> dict[str, tuple[Path, Mapping[str, str]]]:
    """The rows of the table in order, name -> (certificate TSV, the columns it needs): the global σ runs
    (``global σ=SIGMA``), ``other_tables``, then the routed ones (with ``figures``, those their figures
    draw too). No row at all, or a name given to two rows or to the oracle's, is an error."""
    if not (global_tables or other_tables or routed_tables):
        raise ValueError("nothing to report: give at least one --global SIGMA=TSV, --method NAME=TSV or "
                         "--dual NAME=TSV")
    groups = [({f"global σ={s:g}": p for s, p in sorted(global_tables.items())}, GLOBAL_KINDS),
              (other_tables, CERTIFICATE_KINDS), (routed_tables, ROUTED_KINDS | (FIGURE_KINDS if figures else {}))]
    names = [ORACLE, *(name for group, _ in groups for name in group)]
    if repeated := sorted({name for name in names if names.count(name) > 1}):
        raise ValueError(f"row name {', '.join(map(repr, repeated))} given to more than one row (a --global row "
                         f"is named 'global σ=SIGMA', {ORACLE!r} is the oracle's); name each row once")
    return {name: (Path(path), kinds) for group, kinds in groups for name, path in group.items()}


def load_methods(rows: Mapping[str, tuple[Path | str, Mapping[str, str]]]) -> dict[str, pd.DataFrame]:
    """Each row's certificate TSV with the columns it needs (name -> kind), checked (:func:`read_certificates`)."""
    return {name: read_certificates(path, f"the certificates of {name!r}", kinds)
            for name, (path, kinds) in rows.items()}


def read_certificates(path: Path | str, what: str, columns: Mapping[str, str] = CERTIFICATE_KINDS) -> pd.DataFrame:
    """The certificates at ``path`` (:func:`~dualrs.table_checks.read_input_table`); a table without one
    is an error."""
    frame = read_input_table(path, what, columns, CERTIFICATE_OPTIONAL_KINDS)
    if frame.empty:
        raise TableError(f"{path} ({what}) holds no certificates")
    return frame



def report_experiment(
    global_tables: Mapping[float, Path], other_tables: Mapping[str, Path], routed_tables: Mapping[str, Path],
    radii: Sequence[float], table: Path, figures: Path | None, title: str, published: str | None = None,
    choices_reference: Path | None = None, sigmas: Sequence[float] = (),
) -> None:
    """Summary table (csv/md/tex/json), the accuracy–radius curves as CSV and the figures of one experiment.

    Rows: global σ runs, the oracle over them (not a certificate; with global runs only), then
    ``other_tables`` (cascade, experts alone), then the routed methods (dual RS, router), whose
    certificates record the σ chosen per input. ``<table>_choices.csv/.md`` holds how often each row that
    chooses (oracle, cascades, routed rows) chose each σ (those of ``sigmas`` and of the global runs
    chosen or not) or expert (:func:`choice_shares`); a routed row that chose one σ for every input gets a
    warning. With global runs, ``<table>_headroom.csv/.md`` holds the share of the oracle's headroom every
    other row captures. With ``published`` (an experiment of
    :mod:`dualrs.published`), ``<table>_vs_paper.csv/.md`` and the figure ``vs_paper`` compare with it.
    With ``choices_reference`` (a routed certificate TSV), the routed rows get the columns of
    :func:`choice_agreement`.

    Every input (rows, their tables and columns, the output paths) is checked and every table computed
    before the first file is written: bad input is one :class:`ValueError` that leaves nothing behind.
    """
    table, figures = Path(table), None if figures is None else Path(figures)
    rows = report_rows(global_tables, other_tables, routed_tables, figures is not None)
    check_outputs(table, figures)
    methods = load_methods(rows)
    named_globals = list(rows)[:len(global_tables)]
    by_sigma = {s: methods[name] for s, name in zip(sorted(global_tables), named_globals)}
    if by_sigma:
        methods = {n: methods[n] for n in named_globals} | {ORACLE: oracle_certificates(by_sigma)} | methods
    summary = summary_table(methods, radii)
    if choices_reference is not None:
        reference = read_certificates(choices_reference, "the choices reference", ROUTED_KINDS)
        summary = summary.join(choice_agreement({n: methods[n] for n in routed_tables}, reference))
    choices = choice_shares(methods, [*global_tables, *sigmas])
    others = [*other_tables, *routed_tables]
    headroom = headroom_table(summary, named_globals, others) if by_sigma and others else None
    comparison = None if published is None else vs_paper_table(methods, published, named_globals)
    write_tables(summary, table)
    write_curves(methods, table.with_name(f"{table.stem}_curve.csv"))
    write_choices(choices, table.with_name(f"{table.stem}_choices.csv"))
    for name in routed_tables:
        if (single := choices.loc[name].drop(ABSTAIN).dropna()).max() == 100:
            warnings.warn(f"{name!r} chose {single.idxmax()} for every test input: it is that single choice "
                          "with extra cost, not a per-input selection", stacklevel=2)
    if headroom is not None:
        write_headroom(headroom, table.with_name(f"{table.stem}_headroom.csv"))
    if comparison is not None:
        write_vs_paper(comparison, published, table.with_name(f"{table.stem}_vs_paper.csv"))
    if figures is not None:
        plot_figures(methods, list(routed_tables), by_sigma, figures, title)
        if comparison is not None and (comparison["metric"] == "certified accuracy (%)").any():
            _save(vs_paper_figure(methods, comparison, title), figures / "vs_paper")
    print(summary.round(3).to_string())
    print(choices.round(1).to_string())
