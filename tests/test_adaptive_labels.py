"""The labelling step's radius-precision option (label.radius_precision, ``dualrs label --radius-precision``):
absent, labels are the paper's fixed-n CERTIFY (N_label draws, Sec. 5.1); set, each label comes from
:func:`dualrs.labels.adaptive_label`. Covers the config (reaches the label commands only, refused in
certify), the CLI, the resumable settings and, on a trained digits classifier, labels within the precision
of the fixed-n ones with fewer draws.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from dualrs.cli import main
from dualrs.data import prepare_dataset
from dualrs.smoothing import Smooth
from dualrs.settings import Sampling, SmoothedSettings
from dualrs.tables import LABEL_COLUMNS, read_table
from dualrs.tasks import DataRef, certify_smoothed, train_classifier_model
from dualrs.train import Optim
from pipeline import REPO, TINY, snakemake

SIGMA, PRECISION = 0.25, 0.1


# ------------------------------------------------------------------ workflow


def dry_run(workdir: Path, overlay: str, config: Path = TINY, *targets: str) -> tuple[int, str]:
    """``snakemake -n -p`` of ``config`` extended by ``overlay``: (exit status, output)."""
    shutil.copytree(REPO / "config", workdir / "config")
    (workdir / "overlay.yaml").write_text(overlay)
    result = snakemake(workdir, *targets, "-n", "-p", "--cores", "1", "--configfile", str(config),
                       str(workdir / "overlay.yaml"), check=False)
    return result.returncode, result.stdout + result.stderr


def commands(output: str, command: str, folder: str) -> list[str]:
    return [line for line in output.splitlines() if f"dualrs {command} " in line and folder in line]


@pytest.mark.parametrize("overlay,flagged", [("seed: 0\n", False),
                                             ("experiments: {tiny: {label: {radius_precision: 0.1}}}\n", True)])
def test_radius_precision_reaches_the_label_commands_only(tmp_path, overlay, flagged):
    status, output = dry_run(tmp_path, overlay)
    assert status == 0, output[-3000:]
    labels = commands(output, "label", "results/tiny/labels/")
    assert labels and all(("--radius-precision 0.1 " in line) == flagged for line in labels)
    others = [*commands(output, "label", "results/tiny/router/"), *commands(output, "label", "results/tiny_dds/"),
              *commands(output, "certify-global", "results/"), *commands(output, "certify-dual", "results/")]
    assert others and not any("--radius-precision" in line for line in others)


def test_the_n_label_ablation_labels_with_the_radius_precision(tmp_path):
    config = REPO / "tests" / "configs" / "tiny_ablation.yaml"
    status, output = dry_run(tmp_path, "experiments: {tiny: {label: {radius_precision: 0.1}}}\n", config,
                             "results/tables/ablations/tiny_n_label.csv")
    assert status == 0, output[-3000:]
    ablated = commands(output, "label", "results/tiny/ablations/n_label/8/")
    assert ablated and all("--n 8 " in line and "--radius-precision 0.1 " in line for line in ablated)


@pytest.mark.parametrize("overlay,message", [
    ("experiments: {tiny: {certify: {radius_precision: 0.1}}}\n",
     "config: experiments.tiny.certify.radius_precision applies to labels only: test samples are certified with "
     "the fixed n (sequential sampling of dual RS is certify.adaptive)"),
    ("experiments: {tiny: {label: {radius_precision: 0}}}\n", "radius_precision"),
])
def test_radius_precision_in_certify_or_not_positive_is_refused(tmp_path, overlay, message):
    status, output = dry_run(tmp_path, overlay)
    assert status != 0 and message in output
    assert not (tmp_path / "results").exists()


# ------------------------------------------------------------------ library and CLI


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[DataRef, Path]:
    """Digits and a digits CNN trained for two epochs under σ = SIGMA."""
    root = tmp_path_factory.mktemp("adaptive_labels")
    data = DataRef("digits", root / "digits")
    prepare_dataset("digits", data.root, seed=0)
    classifier = root / "classifier.safetensors"
    train_classifier_model(data, classifier, "digits_cnn", {}, SIGMA, Optim(epochs=2, batch_size=128, lr=0.003),
                           seed=0, device="cpu")
    return data, classifier


def label_args(trained: tuple[DataRef, Path], out: Path, *extra: str) -> list[str]:
    data, classifier = trained
    return ["label", "--dataset", "digits", "--root", str(data.root), "--classifier", str(classifier), "--sigma",
            str(SIGMA), "--n0", "32", "--n", "200", "--batch-size", "100", "--every", "60", "--alpha", "0.01",
            "--device", "cpu", "--threads", "1", "--out", str(out), *extra]


def test_labels_with_a_radius_precision_are_within_it_of_fixed_n_with_fewer_draws(trained, tmp_path, monkeypatch):
    data, classifier = trained
    drawn = []
    vote = Smooth.vote

    def counted(self, x, noise, num, batch_size):
        drawn[-1] += num
        return vote(self, x, noise, num, batch_size)

    monkeypatch.setattr(Smooth, "vote", counted)
    n0, n, sampling = 32, 1000, Sampling(n0=32, n=1000, alpha=0.01, batch_size=500, seed=3, every=12)
    tables = {}
    for name, precision in (("fixed", None), ("adaptive", PRECISION)):
        drawn.append(0)
        certify_smoothed(data, "train", classifier, None, tmp_path / f"{name}.tsv",
                         SmoothedSettings(SIGMA, sampling, precision), "cpu")
        tables[name] = read_table(tmp_path / f"{name}.tsv")
    fixed, adaptive = tables["fixed"], tables["adaptive"]
    assert list(adaptive.columns) == LABEL_COLUMNS and list(adaptive["idx"]) == list(fixed["idx"])
    rows = len(fixed)
    assert rows >= 40 and drawn[0] == rows * (n0 + n)
    assert fixed["radius"].nunique() > 3 and (fixed["radius"] > 0).mean() > 0.5  # a model worth labelling
    close = (adaptive["radius"] - fixed["radius"]).abs() <= PRECISION + 1e-12
    assert close.mean() >= 0.9, pd.concat([fixed["radius"], adaptive["radius"]], axis=1)[~close]
    assert drawn[1] < 0.9 * drawn[0]
    # count is the guess's votes among the draws of the look kept: at most n; the radius is Cohen's of pA_lower
    assert (adaptive["count"] <= n).all() and (adaptive["count"] < n).any()
    certified = adaptive["predict"] >= 0
    assert np.allclose(adaptive["radius"][certified], SIGMA * norm.ppf(adaptive["pA_lower"][certified]))
    assert (adaptive["radius"][~certified] == 0).all()
    with pytest.raises(ValueError, match="radius_precision applies to labels"):
        certify_smoothed(data, "test", classifier, None, tmp_path / "t.tsv",
                         SmoothedSettings(SIGMA, sampling, PRECISION), "cpu")


def test_the_cli_validates_the_radius_precision(trained, tmp_path, capsys):
    for bad in ("0", "-0.1", "nan"):
        with pytest.raises(SystemExit):
            main(label_args(trained, tmp_path / "x.tsv", "--radius-precision", bad))
        assert "argument --radius-precision: must be a positive number" in capsys.readouterr().err
    global_args = ["certify-global", *label_args(trained, tmp_path / "x.tsv", "--radius-precision", "0.1")[1:]]
    with pytest.raises(SystemExit):
        main(global_args)
    assert "unrecognized arguments: --radius-precision 0.1" in capsys.readouterr().err
    assert not (tmp_path / "x.tsv").exists()


def test_a_fixed_n_partial_is_started_over_with_a_radius_precision(trained, tmp_path, monkeypatch):
    import dualrs.tasks
    from dualrs.seeding import sample_generator

    out = tmp_path / "labels.tsv"
    calls = []

    def stop_after_two_rows(*generator_args):
        calls.append(generator_args)
        if len(calls) > 2:
            raise KeyboardInterrupt
        return sample_generator(*generator_args)

    monkeypatch.setattr(dualrs.tasks, "sample_generator", stop_after_two_rows)
    with pytest.raises(KeyboardInterrupt):
        main(label_args(trained, out))
    monkeypatch.undo()
    with pytest.warns(UserWarning, match=rf"{re.escape(out.name)}\.partial was written with other settings "
                                         r"\(radius_precision\): starting over"):
        main(label_args(trained, out, "--radius-precision", str(PRECISION)))
    main(label_args(trained, tmp_path / "fresh.tsv", "--radius-precision", str(PRECISION)))
    pd.testing.assert_frame_equal(read_table(out), read_table(tmp_path / "fresh.tsv"))
