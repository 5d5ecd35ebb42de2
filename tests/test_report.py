import json
import subprocess

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex

from dualrs import report
from dualrs.cli import main
from dualrs.published import published_table
from dualrs.report import (ORACLE, accuracy_curves, average_certified_radius, certified_accuracy, curves_figure,
                           delta_classifier_radius, headroom_table, latex_table, markdown_table, method_colour,
                           oracle_certificates, plot_figures, slug, summary_table, vs_paper_figure, vs_paper_table,
                           write_tables)


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


def _global(radius, correct, predict=None, time=None):
    frame = pd.DataFrame({"idx": range(len(radius)), "label": [1] * len(radius),
                          "predict": predict if predict is not None else [1 if c else -1 for c in correct],
                          "radius": radius, "correct": correct})
    return frame if time is None else frame.assign(time=time)


def test_oracle_picks_the_largest_correct_radius_else_a_wrong_answer_else_abstains():
    # input 0: both σ correct, σ=1 larger; 1: only σ=1 correct; 2: σ=0.5 wrong, σ=1 abstains;
    # 3: both abstain; 4: σ=0.5 correct with a larger radius than σ=1
    by_sigma = {0.5: _global([0.3, 0.0, 0.2, 0.0, 0.6], [1, 0, 0, 0, 1], predict=[1, -1, 7, -1, 1],
                             time=[1.0] * 5),
                1.0: _global([0.8, 0.4, 0.0, 0.0, 0.5], [1, 1, 0, 0, 1], predict=[1, 1, -1, -1, 1],
                             time=[2.0] * 5)}
    oracle = oracle_certificates(by_sigma)
    assert list(oracle["idx"]) == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(oracle["radius"], [0.8, 0.4, 0.2, 0.0, 0.6])
    assert list(oracle["correct"]) == [1, 1, 0, 0, 1]
    assert list(oracle["predict"]) == [1, 1, 7, -1, 1]
    np.testing.assert_allclose(oracle["sigma"], [1.0, 1.0, 0.5, 0.5, 0.5])
    np.testing.assert_allclose(oracle["time"], [3.0] * 5)
    np.testing.assert_allclose(certified_accuracy(oracle, [0.0, 0.5, 0.7]), [0.6, 0.4, 0.2])
    with pytest.raises(ValueError, match="different test samples"):
        oracle_certificates({0.5: _global([0.1], [1]), 1.0: _global([0.1, 0.2], [1, 1])})


def test_headroom_share_against_the_best_global_row_per_radius():
    summary = pd.DataFrame({"r=0": [80.0, 60.0, 90.0, 85.0, 70.0], "r=1": [10.0, 30.0, 30.0, 40.0, 20.0],
                            "ACR": [0.3, 0.5, 0.7, 0.6, 0.4]},
                           index=["global σ=0.25", "global σ=1", ORACLE, "dual", "cascade"])
    shares = headroom_table(summary, ["global σ=0.25", "global σ=1"], ["dual", "cascade"])
    # r=0: best 80, oracle 90 → (85-80)/10, (70-80)/10; r=1: oracle = best = 30 → undefined; ACR: best .5, oracle .7
    np.testing.assert_allclose(shares.loc["dual"], [50.0, np.nan, 50.0])
    np.testing.assert_allclose(shares.loc["cascade"], [-100.0, np.nan, -50.0])
    np.testing.assert_allclose(shares.iloc[0], [10.0, 0.0, 0.2])  # the headroom itself comes first


def test_vs_paper_table_against_a_published_row_with_the_exact_binomial_interval(monkeypatch):
    published = pd.DataFrame({"paper": ["dual RS (finetuned)"] * 2, "method": ["dual"] * 2, "radius": [0.0, 0.5],
                              "certified_accuracy": [70.0, 45.0], "version": ["v3"] * 2, "source": ["url"] * 2,
                              "test_set": ["all"] * 2})
    claims = pd.DataFrame({"key": ["inference_overhead"], "paper": ["dual RS"], "method": ["dual"],
                           "radius": [np.nan], "value": [60.0], "unit": ["%"], "wording": ["w"],
                           "version": ["v3"], "source": ["url"]})
    monkeypatch.setattr(report, "published_table", lambda name: published if name == "paper" else None)
    monkeypatch.setattr(report, "published_claims", lambda name: claims if name == "paper" else None)
    # 8 of 10 correct at r=0, 3 of them with radius ≥ 0.5
    dual = _global([0.9, 0.6, 0.5, 0.2, 0.1, 0.1, 0.3, 0.2, 0.0, 0.0], [1] * 8 + [0, 0], time=[3.0] * 10)
    methods = {"global σ=0.5": _global([0.1] * 10, [1] * 10, time=[1.0] * 10),
               "global σ=1": _global([0.1] * 10, [1] * 10, time=[3.0] * 10), "dual": dual}
    table = vs_paper_table(methods, "paper", ["global σ=0.5", "global σ=1"])
    accuracy = table[table["metric"] == "certified accuracy (%)"].set_index("radius")
    np.testing.assert_allclose(accuracy["reproduced"], [80.0, 30.0])
    np.testing.assert_allclose(accuracy["difference"], [10.0, -15.0])
    # Clopper–Pearson 95% for 8/10 and 3/10 (beta quantiles, e.g. Agresti & Coull 1998)
    np.testing.assert_allclose(accuracy["ci_low"], [44.39, 6.67], atol=0.01)
    np.testing.assert_allclose(accuracy["ci_high"], [97.48, 65.25], atol=0.01)
    assert list(accuracy["n"]) == [10, 10]
    overhead = table[table["metric"] == "inference overhead (%)"].iloc[0]
    assert overhead["reproduced"] == pytest.approx(50.0) and overhead["difference"] == pytest.approx(-10.0)
    assert vs_paper_table(methods, "unpublished", ["global σ=0.5"]).empty


@pytest.mark.parametrize("experiment", ["cifar10", "imagenet"])
def test_published_numbers_carry_source_and_version(experiment):
    table = published_table(experiment)
    assert table is not None and {"version", "source"} <= set(table.columns)
    assert table["source"].str.len().gt(0).all() and table["version"].str.fullmatch(r"v\d").all()
    assert ((table["certified_accuracy"] >= 0) & (table["certified_accuracy"] <= 100)).all()
    for _, row in table.groupby("paper"):  # certified accuracy cannot grow with the radius
        assert row.sort_values("radius")["certified_accuracy"].is_monotonic_decreasing
    assert published_table("digits") is None


def test_the_cifar10_row_rounds_to_the_v3_headline():
    row = published_table("cifar10").set_index("radius")["certified_accuracy"]
    headline = {0.0: 70.5, 0.25: 57.5, 0.5: 45.3, 0.75: 34.2, 1.0: 24.7}  # v3, as quoted alongside the paper
    assert {radius: round(row[radius], 1) for radius in headline} == headline


def test_latex_table_formats_columns_drops_all_zero_ones_and_compiles(tmp_path):
    table = pd.DataFrame({"r=0": [71.25, 80.0], "r=2": [0.0, 0.0], "ACR": [0.51234, 0.6], "n": [500, 500],
                          "s/input": [12.3456, 0.0012345]},
                         index=pd.Index(["global σ=0.25", "dual (finetuned, round 1) & 50%_x"], name="method"))
    latex = latex_table(table)
    assert latex.isascii() and r"global $\sigma$=0.25" in latex and r"\& 50\%\_x" in latex
    assert "71.2 & 0.512 & 500 & 12.3" in latex and "0.00123" in latex and "r=2" not in latex
    assert latex.count(r"\toprule") == 1 and latex.count(r"\midrule") == 1 and latex.count(r"\\") == 3
    markdown = markdown_table(table)
    assert "r=2" not in markdown and "0.512" in markdown and "500.0" not in markdown
    paths = write_tables(table, tmp_path / "t.csv")
    assert "r=2" in paths[0].read_text() and "r=2" not in paths[2].read_text()
    document = tmp_path / "doc.tex"
    document.write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
                        f"\\input{{{paths[2].name}}}\n\\end{{document}}\n")
    result = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", document.name],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 0


def _line_colours(figure):
    return {line.get_label(): to_hex(line.get_color()) for ax in figure.axes for line in ax.get_lines()}


def test_a_method_has_one_colour_in_every_figure():
    dual, cascade = _frame([0.5, 0.2], [1, 1], sigma=[0.5, 1.0]), _frame([0.3, 0.1], [1, 0])
    first = curves_figure({"cascade": cascade, "global σ=1": _frame([0.4, 0.9], [1, 1]),
                           "dual (finetuned, round 1)": dual}, "a")
    second = curves_figure({"dual (finetuned, round 1)": dual, "global σ=0.5": _frame([0.2, 0.3], [1, 1])}, "b")
    comparison = pd.DataFrame({"method": ["dual (finetuned, round 1)"], "paper_method": ["dual RS"], "version": ["v3"],
                               "metric": ["certified accuracy (%)"], "radius": [0.25], "published": [60.0]})
    third = vs_paper_figure({"dual (finetuned, round 1)": dual}, comparison, "c")
    colours = [_line_colours(f) for f in (first, second)]
    dual_colour = method_colour("dual (finetuned, round 1)")
    assert colours[0]["dual (finetuned, round 1)"] == colours[1]["dual (finetuned, round 1)"] == dual_colour
    assert _line_colours(third)["dual (finetuned, round 1) (reproduced)"] == dual_colour
    names = ("global σ=0.25", "global σ=0.5", "global σ=1", ORACLE, "cascade", "dual (off-the-shelf)",
             "dual (finetuned)", "dual (finetuned, round 2)", "dual (finetuned, estimator retrained, round 2)", "router")
    assert len({method_colour(n) for n in names}) == len(names)


def test_choice_agreement_counts_same_choices_and_radius_changes_input_by_input():
    reference = pd.DataFrame({"idx": [0, 1, 2, 3], "sigma": [0.25, 0.5, np.nan, 1.0],
                              "radius": [0.3, 0.6, 0.0, 1.2], "correct": [1, 1, 0, 0]})
    # in another order; input 2: both selectors abstain (the same non-choice); input 3 now certified
    row = pd.DataFrame({"idx": [3, 2, 1, 0], "sigma": [1.0, np.nan, 0.25, 0.25],
                        "radius": [0.5, 0.0, 0.2, 0.3], "correct": [1, 0, 1, 1]})
    table = report.choice_agreement({"row": row, "itself": reference}, reference)
    assert table.loc["row", report.SAME_CHOICE] == 75.0  # inputs 0, 2, 3
    assert table.loc["row", report.RADIUS_CHANGE] == pytest.approx((0.5 + 0 + 0.4 + 0) / 4)
    assert tuple(table.loc["itself"]) == (100.0, 0.0)
    router = pd.DataFrame({"idx": [0, 1], "expert": ["dds", "noise"], "sigma": [0.5, 0.5], "radius": [0.1, 0.1],
                           "correct": [1, 1]})
    swapped = router.assign(expert=["noise", "noise"])  # same σ, another expert: a different choice
    assert report.choice_agreement({"swapped": swapped}, router).loc["swapped", report.SAME_CHOICE] == 50.0
    with pytest.raises(ValueError, match="other test samples than the reference"):
        report.choice_agreement({"row": row.iloc[:3]}, reference)


def test_choice_shares_count_each_rows_choices_per_test_input(tmp_path):
    methods = {
        "global σ=0.25": _frame([0.2, 0.8, 0.1, 0.0], [1, 1, 1, 0]),  # no choice: left out
        "dual": _frame([0.5, 0.0, 0.3, 0.2], [1, 0, 1, 1], sigma=[0.5, np.nan, 0.25, 0.5]),
        "constant": _frame([0.5, 0.1, 0.3, 0.2], [1, 1, 1, 1], sigma=[1.0] * 4),
        "router": pd.DataFrame({"idx": range(4), "expert": ["noise", "dds", "dds", None], "sigma": [0.5] * 4,
                                "radius": [0.1] * 4, "correct": [1] * 4}),
    }
    shares = report.choice_shares(methods, sigmas=[0.5, 2.0, 0.25])
    assert list(shares.index) == ["dual", "constant", "router"]
    # every σ of Σ (2: chosen by no row) and every σ chosen (1), in order; experts by name
    assert list(shares.columns) == ["σ=0.25", "σ=0.5", "σ=1", "σ=2", "dds", "noise", report.ABSTAIN]
    np.testing.assert_allclose(shares.loc["dual"], [25.0, 50.0, 0.0, 0.0, np.nan, np.nan, 25.0])
    np.testing.assert_allclose(shares.loc["constant"], [0.0, 0.0, 100.0, 0.0, np.nan, np.nan, 0.0])
    # a router chooses experts, whatever their σ
    np.testing.assert_allclose(shares.loc["router"], [np.nan, np.nan, np.nan, np.nan, 50.0, 25.0, 25.0])
    csv, markdown = report.write_choices(shares, tmp_path / "t_choices.csv")
    assert pd.read_csv(csv, index_col="method").loc["dual", "σ=0.5"] == 50.0
    # the markdown keeps the column no row chose: never chosen is a finding
    header = next(line for line in markdown.read_text().splitlines() if line.startswith("| method"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["method", *shares.columns]
    assert ORACLE in markdown.read_text()


def test_report_writes_the_choices_and_warns_of_a_selector_that_chooses_one_sigma_everywhere(tmp_path):
    paths = {}
    for name, frame in {"g0.25": _frame([0.2, 0.8, 0.1], [1, 1, 0]), "g1": _frame([0.5, 0.3, 0.9], [1, 0, 1]),
                        "varied": _frame([0.5, 0.0, 0.3], [1, 0, 1], sigma=[0.25, np.nan, 1.0]),
                        "constant": _frame([0.5, 0.1, 0.3], [1, 1, 0], sigma=[1.0, 1.0, 1.0])}.items():
        frame.to_csv(paths.setdefault(name, tmp_path / f"{name}.tsv"), sep="\t", index=False)
    table = tmp_path / "tables" / "e.csv"
    table.parent.mkdir()
    with pytest.warns(UserWarning, match=r"'constant' chose σ=1 for every test input") as caught:
        report.report_experiment({0.25: paths["g0.25"], 1.0: paths["g1"]}, {},
                                 {"varied": paths["varied"], "constant": paths["constant"]}, [0.0], table, None, "e")
    assert not any("'varied'" in str(w.message) for w in caught)
    choices = pd.read_csv(tmp_path / "tables" / "e_choices.csv", index_col="method")
    assert list(choices.index) == [ORACLE, "varied", "constant"]
    assert choices.loc["varied", "abstain"] == pytest.approx(100 / 3, abs=0.05)


CERTIFICATES = {"global": "idx\tlabel\tpredict\tradius\tcorrect\ttime\n0\t1\t1\t0.3\t1\t0.1\n1\t1\t-1\t0\t0\t0.1\n",
                "dual": "idx\tlabel\tpredict\tsigma\tradius\tr_sigma\tr_c\tcorrect\ttime\n"
                        "0\t1\t1\t0.5\t0.3\t0.4\t0.3\t1\t0.1\n1\t1\t-1\t\t0\t0\t0\t0\t0.1\n",
                "labels": "idx\tlabel\tpredict\tcount\tpA_lower\tradius\tcorrect\n0\t1\t1\t90\t0.8\t0.4\t1\n",
                "bare": "idx\tradius\tcorrect\n0\t0.3\t1\n1\t0\t0\n", "empty": "idx\tradius\tcorrect\n",
                "router": "idx\tlabel\tpredict\texpert\tsigma\tradius\tr_sigma\tr_c\tcorrect\ttime\n"
                          "0\t1\t1\tdds\t0.5\t0.3\t0.4\t0.3\t1\t0.1\n1\t1\t-1\t\t\t0\t0\t0\t0\t0.1\n"}


@pytest.mark.parametrize(("args", "message"), [
    ([], "nothing to report: give at least one --global SIGMA=TSV, --method NAME=TSV or --dual NAME=TSV"),
    (["--dual", "d={labels}"], "{labels} (the certificates of 'd') lacks the column sigma (its columns: idx, label, "
                               "predict, count, pA_lower, radius, correct)"),
    (["--dual", "d={bare}", "--figures", "{tmp}/figures"],
     "{bare} (the certificates of 'd') lacks the columns sigma, label, predict, r_sigma, r_c"),
    (["--global", "0.5={bare}"], "{bare} (the certificates of 'global σ=0.5') lacks the column predict"),
    (["--method", "m={empty}"], "{empty} (the certificates of 'm') holds no certificates"),
    (["--global", "0.5={global}", "--method", "global σ=0.5={bare}"],
     "row name 'global σ=0.5' given to more than one row (a --global row is named 'global σ=SIGMA', "
     f"{ORACLE!r} is the oracle's); name each row once"),
    (["--method", "d={bare}", "--dual", "d={dual}"], "row name 'd' given to more than one row"),
    (["--dual", "d={dual}", "--choices-reference", "{bare}"],
     "{bare} (the choices reference) lacks the column sigma"),
    (["--dual", "d={dual}", "--choices-reference", "{router}"],
     "method 'd' records no expert column, but the reference chose by expert"),
    (["--dual", "d={dual}", "--table", "{tmp}/out/t.txt"],
     "argument --table: {tmp}/out/t.txt does not end in .csv; name the CSV file to write"),
    (["--dual", "d={dual}", "--table", "{tmp}/dir.csv"], "argument --table: {tmp}/dir.csv is a directory"),
    (["--dual", "d={dual}", "--table", "{dual}/t.csv"],
     "argument --table: cannot write {dual}/t.csv: {dual} is a file, not a folder"),
    (["--dual", "d={dual}", "--figures", "{global}"], "argument --figures: {global} is a file; name the folder"),
    (["--dual", "d={dual}", "--figures", "{global}/figures"],
     "argument --figures: cannot write {global}/figures: {global} is a file, not a folder"),
])
def test_report_refuses_bad_input_in_one_line_before_writing_anything(tmp_path, args, message):
    tables = {name: tmp_path / f"{name}.tsv" for name in CERTIFICATES}
    for name, text in CERTIFICATES.items():
        tables[name].write_text(text)
    (tmp_path / "dir.csv").mkdir()
    before = sorted(tmp_path.rglob("*"))
    fill = {"tmp": tmp_path, **tables}
    args = [arg.format(**fill) for arg in args]
    table = [] if "--table" in args else ["--table", str(tmp_path / "out" / "t.csv")]
    with pytest.raises(SystemExit) as error:
        main(["report", *args, "--radii", "0", "0.25", *table, "--published", "cifar10"])
    assert str(error.value).startswith(f"dualrs report: error: {message.format(**fill)}")
    assert "\n" not in str(error.value)
    assert sorted(tmp_path.rglob("*")) == before


def test_report_notes_an_experiment_without_published_numbers(tmp_path):
    """The pipeline compares every experiment (digits has no published numbers): a note, not an error."""
    dual = tmp_path / "dual.tsv"
    dual.write_text(CERTIFICATES["dual"])
    table = tmp_path / "t.csv"
    report.report_experiment({}, {}, {"d": dual}, [0.0], table, None, "t", published="nosuchexp")
    assert "No published number of 'nosuchexp'" in (tmp_path / "t_vs_paper.md").read_text()
