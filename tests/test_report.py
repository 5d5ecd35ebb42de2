import json

import numpy as np
import pandas as pd
import pytest

from dualrs.report import (accuracy_curves, average_certified_radius, certified_accuracy,
                           delta_classifier_radius, plot_figures, slug, summary_table, write_tables)


def _frame(radius, correct, sigma=None, label=None):
    frame = pd.DataFrame({"idx": range(len(radius)), "radius": radius, "correct": correct,
                          "predict": [0 if c else -1 for c in correct],
                          "label": label if label is not None else [0] * len(radius)})
    if sigma is not None:
        frame = frame.assign(sigma=sigma, r_sigma=np.array(radius) + 0.1, r_c=radius)
    return frame


def test_certified_accuracy_counts_correct_certificates_at_least_r():
    frame = _frame([0.0, 0.3, 0.6, 0.9, 0.4], [1, 1, 1, 0, 0])
    np.testing.assert_allclose(certified_accuracy(frame, [0.0, 0.3, 0.5, 1.0]), [0.6, 0.4, 0.2, 0.0])
    assert average_certified_radius(frame) == pytest.approx((0.0 + 0.3 + 0.6) / 5)


def test_summary_table_files_and_figures(tmp_path):
    methods = {"global σ=0.5": _frame([0.2, 0.8], [1, 1]), "global σ=1": _frame([0.1, 1.2], [1, 0]),
               "dual": _frame([0.5, 0.0], [1, 0], sigma=[0.5, np.nan], label=[3, 4])}
    table = summary_table(methods, [0.0, 0.5])
    assert table.loc["global σ=0.5", "r=0.5"] == 50.0 and table.loc["dual", "r=0"] == 50.0
    paths = write_tables(table, tmp_path / "t.csv")
    assert [p.suffix for p in paths] == [".csv", ".md", ".tex", ".json"]
    assert "\\toprule" in paths[2].read_text() and "\\bottomrule" in paths[2].read_text()
    assert json.loads(paths[3].read_text())["global σ=0.5"]["r=0.5"] == 50.0
    by_sigma = {0.5: methods["global σ=0.5"], 1.0: methods["global σ=1"]}
    figures = plot_figures(methods, ["dual"], by_sigma, tmp_path / "fig", "t")
    assert {p.stem for p in figures} == {"certified_accuracy", "delta_rc_ecdf", "dual_choices"}
    assert {p.suffix for p in figures} == {".png", ".pdf"} and all(p.stat().st_size > 0 for p in figures)
    with pytest.raises(ValueError, match="other test samples"):
        summary_table({"a": _frame([0.1], [1]), "b": _frame([0.1, 0.2], [1, 1])}, [0.0])


def test_delta_rc_compares_with_the_best_correct_global_radius_per_input():
    dual = _frame([0.5, 0.3, 0.2], [1, 1, 0], sigma=[0.5, 1.0, 0.5])
    globals_ = {0.5: _frame([0.4, 0.1, 0.9], [1, 1, 1]), 1.0: _frame([0.7, 0.6, 0.3], [0, 1, 1])}
    np.testing.assert_allclose(delta_classifier_radius(dual, globals_), [0.5 - 0.4, 0.3 - 0.6, 0.0 - 0.9])


def test_accuracy_curves_long_format_and_slug():
    curves = accuracy_curves({"a": _frame([0.2, 0.8], [1, 1])}, [0.0, 0.5, 1.0])
    assert list(curves.columns) == ["method", "radius", "certified_accuracy"]
    np.testing.assert_allclose(curves["certified_accuracy"], [100, 50, 0])
    assert slug("dual (finetuned, round 1)") == "dual_finetuned_round_1"
