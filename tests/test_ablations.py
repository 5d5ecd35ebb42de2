"""Ablations of round-0 dual RS: hard labels, seeded training subsets, where the class-balance weight applies,
the ablation DAG, two ablations end to end."""
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from scipy import stats

from dualrs import tasks
from dualrs.cli import main
from dualrs.data import load_split, prepare_dataset
from dualrs.labels import hard_labels, soft_labels, training_subset
from dualrs.report import certified_accuracy
from dualrs.tables import read_table, write_table
from dualrs.train import estimator_loss
from pipeline import REPO, fake_paper_weights, snakemake

TINY = REPO / "tests" / "configs" / "tiny_ablation.yaml"
ABLATIONS = ("lam", "labels", "n_label", "label_precision", "train_fraction", "alpha_beta", "temperature",
             "radius_weight", "class_weight", "estimator_arch", "estimator_seed", "sigmas", "sigma_e")
TABLES = [f"results/tables/ablations/tiny_{name}.csv" for name in ABLATIONS]
# the experiment's own setting of each ablation of the tiny config (reused) and its other value (built)
OWN = {"lam": "40", "labels": "soft", "n_label": "16", "label_precision": "fixed", "train_fraction": "1", "temperature": "plain",
       "radius_weight": "strong", "class_weight": "both", "estimator_arch": "digits_cnn", "estimator_seed": "0",
       "sigmas": "0.25_0.5_1", "sigma_e": "1"}
OTHER = {"lam": "0", "labels": "hard", "n_label": "8", "label_precision": "0.5", "train_fraction": "0.5", "temperature": "0.5",
         "radius_weight": "none", "class_weight": "none", "estimator_arch": "digits_mlp", "estimator_seed": "7",
         "sigmas": "0.25_0.5", "sigma_e": "0.5"}


def job_counts(dry_run_output: str) -> dict[str, int]:
    return {line.split()[0]: int(line.split()[1]) for line in dry_run_output.splitlines()
            if len(line.split()) == 2 and line.split()[1].isdigit()}


@pytest.fixture
def workdir(tmp_path):
    shutil.copytree(REPO / "config", tmp_path / "config")
    return tmp_path


def test_hard_labels_are_the_one_hot_argmax_of_the_radii():
    rng = np.random.default_rng(0)
    radii = rng.uniform(0, 2, size=(300, 4)) * (rng.uniform(size=(300, 4)) < 0.7)
    radii[:10] = 0.0  # certified under no sigma
    radii[10:20, 1] = radii[10:20, 3] = 5.0  # ties between sigma 1 and 3
    q = hard_labels(radii)
    assert q.shape == radii.shape and set(np.unique(q)) == {0.0, 1.0}
    np.testing.assert_array_equal(q.sum(axis=1), 1.0)
    np.testing.assert_array_equal(q.argmax(axis=1), radii.argmax(axis=1))
    assert (q[10:20, 1] == 1).all() and (q[:10, 0] == 1).all()  # ties: the smallest sigma
    unique = (np.sort(radii, axis=1)[:, -1] - np.sort(radii, axis=1)[:, -2]) > 1e-3
    np.testing.assert_allclose(soft_labels(radii, 1e-5)[unique], q[unique], atol=1e-9)


@pytest.mark.parametrize("num,fraction,size", [(1257, 0.2, 251), (63, 0.5, 32), (40, 1.0, 40), (3, 0.01, 1)])
def test_training_subset_has_the_right_size_and_is_seeded(num, fraction, size):
    subset = training_subset(num, fraction, seed=7)
    assert len(subset) == size and len(np.unique(subset)) == size
    assert (np.diff(subset) > 0).all() and subset.min() >= 0 and subset.max() < num
    np.testing.assert_array_equal(subset, training_subset(num, fraction, seed=7))
    if size not in (1, num):
        assert not np.array_equal(subset, training_subset(num, fraction, seed=8))
    if fraction == 1.0:
        np.testing.assert_array_equal(subset, np.arange(num))


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5, float("nan")])
def test_training_subset_rejects_fractions_outside_0_1(fraction):
    with pytest.raises(ValueError, match="train fraction"):
        training_subset(10, fraction, seed=0)


def test_training_subset_includes_every_input_equally_often_over_seeds():
    num, fraction, trials = 20, 0.25, 4000
    counts = np.zeros(num)
    for seed in range(trials):
        counts[training_subset(num, fraction, seed)] += 1
    # each count is Binomial(trials, 1/4); the chi-square statistic over-states their variance, so p is conservative
    assert stats.chisquare(counts).pvalue > 1e-3
    assert counts.min() > 0.8 * trials * fraction


def test_class_weight_applies_w_e_to_the_named_terms():
    # copy 1: p = (1/2, 1/2), copy 2: p = (3/4, 1/4) for sample 0; sample 1 sees (1/2, 1/2) twice
    logits = torch.tensor([[[0.0, 0.0], [0.0, 0.0]], [[math.log(3), 0.0], [0.0, 0.0]]])
    target = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    w_e, w_r, lam, eta = torch.tensor([2.0, 0.5]), torch.tensor([3.0, 1.0]), 1.0, 0.5
    ce = [math.log(8 / 3) / 2, math.log(2)]
    p_bar = (5 / 8, 3 / 8)
    kl = (p_bar[0] * math.log(5 / 4) + p_bar[1] * math.log(3 / 4)
          + p_bar[0] * math.log(5 / 6) + p_bar[1] * math.log(3 / 2)) / 2
    con = [lam * kl - eta * sum(p * math.log(p) for p in p_bar), eta * math.log(2)]
    expected = {
        "both": (2.0 * (ce[0] + 3.0 * con[0]) + 0.5 * (ce[1] + con[1])) / 2,  # the paper's loss (Sec. 5.1)
        "ce": (2.0 * ce[0] + 3.0 * con[0] + 0.5 * ce[1] + con[1]) / 2,
        "none": (ce[0] + 3.0 * con[0] + ce[1] + con[1]) / 2,
    }
    for mode, value in expected.items():
        assert estimator_loss(logits, target, w_e, w_r, lam, eta, mode).item() == pytest.approx(value, rel=1e-6)
    assert len({round(v, 6) for v in expected.values()}) == 3
    with pytest.raises(ValueError, match="class weight"):
        estimator_loss(logits, target, w_e, w_r, lam, eta, "consistency")


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """Prepared digits and label tables of two sigmas over every 5th training input."""
    root = tmp_path_factory.mktemp("ablations")
    prepare_dataset("digits", root / "data", seed=0)
    rng = np.random.default_rng(3)
    idx = np.arange(0, 400, 5)
    paths = {}
    for sigma in (0.25, 0.5):
        radius = rng.uniform(0, sigma * 2, size=len(idx))
        frame = pd.DataFrame({"idx": idx, "label": 0, "predict": 0, "count": 10, "pA_lower": 0.9, "radius": radius,
                              "correct": (rng.uniform(size=len(idx)) < 0.8).astype(int)})
        paths[sigma] = root / f"sigma{sigma}.tsv"
        write_table(paths[sigma], frame)
    return root, paths


def _train_estimator_args(root, paths, out, *extra):
    labels = [arg for sigma, path in paths.items() for arg in ("--labels", f"{sigma}={path}")]
    return ["train-estimator", "--dataset", "digits", "--root", str(root / "data"), "--device", "cpu", *labels,
            "--arch", "digits_cnn", "--sigma-e", "0.5", "--temperature", "0.25", "--epochs", "1", "--batch-size",
            "32", "--lr", "0.001", "--seed", "5", "--threads", "1", "--out", str(out), *extra]


@pytest.mark.parametrize("extra,hard,fraction", [((), False, 1.0), (("--hard-labels", "--train-fraction", "0.3"),
                                                                       True, 0.3)])
def test_train_estimator_sees_the_seeded_subset_with_the_chosen_labels(labelled, tmp_path, monkeypatch, extra, hard,
                                                                       fraction):
    root, paths = labelled
    seen = {}

    def record(model, x, targets, weights, *args, **kwargs):
        seen.update(x=x, targets=targets, weights=weights)
        return []

    monkeypatch.setattr(tasks, "train_estimator", record)
    out = tmp_path / "estimator.safetensors"
    main(_train_estimator_args(root, paths, out, *extra))

    frames = [read_table(paths[s]) for s in (0.25, 0.5)]
    radii = np.stack([np.where(f["correct"] == 1, f["radius"], 0.0) for f in frames], axis=1)
    subset = training_subset(len(radii), fraction, seed=5)
    keep = subset[radii[subset].max(axis=1) > 0]  # inputs certified under no sigma are dropped (Sec. 5.1)
    assert len(keep) < len(subset) or fraction < 1
    expected = hard_labels(radii[keep]) if hard else soft_labels(radii[keep], 0.25)
    np.testing.assert_allclose(seen["targets"].numpy(), expected, rtol=1e-6)
    train = load_split("digits", root / "data", "train")
    images = torch.stack([train[int(i)][0] for i in frames[0]["idx"].to_numpy()[keep]])
    torch.testing.assert_close(seen["x"], images)
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["labels"] == ("hard" if hard else "soft") and meta["train_fraction"] == fraction
    assert meta["train_samples"] == len(keep)


@pytest.mark.parametrize("extra,mode", [((), "both"), (("--class-weight", "ce"), "ce"),
                                        (("--class-weight", "none"), "none")])
def test_train_estimator_threads_the_class_weight_to_the_loss(labelled, tmp_path, monkeypatch, extra, mode):
    root, paths = labelled
    seen = {}
    monkeypatch.setattr(tasks, "train_estimator", lambda *args, **kwargs: seen.update(kwargs) or [])
    out = tmp_path / "estimator.safetensors"
    main(_train_estimator_args(root, paths, out, *extra))
    assert seen["class_weight"] == mode
    assert json.loads(out.with_suffix(".json").read_text())["class_weight"] == mode


def test_unknown_class_weight_is_refused(labelled, tmp_path, capsys):
    root, paths = labelled
    with pytest.raises(SystemExit):
        main(_train_estimator_args(root, paths, tmp_path / "e.safetensors", "--class-weight", "con"))
    assert "--class-weight: invalid choice: 'con'" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "1.5", "nan"])
def test_train_fraction_outside_0_1_is_one_error_before_work(labelled, tmp_path, capsys, value):
    root, paths = labelled
    with pytest.raises(SystemExit):
        main(_train_estimator_args(root, paths, tmp_path / "e.safetensors", "--train-fraction", value))
    assert "--train-fraction: must lie in (0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "e.safetensors").exists()


def test_the_tiny_config_and_this_file_cover_every_ablation_of_the_plan():
    """docs/architecture.md, "Add an ablation": a new ablation is added here and to tiny_ablation.yaml too."""
    from dualrs import plan

    assert ABLATIONS == plan.ABLATIONS and set(OWN) == set(OTHER) == set(plan.ESTIMATOR_ABLATIONS)
    config = yaml.safe_load(TINY.read_text())
    assert tuple(config["experiments"]["tiny"]["ablations"]) == plan.ABLATIONS


def test_every_ablation_resolves_and_reuses_the_experiments_own_runs(workdir):
    out = snakemake(workdir, "ablations", "-n", "-p", "--cores", "2", "--configfile", str(TINY)).stdout
    counts = job_counts(out)
    # one value per ablation differs from the experiment's setting; the others reuse its round-0 runs
    assert counts["ablation_report"] == 13 and counts["ablation_certify"] == 13
    assert counts["ablation_estimator"] == 12 and counts["train_estimator"] == 1 and counts["certify_dual"] == 1
    # n_label=8 and label_precision=0.5: three sigmas, two label shards each
    assert counts["ablation_certify_training_set"] == 2 * 3 * 2
    assert counts["merge_ablation_certificates"] == 13 and counts["merge_ablation_training_set_certificates"] == 6
    labelling = [line for line in out.splitlines() if "dualrs label " in line]
    assert sum("--radius-precision 0.5" in line for line in labelling) == 3 * 2
    assert all("label_precision/0.5/labels/" in line for line in labelling if "--radius-precision" in line)
    for flag in ("--lam 0 ", "--hard-labels", "--train-fraction 0.5", "--alpha 0.005 --beta 0.015", "--n 8 ",
                 "--temperature 0.5 ", "--radius-weight none ", "--class-weight none ", "--arch digits_mlp "):
        assert flag in out
    for table in TABLES:
        assert table in out
    for ablation, value in OWN.items():
        assert f"results/tiny/ablations/{ablation}/{value}/" not in out
        assert f"results/tiny/ablations/{ablation}/{OTHER[ablation]}/certify.tsv" in out
    baseline = "=results/tiny/certify/dual/it0.tsv"
    for row in ("temperature=plain", "radius_weight=strong", "class_weight=both", "estimator_arch=digits_cnn",
                "estimator_seed=0", "sigma_e=1"):
        assert f"--dual={row}{baseline}" in out
    seeds = [line for line in out.splitlines() if "dualrs train-estimator" in line]
    assert sum("--seed 7 " in line for line in seeds) == 1  # only estimator_seed=7 trains under another seed
    assert all("--seed 0 " in line for line in seeds if "estimator_seed/7/" not in line)
    assert f"'--dual=sigmas={{0.25, 0.5, 1}}{baseline}'" in out
    # sigma_e = 0.5 (the tiny experiment's is max Sigma = 1): trained and smoothed at 0.5, on every sigma
    ablated = [line for line in out.splitlines() if "results/tiny/ablations/sigma_e/0.5/" in line]
    for command in ("dualrs train-estimator", "dualrs certify-dual"):
        line = next(line for line in ablated if command in line)
        assert "--sigma-e 0.5 " in line and "1=results/tiny/" in line


def test_sigma_set_trains_and_certifies_with_its_own_sigmas(workdir):
    out = snakemake(workdir, "results/tables/ablations/tiny_sigmas.csv", "-n", "-p", "--cores", "2",
                    "--configfile", str(TINY)).stdout
    ablated = [line for line in out.splitlines() if "results/tiny/ablations/sigmas/0.25_0.5/" in line]
    train = next(line for line in ablated if "dualrs train-estimator" in line)
    certify = next(line for line in ablated if "dualrs certify-dual" in line)
    for line in (train, certify):  # sigma_e is max of the set: the tiny experiment has none of its own
        assert "--sigma-e 0.5 " in line and "1=results" not in line and "sigma1." not in line
    assert ("--labels 0.25=results/tiny/labels/it0/sigma0.25.tsv "
            "--labels 0.5=results/tiny/labels/it0/sigma0.5.tsv --arch") in train
    assert ("--classifier 0.25=results/tiny/models/classifier_sigma0.25.safetensors "
            "--classifier 0.5=results/tiny/models/classifier_sigma0.5.safetensors --sigma-e") in certify


@pytest.mark.parametrize("estimator,ablation,reused,built", [
    ("temperature: 0.5", "temperature", "0.5", "plain"),
    ("radius_weight: none", "radius_weight", "none", "strong"),
])
def test_an_estimators_own_target_setting_is_reused(workdir, estimator, ablation, reused, built):
    config = workdir / "own.yaml"
    text = TINY.read_text()
    block = "    estimator:\n      arch: digits_cnn\n"
    assert text.count(block) == 1
    config.write_text(text.replace(block, f"{block}      {estimator}\n"))
    out = snakemake(workdir, f"results/tables/ablations/tiny_{ablation}.csv", "-n", "-p", "--cores", "2",
                    "--configfile", str(config)).stdout
    assert f"--dual={ablation}={reused}=results/tiny/certify/dual/it0.tsv" in out
    assert f"results/tiny/ablations/{ablation}/{reused}/" not in out
    assert f"--dual={ablation}={built}=results/tiny/ablations/{ablation}/{built}/certify.tsv" in out
    assert job_counts(out)["ablation_estimator"] == 1


@pytest.mark.slow
def test_paper_configs_list_every_ablation_job(workdir):
    counts = job_counts(snakemake(workdir, "ablations", "-n", "--cores", "2").stdout)
    # digits: lam 0, 40; hard; n=100 and radius precision 0.1 (each relabelled, 3 sigmas); fractions 0.2, 0.5;
    # two alpha/beta splits; temperatures 0.25, 0.1; radius weights weak, none; class weights ce, none;
    # digits_mlp; estimator seeds 1, 2; three sigma pairs; sigma_e 1
    assert counts["ablation_report"] == 13 and counts["ablation_certify"] == 9 + 13
    assert counts["ablation_estimator"] == 7 + 13 and counts["ablation_certify_training_set"] == 2 * 3
    fake_paper_weights(workdir)
    cifar10 = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["experiments"]["cifar10"]["ablations"]
    # sequential labels, the seed spread and sigma_e: digits ablations only
    assert set(cifar10) == set(ABLATIONS) - {"label_precision", "estimator_seed", "sigma_e"}
    tables = [f"results/tables/ablations/cifar10_{a}.csv" for a in cifar10]
    out = snakemake(workdir, *tables, "-n", "-p", "--cores", "8").stdout
    counts = job_counts(out)
    assert counts["ablation_certify"] == (8 + 10) * 8
    assert counts["ablation_certify_training_set"] == 3 * 8  # n=1000: 3 x 8 shards
    assert counts["ablation_report"] == 10 and counts["fetch_pretrained"] == 1
    assert "--arch cifar_resnet20 --model-options '{}'" in out
    train = next(line for line in out.splitlines()
                 if "dualrs train-estimator" in line and "ablations/sigmas/0.25_0.5/estimator" in line)
    assert "--sigma-e 0.5 " in train  # cifar10's sigma_e is max Sigma: here max {0.25, 0.5}


@pytest.mark.parametrize("ablations,target,message", [
    ("{lam: [0, 40]}", "results/tables/ablations/tiny_labels.csv", "experiments.tiny.ablations has no `labels`"),
    ("{train_fraction: [0.5, 1.5]}", "ablations", "ablations.train_fraction"),
    ("{alpha_beta: [[0.6, 0.01]]}", "ablations", "ablations.alpha_beta"),
    ("{lam: [0.1, 0.1000000001]}", "ablations", "coincide in paths"),
    ("{temperature: [plain, hot]}", "ablations", "ablations.temperature"),
    ("{label_precision: [fixed, 0]}", "ablations", "ablations.label_precision"),
    ("{class_weight: [both, con]}", "ablations", "ablations.class_weight"),
    ("{estimator_arch: [digits_cnn, ../cnn]}", "ablations", "ablations.estimator_arch"),
    ("{estimator_seed: [0, -1]}", "ablations", "ablations.estimator_seed"),
    ("{estimator_seed: [0, 0.5]}", "ablations", "ablations.estimator_seed"),
    ("{sigma_e: [0.5, 0]}", "ablations", "ablations.sigma_e"),
    ("{sigma_e: [1, 1.0]}", "ablations", "ablations.sigma_e"),
    ("{sigmas: [[0.25, 2.0]]}", "results/tables/ablations/tiny_lam.csv",
     "experiments.tiny.ablations.sigmas: [0.25, 2.0] is not a set of at least two distinct sigmas of "
     "experiments.tiny.sigmas"),
    ("{sigmas: [[0.5]]}", "ablations", "ablations.sigmas"),
    ("{sigmas: [[0.25, 0.5], [0.5, 0.25]]}", "ablations", "coincide in paths"),
])
def test_bad_ablation_configs_are_one_error_before_any_job(workdir, ablations, target, message):
    config = workdir / "bad.yaml"
    text = TINY.read_text()
    config.write_text(text[:text.index("    ablations:")] + f"    ablations: {ablations}\n")
    result = snakemake(workdir, target, "-n", "--cores", "1", "--configfile", str(config), check=False)
    assert result.returncode != 0 and message in result.stdout + result.stderr
    assert not (workdir / "results").exists()


@pytest.fixture(scope="module")
def ablation_run(tmp_path_factory) -> Path:
    """A work directory in which two ablation tables of the tiny config were built, in one run: N_label's and
    the Σ set's (the experiment's own runs, which both reuse, are made once)."""
    workdir = tmp_path_factory.mktemp("ablation_run")
    shutil.copytree(REPO / "config", workdir / "config")
    snakemake(workdir, "results/tables/ablations/tiny_n_label.csv", "results/tables/ablations/tiny_sigmas.csv",
              "--cores", "2", "--configfile", str(TINY))
    return workdir


@pytest.mark.slow
def test_one_ablation_runs_end_to_end(ablation_run):
    workdir = ablation_run
    table = pd.read_csv(workdir / "results/tables/ablations/tiny_n_label.csv", index_col="method")
    assert list(table.index) == ["n_label=8", "n_label=16"] and (table["n"] == 18).all()
    for ext in ("md", "tex", "json"):
        assert (workdir / f"results/tables/ablations/tiny_n_label.{ext}").stat().st_size > 0
    # n = 16 is the experiment's own labelling: its row is the experiment's round-0 dual RS
    baseline = read_table(workdir / "results/tiny/certify/dual/it0.tsv")
    radii = [0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0]
    np.testing.assert_allclose(table.loc["n_label=16", [f"r={r:g}" for r in radii]],
                               100 * certified_accuracy(baseline, radii), atol=0.05)
    relabelled = read_table(workdir / "results/tiny/ablations/n_label/8/labels/sigma0.5.tsv")
    original = read_table(workdir / "results/tiny/labels/it0/sigma0.5.tsv")
    assert list(relabelled["idx"]) == list(original["idx"]) == list(range(0, len(original) * 20, 20))
    assert relabelled["count"].max() <= 8 < original["count"].max()
    dual = read_table(workdir / "results/tiny/ablations/n_label/8/certify.tsv")
    assert list(dual["idx"]) == list(baseline["idx"])
    assert ((dual["radius"] <= dual[["r_sigma", "r_c"]].min(axis=1) + 1e-9) | (dual["predict"] == -1)).all()
    # each row against the experiment's own, input by input
    assert tuple(table.loc["n_label=16", ["same choice (%)", "mean abs ΔR"]]) == (100, 0)
    same = (dual["sigma"].fillna(0).to_numpy() == baseline["sigma"].fillna(0).to_numpy()).mean()
    assert table.loc["n_label=8", "same choice (%)"] == pytest.approx(100 * same, abs=0.05)
    # and the σ each row's estimator chose
    choices = pd.read_csv(workdir / "results/tables/ablations/tiny_n_label_choices.csv", index_col="method")
    chosen = dual["sigma"].map("σ={:g}".format, na_action="ignore").fillna("abstain")
    shares = 100 * chosen.value_counts(normalize=True)
    np.testing.assert_allclose(choices.loc["n_label=8", shares.index], shares, atol=0.05)
    np.testing.assert_allclose(choices.sum(axis=1), 100, atol=0.2)


@pytest.mark.slow
def test_a_sigma_set_ablation_runs_end_to_end(ablation_run):
    workdir = ablation_run
    table = pd.read_csv(workdir / "results/tables/ablations/tiny_sigmas.csv", index_col="method")
    assert list(table.index) == ["sigmas={0.25, 0.5}", "sigmas={0.25, 0.5, 1}"] and (table["n"] == 18).all()
    meta = json.loads((workdir / "results/tiny/ablations/sigmas/0.25_0.5/estimator.json").read_text())
    assert meta["sigmas"] == [0.25, 0.5] and meta["num_classes"] == 2 and meta["sigma_e"] == 0.5
    dual = read_table(workdir / "results/tiny/ablations/sigmas/0.25_0.5/certify.tsv")
    assert set(dual["sigma"].dropna()) <= {0.25, 0.5}
    # the whole set is the experiment's own: its row is the experiment's round-0 dual RS
    baseline = read_table(workdir / "results/tiny/certify/dual/it0.tsv")
    assert list(dual["idx"]) == list(baseline["idx"])
    radii = [0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0]
    np.testing.assert_allclose(table.loc["sigmas={0.25, 0.5, 1}", [f"r={r:g}" for r in radii]],
                               100 * certified_accuracy(baseline, radii), atol=0.05)
    np.testing.assert_allclose(table.loc["sigmas={0.25, 0.5}", [f"r={r:g}" for r in radii]],
                               100 * certified_accuracy(dual, radii), atol=0.05)


def test_labels_certified_under_no_sigma_are_one_error_before_training(tmp_path):
    """An all-zero radius table (e.g. label.n too small for alpha) leaves nothing to train on: one clear error."""
    prepare_dataset("digits", tmp_path / "data", seed=0)
    idx = np.arange(0, 50, 5)
    paths = {}
    for sigma in (0.25, 0.5):
        frame = pd.DataFrame({"idx": idx, "label": 0, "predict": -1, "count": 0, "pA_lower": 0.3, "radius": 0.0,
                              "correct": 0})
        paths[sigma] = tmp_path / f"sigma{sigma}.tsv"
        write_table(paths[sigma], frame)
    out = tmp_path / "estimator.safetensors"
    with pytest.raises(SystemExit, match="none of the 10 labelled training inputs is certified"):
        main(_train_estimator_args(tmp_path, paths, out))
    assert not out.exists()
