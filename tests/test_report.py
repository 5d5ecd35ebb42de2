import numpy as np
import pandas as pd
import pytest

from dualrs.report import average_certified_radius, certified_accuracy, plot_figures, summary_table, write_tables


def _frame(radius, correct, sigma=None):
    frame = pd.DataFrame({"idx": range(len(radius)), "radius": radius, "correct": correct,
                          "predict": [0 if c else -1 for c in correct]})
    if sigma is not None:
        frame = frame.assign(sigma=sigma, r_sigma=np.array(radius) + 0.1, r_c=radius)
    return frame


def test_certified_accuracy_counts_correct_certificates_at_least_r():
    frame = _frame([0.0, 0.3, 0.6, 0.9, 0.4], [1, 1, 1, 0, 0])
    np.testing.assert_allclose(certified_accuracy(frame, [0.0, 0.3, 0.5, 1.0]), [0.6, 0.4, 0.2, 0.0])
    assert average_certified_radius(frame) == pytest.approx((0.0 + 0.3 + 0.6) / 5)


def test_summary_table_and_files(tmp_path):
    methods = {"global σ=0.5": _frame([0.2, 0.8], [1, 1]),
               "dual": _frame([0.5, 0.0], [1, 0], sigma=[0.5, np.nan])}
    table = summary_table(methods, [0.0, 0.5])
    assert table.loc["global σ=0.5", "r=0.5"] == 50.0 and table.loc["dual", "r=0"] == 50.0
    paths = write_tables(table, tmp_path / "t.csv")
    assert all(p.stat().st_size > 0 for p in paths)
    figures = plot_figures(methods, {"dual": methods["dual"]}, tmp_path / "fig", "t")
    assert {p.suffix for p in figures} == {".png", ".pdf"} and all(p.exists() for p in figures)
    with pytest.raises(ValueError, match="other test samples"):
        summary_table({"a": _frame([0.1], [1]), "b": _frame([0.1, 0.2], [1, 1])}, [0.0])
