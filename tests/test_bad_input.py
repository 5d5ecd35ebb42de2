"""Bad input gives one error naming the problem, before any work, and writes nothing.

Covers the configuration (through ``snakemake -n``), dataset paths, checkpoints of the wrong kind,
corrupt certificate files found on resume, inputs of the Python API, and pickled checkpoints.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from closed_form import ConstantClass
from dualrs.cli import main
from dualrs.data import prepare_dataset
from dualrs.dual import DualSmooth
from dualrs.io import save_checkpoint
from dualrs.models import create_model, read_state_dict
from dualrs.seeding import sample_generator
from dualrs.smoothing import Smooth
from pipeline import run_snakemake, tiny_experiment, venv_environment

REPO = Path(__file__).resolve().parents[1]

TINY = tiny_experiment("{n0: 8, n: 16, alpha: 0.01}", "{n0: 8, n: 64, alpha: 0.01, beta: 0.01}", 64)


def dry_run(tmp_path: Path, config: str, *args: str) -> subprocess.CompletedProcess:
    """``snakemake -n`` in a fresh working directory on the default config extended by ``config``."""
    tmp_path.mkdir(exist_ok=True)
    shutil.copytree(REPO / "config", tmp_path / "config")
    (tmp_path / "test.yaml").write_text(config)
    env = venv_environment()
    return run_snakemake(["--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
                          "results/tables/tiny.csv", "-n", "--cores", "1", "--configfile", str(tmp_path / "test.yaml"),
                          *args], cwd=Path.cwd(), env=env)


def assert_nothing_written(workdir: Path) -> None:
    assert not any((workdir / folder).exists() for folder in ("results", "data", "logs", "models"))


@pytest.mark.parametrize(("old", "new", "messages"), [
    ("    batch_size: 64", "    batch_size: 64\n    bogus: 1", ["config: experiments.tiny: unknown key(s) 'bogus'"]),
    ("experiments:", "verbose: true\nexperiments:", ["config: (top level): unknown key(s) 'verbose'"]),
    ("[0.25, 0.5]", "[0.25, 0]", ["config: experiments.tiny.sigmas[1]: 0 is less than or equal to the minimum of 0"]),
    ("[0.25, 0.5]", "[0.25, 0.5]\n    sigma_e: -1",
     ["config: experiments.tiny.sigma_e: -1 is less than or equal to the minimum of 0"]),
    ("[0.25, 0.5]", "[]", ["config: experiments.tiny.sigmas: [] is too short", "at least two"]),
    ("[0.25, 0.5]", "[0.5, 0.5]", ["config: experiments.tiny.sigmas: [0.5, 0.5] has non-unique elements"]),
    # sigmas that file names (sigma<spelling>, [0-9]+(.[0-9]+)?, 6 significant digits) cannot stand for
    ("[0.25, 0.5]", "[0.25, 0.1234567]",
     ["config: experiments.tiny.sigmas[1]: 0.1234567 has no exact file-name spelling ('0.123457' reads back as "
      "another number)"]),
    ("[0.25, 0.5]", "[0.25, 0.00001]", ["config: experiments.tiny.sigmas[1]: sigma 1e-05 has no file-name spelling: "
                                        "it would be '1e-05'", "use a sigma in [0.0001, 1e+06)"]),
    ("[0.25, 0.5]", "[0.25, 1.0e+6]", ["config: experiments.tiny.sigmas[1]: sigma 1000000.0 has no file-name"]),
    ("classifier:\n      arch: digits_cnn", "classifier:\n      noise: 0.00002\n      arch: digits_cnn",
     ["config: experiments.tiny.classifier.noise: sigma 2e-05 has no file-name spelling"]),
    ("[0.25, 0.5]", "[0.25, .inf]", ["config: experiments.tiny.sigmas[1] is inf: numbers must be finite"]),
    # counts: a whole-number float is the count; text that YAML 1.1 made of 1e4 gets the spelling to write
    ("n: 16", "n: 1e4", ["config: experiments.tiny.label.n: '1e4' is not of type 'integer' (YAML reads numbers like "
                         "1e4 as text: write 10000)"]),
    ("n: 16", "n: 1.5", ["config: experiments.tiny.label.n: 1.5 is not of type 'integer'"]),
    ("n: 16", "n: 1.0e+20", ["config: experiments.tiny.label.n: 100000000000000000000 is greater than the maximum"]),
    ("    batch_size: 64", "    batch_size: 64\n    radii: []", ["config: experiments.tiny.radii: [] should be non-empty"]),
    ("experiments:", "seed: -1\nexperiments:", ["config: seed: -1 is less than the minimum of 0"]),
    ("experiments:", "seed: true\nexperiments:", ["config: seed: True is not of type 'integer'"]),
    ("[0.25, 0.5]", "0.25", ["config: experiments.tiny.sigmas: 0.25 is not of type 'array'"]),
    # an overlay cannot delete a key; null in its place is one type error, not one per rule of the key
    ("experiments:", "experiments:\n  cifar10: {denoiser: null}",
     ["config: experiments.cifar10.denoiser: None is not of type 'object'"]),
    ("    batch_size: 64", "    batch_size: 64\n    ablations: {alpha_beta: [[0.3, 0.25]]}",
     ["config: experiments.tiny.ablations.alpha_beta[0]: alpha + beta = 0.55 must lie below 0.5"]),
    ("    batch_size: 64", "    batch_size: 64\n    router:\n      experts:\n"
     "        - {name: a, sigma: 0.25, classifier: results/tiny/models/classifier_sigma0.25.safetensors}\n"
     "        - {name: a, sigma: 0.5, classifier: results/tiny/models/classifier_sigma0.5.safetensors}",
     ["config: experiments.tiny.router.experts: name(s) 'a' given to more than one expert"]),
    ("    batch_size: 64", "    batch_size: 64\n    router:\n      experts:\n"
     "        - {name: a, sigma: 0.25, classifier: results/tiny/models/classifier_sigma0.25.safetensors}\n"
     "        - {name: b, sigma: 0.5, classifier: results/tiny2/models/classifier_sigma0.5.safetensors}",
     ["config: experiments.tiny.router.experts[1].classifier is results/tiny2/models/classifier_sigma0.5.safetensors, "
      "but no experiment 'tiny2' builds it"]),
    # every shard job gets an input: 540 of the 1797 digits are test inputs (test_fraction 0.3)
    ("beta: 0.01}", "beta: 0.01, every: 100, shards: 7}",
     ["config: experiments.tiny.certify.shards is 7, but every = 100 selects 6 test input(s) (data.digits.test_fraction "
      "keeps 540 of the 1797 digits for test)"]),
    ("experiments:\n  tiny:", "experiments:\n  tables:", ["config: experiments.tables: the name 'tables' is reserved"]),
    ("    batch_size: 64", "    batch_size: 64\n    batch_size: 32",
     ["test.yaml:15: key 'batch_size' is given twice (also on line 14); YAML would keep only the last value"]),
    ("experiments:", "seed: 010\nexperiments:", ["test.yaml:2: seed: 010 reads as 8 in YAML 1.1 (octal or base 60)"]),
    ("alpha: 0.01, beta", "alpha: 0.5, beta",
     ["config: experiments.tiny.certify.alpha: 0.5 is greater than or equal to the maximum of 0.5",
      "a bound that fails with probability 0.5 or more certifies nothing"]),
    ("alpha: 0.01, beta", "alpha: 0, beta",
     ["config: experiments.tiny.certify.alpha: 0 is less than or equal to the minimum of 0"]),
    ("beta: 0.01", "beta: 1.5", ["config: experiments.tiny.certify.beta: 1.5 is greater than or equal to the maximum"]),
    ("alpha: 0.01, beta: 0.01", "alpha: 0.3, beta: 0.25",
     ["config: experiments.tiny.certify: alpha + beta = 0.55 must lie below 0.5"]),
    ("label: {n0: 8, n: 16, alpha: 0.01}", "label: {n0: 8, n: 16, alpha: -0.1}",
     ["config: experiments.tiny.label.alpha: -0.1 is less than or equal to the minimum of 0"]),
    ("alpha: 0.01, beta", "alpha: .nan, beta", ["config: experiments.tiny.certify.alpha is nan: numbers must be finite"]),
    ("alpha: 0.01, beta", "alpha: 1e-3, beta",
     ["config: experiments.tiny.certify.alpha: '1e-3' is not of type 'number'", "write 1.0e-3 or 0.001"]),
    ("certify: {n0: 8", "certify: {n0: 0", ["config: experiments.tiny.certify.n0: 0 is less than the minimum of 1"]),
    ("n: 16", "n: 0", ["config: experiments.tiny.label.n: 0 is less than the minimum of 1"]),
    ("beta: 0.01}", "beta: 0.01, shards: 0}",
     ["config: experiments.tiny.certify.shards: 0 is less than the minimum of 1"]),
])
def test_config_errors_name_the_key_before_any_job(tmp_path, old, new, messages):
    assert TINY.count(old) == 1
    result = dry_run(tmp_path, TINY.replace(old, new))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    for message in messages:
        assert message in output
    problems = [line for line in output.splitlines()
                if line.strip().startswith("config: ") and "is below max(sigmas)" not in line]
    assert len(problems) == 1, problems  # one error, not a cascade
    assert_nothing_written(tmp_path)


@pytest.mark.slow
def test_cifar10_shards_without_a_test_image_are_refused(tmp_path):
    cifar = TINY.replace("data: digits", "data: cifar10").replace("beta: 0.01}", "beta: 0.01, shards: 8}")
    result = dry_run(tmp_path, "data: {cifar10: {test_every: 2000}}\n" + cifar)
    assert result.returncode != 0
    assert ("config: experiments.tiny.certify.shards is 8, but every = 1 selects 5 test input(s) (CIFAR-10 has 5 "
            "test images with data.cifar10.test_every = 2000)") in result.stdout + result.stderr
    assert_nothing_written(tmp_path)
    assert dry_run(tmp_path / "fits", "data: {cifar10: {test_every: 1250}}\n" + cifar).returncode == 0


def test_whole_number_float_counts_reach_the_commands_as_integers(tmp_path):
    """n: 1.0e+4 (how YAML 1.1 reads a float; 1e4 is text) is the count 10000 in every command line."""
    floats = TINY.replace("n: 64", "n: 1.0e+4").replace("batch_size: 64", "batch_size: 6.4e+1").replace(
        "beta: 0.01}", "beta: 0.01, every: 3.0e+1, shards: 2.0}")
    result = dry_run(tmp_path, floats, "-p")
    assert result.returncode == 0, result.stderr[-2000:]
    commands = [line for line in result.stdout.splitlines() if "dualrs certify-dual" in line]
    assert commands and all("--n 10000 --batch-size 64 --every 30 " in line for line in commands)


@pytest.mark.slow
def test_unknown_timm_model_is_refused_before_any_job(tmp_path):
    result = dry_run(tmp_path, TINY.replace("    estimator:\n      arch: digits_cnn",
                                            "    estimator:\n      arch: timm/resnet5O"))
    assert result.returncode != 0
    assert "config: experiments.tiny.estimator.arch: timm has no model 'resnet5O'" in result.stdout + result.stderr
    assert_nothing_written(tmp_path)


@pytest.mark.slow
def test_sigma_e_below_the_largest_sigma_is_legal_but_warns_of_the_cap(tmp_path):
    result = dry_run(tmp_path, TINY.replace("[0.25, 0.5]", "[0.25, 0.5]\n    sigma_e: 0.3"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert ("config: experiments.tiny.sigma_e = 0.3 is below max(sigmas) = 0.5: every dual radius is capped at "
            "R_sigma <= sigma_e * Phi^-1(beta^(1/n)) = 0.444") in result.stdout + result.stderr
    quiet = dry_run(tmp_path / "default", TINY)  # sigma_e = null means max(sigmas): no warning
    assert quiet.returncode == 0 and "experiments.tiny.sigma_e" not in quiet.stdout + quiet.stderr


# ------------------------------------------------------------------ dataset paths


def test_missing_imagenet_folder_names_path_and_key_and_writes_nothing(tmp_path):
    root, missing = tmp_path / "data" / "imagenet", tmp_path / "no" / "val"
    with pytest.raises(SystemExit) as error:
        main(["prepare-data", "--dataset", "imagenet", "--root", str(root),
              "--data-options", json.dumps({"source": str(missing)})])
    assert f"ImageNet folder {missing} does not exist (config key data.imagenet.source)" in str(error.value)
    assert not (tmp_path / "data").exists()


def test_missing_imagenet_train_folder_is_found_before_writing(tmp_path):
    (tmp_path / "val" / "n01").mkdir(parents=True)
    root = tmp_path / "data" / "imagenet"
    with pytest.raises(SystemExit, match="config key data.imagenet.train_source"):
        main(["prepare-data", "--dataset", "imagenet", "--root", str(root), "--data-options",
              json.dumps({"source": str(tmp_path / "val"), "train_source": str(tmp_path / "none")})])
    assert not root.exists()


def test_corrupt_images_are_refused_by_prepare_data_naming_the_files(tmp_path):
    """A truncated JPEG passes a folder scan but stops certification when its shard reaches it."""
    from PIL import Image

    for wnid in ("n01", "n02"):
        for folder in ("val", "train"):
            (tmp_path / folder / wnid).mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (64, 48), (40 * i, 90, 200)).save(tmp_path / folder / wnid / f"{i}.JPEG", quality=95)
    truncated, garbage = tmp_path / "val" / "n02" / "2.JPEG", tmp_path / "train" / "n01" / "0.JPEG"
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    garbage.write_bytes(b"not an image at all")
    root = tmp_path / "data" / "imagenet"
    options = {"source": str(tmp_path / "val"), "every": 1, "num_classes": 2, "train_source": str(tmp_path / "train"),
               "train_every": 1}
    with pytest.raises(SystemExit) as error:
        main(["prepare-data", "--dataset", "imagenet", "--root", str(root), "--data-options", json.dumps(options)])
    message = str(error.value)
    assert (f"2 of the 16 images selected from {tmp_path / 'val'} (config key data.imagenet.source) and "
            f"{tmp_path / 'train'} (data.imagenet.train_source) do not decode; replace or remove them") in message
    assert f"\n  {truncated}: OSError: Truncated File Read" in message
    assert f"\n  {garbage}: UnidentifiedImageError: cannot identify image file" in message
    assert not any(root.glob("*"))  # no file list, no READY
    truncated.unlink()
    garbage.unlink()
    main(["prepare-data", "--dataset", "imagenet", "--root", str(root), "--data-options", json.dumps(options)])
    assert json.loads((root / "READY").read_text())["num_items"] == {"test": 7, "train": 7}


# ------------------------------------------------------------------ checkpoints of the wrong kind


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad") / "data"
    prepare_dataset("digits", root, seed=0)
    return root


def checkpoint(path: Path, num_classes: int = 10, in_chans: int = 1, **meta) -> Path:
    torch.manual_seed(0)
    save_checkpoint(path, create_model("digits_cnn", num_classes, in_chans),
                    {"arch": "digits_cnn", "num_classes": num_classes, "in_chans": in_chans, **meta})
    return path


def certify_global(digits: Path, classifier: Path, out: Path) -> list[str]:
    return ["certify-global", "--dataset", "digits", "--root", str(digits), "--classifier", str(classifier),
            "--sigma", "0.5", "--n0", "8", "--n", "32", "--batch-size", "32", "--every", "60", "--alpha", "0.01",
            "--device", "cpu", "--out", str(out)]


def certify_dual(digits: Path, estimator: Path, classifier: Path, out: Path) -> list[str]:
    return ["certify-dual", "--dataset", "digits", "--root", str(digits), "--estimator", str(estimator),
            "--classifier", f"0.25={classifier}", "--classifier", f"0.5={classifier}", "--sigma-e", "0.5",
            "--n0", "8", "--n", "32", "--batch-size", "32", "--every", "60", "--alpha", "0.01", "--beta", "0.01",
            "--device", "cpu", "--out", str(out)]


def assert_exits_naming(argv: list[str], *messages: str) -> None:
    out = Path(argv[argv.index("--out") + 1])
    with pytest.raises(SystemExit) as error:
        main(argv)
    for message in messages:
        assert message in str(error.value)
    assert not out.exists() and not out.with_name(out.name + ".partial").exists()


def test_an_output_that_is_a_directory_is_refused_before_training(capsys, digits, tmp_path):
    out = tmp_path / "classifier.safetensors"
    out.mkdir()
    with pytest.raises(SystemExit):
        main(["train-classifier", "--dataset", "digits", "--root", str(digits), "--arch", "digits_cnn", "--sigma",
              "0.5", "--epochs", "1", "--batch-size", "64", "--lr", "0.01", "--device", "cpu", "--out", str(out)])
    assert f"argument --out: {out} is a directory; name the file to write" in capsys.readouterr().err
    assert out.is_dir() and not any(out.iterdir()) and not out.with_suffix(".json").exists()


def test_classifier_for_another_class_count_is_refused(digits, tmp_path):
    path = checkpoint(tmp_path / "three.safetensors", num_classes=3)
    assert_exits_naming(certify_global(digits, path, tmp_path / "c.tsv"),
                        f"checkpoint {path} is for 3 classes from 1-channel inputs, but a classifier of dataset "
                        "'digits' needs 10 classes from 1-channel inputs")


def test_classifier_for_other_input_channels_is_refused(digits, tmp_path):
    path = checkpoint(tmp_path / "rgb.safetensors", in_chans=3)
    assert_exits_naming(certify_global(digits, path, tmp_path / "c.tsv"), "is for 10 classes from 3-channel inputs")


def test_a_checkpoint_made_for_another_input_size_is_refused_by_every_command_that_loads_it(capsys, digits, tmp_path):
    classifier = checkpoint(tmp_path / "clf8.safetensors", input_size=[8, 8])
    estimator = checkpoint(tmp_path / "est8.safetensors", num_classes=2, input_size=[8, 8], sigmas=[0.25, 0.5])
    routes = tmp_path / "routes.tsv"
    routes.write_text("idx\tsigma\n0\t0.5\n")
    sixteen = ["--data-options", '{"resolution": 16}']
    made = "was made for 8x8 inputs, but {} receives 16x16 inputs: give the data options it was made with"
    assert_exits_naming(certify_global(digits, classifier, tmp_path / "c.tsv") + sixteen,
                        f"checkpoint {classifier} " + made.format("a classifier of dataset 'digits'"))
    assert_exits_naming(certify_dual(digits, estimator, classifier, tmp_path / "d.tsv") + sixteen,
                        f"checkpoint {estimator} " + made.format("an estimator over sigmas [0.25, 0.5] on dataset 'digits'"))
    assert_exits_naming(finetune(digits, classifier, routes, tmp_path / "f.safetensors") + sixteen,
                        f"checkpoint {classifier} " + made.format("a classifier of dataset 'digits'"))
    assert_exits_naming(["route", "--dataset", "digits", "--root", str(digits), "--estimator", str(estimator),
                         "--sigma-e", "0.5", "--n", "4", "--batch-size", "8", "--device", "cpu",
                         "--out", str(tmp_path / "r.tsv"), *sixteen],
                        f"checkpoint {estimator} " + made.format("an estimator over sigmas [0.25, 0.5] on dataset 'digits'"))
    main(certify_global(digits, classifier, tmp_path / "c.tsv"))  # at its own size it certifies


def test_finetuning_a_checkpoint_for_other_classes_is_refused(digits, tmp_path):
    routes = tmp_path / "routes.tsv"
    routes.write_text("idx\tsigma\n0\t0.5\n")
    classifier = checkpoint(tmp_path / "three.safetensors", num_classes=3)
    assert_exits_naming(finetune(digits, classifier, routes, tmp_path / "f.safetensors"),
                        f"checkpoint {classifier} is for 3 classes from 1-channel inputs, but a classifier of dataset "
                        "'digits' needs 10 classes")


def test_weights_of_another_architecture_are_refused(digits, tmp_path):
    path = checkpoint(tmp_path / "narrow.safetensors")
    meta = json.loads(path.with_suffix(".json").read_text())
    path.with_suffix(".json").write_text(json.dumps({**meta, "model_kwargs": {"width": 8}}))
    assert_exits_naming(certify_global(digits, path, tmp_path / "c.tsv"), "does not match architecture 'digits_cnn'")
    path.with_suffix(".json").write_text(json.dumps({**meta, "arch": "resnet_of_my_own"}))
    assert_exits_naming(certify_global(digits, path, tmp_path / "c.tsv"), "unknown model architecture 'resnet_of_my_own'")
    path.with_suffix(".json").write_text(json.dumps({"arch": "digits_cnn"}))
    assert_exits_naming(certify_global(digits, path, tmp_path / "c.tsv"), "lacks ['in_chans', 'num_classes']")
    path.with_suffix(".json").write_text("{not json")
    assert_exits_naming(certify_global(digits, path, tmp_path / "c.tsv"), "is not valid JSON")


def assert_usage_error_naming(capsys: pytest.CaptureFixture, argv: list[str], message: str) -> None:
    """The command line is refused (exit status 2) before any work, with ``message`` on stderr."""
    out = Path(argv[argv.index("--out") + 1])
    with pytest.raises(SystemExit) as error:
        main(argv)
    assert error.value.code == 2 and message in capsys.readouterr().err
    assert not out.exists() and not out.with_name(out.name + ".partial").exists()


def test_estimator_with_the_wrong_number_of_sigmas_is_refused(capsys, digits, tmp_path):
    classifier = checkpoint(tmp_path / "clf.safetensors")
    estimator = checkpoint(tmp_path / "est.safetensors", num_classes=3, sigmas=[0.25, 0.5])
    assert_exits_naming(certify_dual(digits, estimator, classifier, tmp_path / "d.tsv"),
                        "is for 3 classes from 1-channel inputs, but an estimator over sigmas [0.25, 0.5]")
    assert_usage_error_naming(capsys, certify_dual(digits, classifier, classifier, tmp_path / "d.tsv"),
                              f"argument --estimator: {classifier} is not a checkpoint of a variance estimator")


def test_an_estimator_given_as_router_is_refused(capsys, digits, tmp_path):
    classifier = checkpoint(tmp_path / "clf.safetensors")
    estimator = checkpoint(tmp_path / "est.safetensors", num_classes=2, sigmas=[0.25, 0.5], role="estimator")
    expert = json.dumps({"name": "a", "sigma": 0.5, "classifier": str(classifier)})
    out = tmp_path / "r.tsv"
    argv = ["certify-router", "--dataset", "digits", "--root", str(digits), "--router", str(estimator), "--expert",
            expert, "--expert", expert.replace('"a"', '"b"'), "--sigma-e", "0.5", "--n0", "8", "--n", "32",
            "--batch-size", "32", "--every", "60", "--alpha", "0.01", "--beta", "0.01", "--device", "cpu",
            "--out", str(out)]
    assert_usage_error_naming(capsys, argv, f"argument --router: {estimator} is not a checkpoint of a router")


# ------------------------------------------------------------------ input tables: routes, labels, certificates

TRAINING_INPUTS = 1257  # digits' training split (test_fraction 0.3)

BAD_TABLES = [  # (TSV text, what the error says)
    ("", "is not a tab-separated table with a header line: No columns to parse from file"),
    ("idx\tsig\n0\t0.5\n", "lacks the column sigma (its columns: idx, sig)"),
    ("idx\tsigma\n0\t0.5\n1\tabc\n", "column 'sigma' holds noise levels (finite numbers > 0), but line 3 holds 'abc'"),
    ("idx\tsigma\n0\t0.5\n1\t-0.5\n", "but line 3 holds -0.5"),
    ("idx\tsigma\n0\t0.5\n1\tinf\n", "but line 3 holds inf"),
    ("idx\tsigma\n0\t0.5\n1\t\n", "but line 3 holds NaN or an empty field"),
    ("idx\tsigma\n0.5\t0.5\n", "column 'idx' holds input indices (integers >= 0, each once), but line 2 holds 0.5"),
    ("idx\tsigma\n-1\t0.5\n", "but line 2 holds -1"),
    ("idx\tsigma\n3\t0.5\n3\t0.25\n", "idx 3 appears more than once"),
    (f"idx\tsigma\n0\t0.5\n{TRAINING_INPUTS}\t0.5\n",
     f"idx {TRAINING_INPUTS} is past the {TRAINING_INPUTS} inputs of the training split (idx 0 to 1256)"),
]


def finetune(digits: Path, classifier: Path, routes: Path, out: Path) -> list[str]:
    return ["finetune", "--dataset", "digits", "--root", str(digits), "--classifier", str(classifier), "--sigma",
            "0.5", "--routes", str(routes), "--epochs", "1", "--batch-size", "16", "--lr", "0.001", "--device", "cpu",
            "--out", str(out)]


@pytest.mark.parametrize(("text", "message"), BAD_TABLES)
def test_a_bad_routes_table_is_refused_naming_file_column_and_line(digits, tmp_path, text, message):
    routes = tmp_path / "routes.tsv"
    routes.write_text(text)
    out = tmp_path / "finetuned.safetensors"
    named = f"{routes} (the routes table)" if text else f"{routes} is not"
    assert_exits_naming(finetune(digits, checkpoint(tmp_path / "clf.safetensors"), routes, out), named, message)
    assert not out.with_suffix(".json").exists()


def test_finetuning_a_sigma_no_input_is_routed_to_warns_and_keeps_the_weights(digits, tmp_path):
    routes = tmp_path / "routes.tsv"
    routes.write_text("idx\tsigma\n0\t0.25\n1\t1.0\n")
    classifier, out = checkpoint(tmp_path / "clf.safetensors"), tmp_path / "finetuned.safetensors"
    with pytest.warns(UserWarning, match=r"no training input of .* is routed to sigma=0.5 \(sigmas routed to: 0.25, 1\)"):
        main(finetune(digits, classifier, routes, out))
    assert read_state_dict(out).keys() == read_state_dict(classifier).keys()
    assert all(torch.equal(read_state_dict(out)[k], read_state_dict(classifier)[k]) for k in read_state_dict(out))


LABEL_ROWS = "".join(f"{i}\t{i % 10}\t{i % 10}\t0.4\t1\n" for i in range(40))


@pytest.mark.parametrize(("bad_row", "message"), [
    ("40\t0\t0\tnan\t1\n", "column 'radius' holds radii (finite numbers >= 0), but line 42 holds NaN or an empty field"),
    ("40\t0\t0\t-0.2\t1\n", "column 'radius' holds radii (finite numbers >= 0), but line 42 holds -0.2"),
    ("40\t0\t0\t0.2\t2\n", "column 'correct' holds 0 or 1, but line 42 holds 2"),
    ("39\t0\t0\t0.2\t1\n", "idx 39 appears more than once"),
    (f"{TRAINING_INPUTS + 5}\t0\t0\t0.2\t1\n", f"idx {TRAINING_INPUTS + 5} is past the {TRAINING_INPUTS} inputs"),
])
def test_a_bad_label_table_is_refused_before_training(digits, tmp_path, bad_row, message):
    good, bad = tmp_path / "good.tsv", tmp_path / "bad.tsv"
    good.write_text("idx\tlabel\tpredict\tradius\tcorrect\n" + LABEL_ROWS)
    bad.write_text("idx\tlabel\tpredict\tradius\tcorrect\n" + LABEL_ROWS + bad_row)
    out = tmp_path / "estimator.safetensors"
    assert_exits_naming(["train-estimator", "--dataset", "digits", "--root", str(digits), "--labels", f"0.25={good}",
                         "--labels", f"0.5={bad}", "--arch", "digits_cnn", "--sigma-e", "0.5", "--epochs", "1",
                         "--batch-size", "16", "--lr", "0.001", "--device", "cpu", "--out", str(out)],
                        f"{bad} (the label table for 0.5)", message)


def test_a_label_table_without_the_correct_column_is_refused(digits, tmp_path):
    table = tmp_path / "labels.tsv"
    table.write_text("idx\tradius\n0\t0.5\n")
    out = tmp_path / "estimator.safetensors"
    assert_exits_naming(["train-estimator", "--dataset", "digits", "--root", str(digits), "--labels", f"0.25={table}",
                         "--labels", f"0.5={table}", "--arch", "digits_cnn", "--sigma-e", "0.5", "--epochs", "1",
                         "--batch-size", "16", "--lr", "0.001", "--device", "cpu", "--out", str(out)],
                        f"{table} (the label table for 0.25) lacks the column correct (its columns: idx, radius)")


@pytest.mark.parametrize(("column", "value", "message"), [
    ("correct", "yes", "column 'correct' holds 0 or 1, but line 4 holds 'yes'"),
    ("radius", "-1", "column 'radius' holds radii (finite numbers >= 0), but line 4 holds -1"),
    ("predict", "-2", "column 'predict' holds predictions (integers >= -1, -1 for an abstention), but line 4 holds -2"),
    ("sigma", "0", "column 'sigma' holds noise levels (finite numbers > 0), empty for an abstention, but line 4 holds 0"),
    ("time", "nan", "column 'time' holds times in seconds (finite numbers >= 0), but line 4 holds NaN"),
])
def test_report_refuses_a_bad_certificate_table_before_writing(tmp_path, column, value, message):
    header = ["idx", "label", "predict", "sigma", "radius", "r_sigma", "r_c", "correct", "time"]
    rows = [[str(i), "1", "1", "0.5", "0.3", "0.4", "0.3", "1", "0.01"] for i in range(4)]
    rows[2][header.index(column)] = value
    dual = tmp_path / "dual.tsv"
    dual.write_text("\n".join("\t".join(row) for row in [header, *rows]) + "\n")
    table = tmp_path / "tables" / "t.csv"
    with pytest.raises(SystemExit) as error:
        main(["report", "--dual", f"dual={dual}", "--radii", "0", "0.25", "--table", str(table)])
    assert f"{dual} (the certificates of 'dual'): {message}" in str(error.value)
    assert not table.parent.exists() or not any(table.parent.iterdir())


def test_merge_refuses_shards_of_different_commands(tmp_path):
    first, second, out = tmp_path / "a.tsv", tmp_path / "b.tsv", tmp_path / "merged.tsv"
    first.write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\n0\t1\t1\t0.3\t1\t0.01\n")
    second.write_text("idx\tlabel\tpredict\tsigma\tradius\tr_sigma\tr_c\tcorrect\ttime\n1\t1\t1\t0.5\t0.3\t0.3\t0.4\t1\t0.01\n")
    with pytest.raises(SystemExit) as error:
        main(["merge", str(first), str(second), "--out", str(out)])
    assert f"shard {second} has the columns idx, label, predict, sigma, radius" in str(error.value)
    assert "the shards come from different commands" in str(error.value)
    assert not out.exists()


# ------------------------------------------------------------------ corrupt certificate files on resume


@pytest.fixture
def interrupted(digits, tmp_path, monkeypatch) -> Path:
    """A certification interrupted after two rows: ``c.tsv.partial`` and its recorded settings."""
    import dualrs.tasks

    calls = []

    def interrupt_at_third(*args):
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return sample_generator(*args)

    monkeypatch.setattr(dualrs.tasks, "sample_generator", interrupt_at_third)
    out = tmp_path / "c.tsv"
    with pytest.raises(KeyboardInterrupt):
        main(certify_global(digits, checkpoint(tmp_path / "clf.safetensors"), out))
    monkeypatch.undo()
    assert len(out.with_name("c.tsv.partial").read_text().splitlines()) == 3
    return out


@pytest.mark.parametrize(("rows", "message"), [
    (["0\t0\t0\t0.5\t1\t0.1", "60\t6\t6\t0.3", "120\t1\t1\t0.2\t1\t0.1"], "c.tsv.partial:3: corrupt row"),
    (["0\t0\t0\t0.5\t1\t0.1", "x60\t6\t6\t0.3\t1\t0.1"], "c.tsv.partial:3: corrupt row '"),
    (["0\t0\t0\tabc\t1\t0.1", "60\t6\t6\t0.3\t1\t0.1"], "c.tsv.partial:2: corrupt row '0\\t0\\t0\\tabc\\t1\\t0.1': "
                                                     "radius 'abc' is not a number"),
    (["0\t0\t0\t0.5\t1\t0.1", "0\t0\t0\t0.5\t1\t0.1"], "c.tsv.partial:3: idx 0 was already written on line 2"),
])
def test_corrupt_partial_row_is_an_error_naming_file_and_line(digits, interrupted, rows, message):
    partial = interrupted.with_name("c.tsv.partial")
    partial.write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\n" + "\n".join(rows) + "\n")
    before = partial.read_bytes()
    with pytest.raises(SystemExit) as error:
        main(certify_global(digits, interrupted.with_name("clf.safetensors"), interrupted))
    assert message in str(error.value) and "delete the file to restart" in str(error.value)
    assert partial.read_bytes() == before and not interrupted.exists()


# ------------------------------------------------------------------ inputs of the Python API


class MustNotRun(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the model must not run on bad input")


BAD_INPUTS = [
    (torch.tensor([0.1, math.nan, 0.3]), ValueError, "x has 1 non-finite value(s) (NaN or inf) among 3"),
    (torch.tensor([[0.1, math.inf], [-math.inf, 0.0]]), ValueError, "x has 2 non-finite value(s)"),
    (np.zeros(3), TypeError, "x must be a torch.Tensor (one input without batch dimension), got ndarray"),
    ([0.1, 0.2], TypeError, "got list"),
    (torch.zeros(3, dtype=torch.long), TypeError, "x must be a floating-point tensor, got dtype torch.int64"),
    (torch.tensor(0.5), ValueError, "got shape ()"),
    (torch.zeros(0, 8), ValueError, "got shape (0, 8)"),
]


@pytest.mark.parametrize(("x", "error", "message"), BAD_INPUTS)
def test_smooth_refuses_bad_inputs_before_sampling(x, error, message):
    smooth = Smooth(MustNotRun(), 3, 0.5)
    with pytest.raises(error, match=re.escape(message)):
        smooth.certify(x, 10, 100, 0.01, 50)
    with pytest.raises(error, match=re.escape(message)):
        smooth.certify_bound(x, 10, 100, 0.01, 50)
    with pytest.raises(error, match=re.escape(message)):
        smooth.predict(x, 100, 0.01, 50)


@pytest.mark.parametrize(("x", "error", "message"), BAD_INPUTS)
def test_dual_smooth_refuses_bad_inputs_before_sampling(x, error, message):
    dual = DualSmooth(MustNotRun(), {0.25: MustNotRun(), 0.5: MustNotRun()}, 0.5, 3)
    with pytest.raises(error, match=re.escape(message)):
        dual.certify(x, 10, 100, 0.01, 0.01, 50)


def test_good_inputs_pass_the_checks():
    for x in (torch.zeros(3), torch.zeros(1, 8, 8, dtype=torch.float64), torch.zeros(2, dtype=torch.float16)):
        assert Smooth(ConstantClass(1, 2), 2, 0.5).certify(x, 4, 16, 0.01, 16)[0] == 1


def test_level_of_one_half_or_more_is_refused_with_the_reason(capsys, digits, tmp_path):
    argv = certify_global(digits, checkpoint(tmp_path / "clf.safetensors"), tmp_path / "c.tsv")
    argv[argv.index("--alpha") + 1] = "0.5"
    with pytest.raises(SystemExit):
        main(argv)
    assert "alpha must lie in (0, 0.5), got 0.5: a one-sided confidence bound that fails with probability 0.5 or more " \
           "certifies nothing" in capsys.readouterr().err
    with pytest.raises(ValueError, match="beta must lie in"):
        DualSmooth(ConstantClass(0, 2), {0.25: ConstantClass(0, 2), 0.5: ConstantClass(1, 2)}, 0.5, 2).certify(
            torch.zeros(2), 4, 16, 0.01, 0.5, 16)


# ------------------------------------------------------------------ checkpoints are never unpickled


class Payload:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def malicious(tmp_path) -> tuple[Path, Path]:
    marker = tmp_path / "pwned"
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "payload": Payload(marker)}, path)
    return path, marker


def test_pickled_code_in_weights_is_refused(malicious, tmp_path):
    path, marker = malicious
    with pytest.raises(ValueError, match=f"{re.escape(str(path))} is not a plain tensor checkpoint and is not unpickled"):
        read_state_dict(path)
    with pytest.raises(ValueError, match="not unpickled"):
        create_model("timm/test_vit", 10, 3, weights=str(path))
    with pytest.raises(SystemExit, match="not unpickled"):
        main(["fetch-pretrained", "--dataset", "cifar10", "--root", str(tmp_path), "--arch", "timm/test_vit",
              "--weights", str(path), "--out", str(tmp_path / "out.safetensors")])
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()


def test_pickle_posing_as_a_dualrs_checkpoint_is_refused(malicious, digits, tmp_path):
    path, marker = malicious
    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(path.read_bytes())
    fake.with_suffix(".json").write_text(json.dumps({"arch": "digits_cnn", "num_classes": 10, "in_chans": 1}))
    assert_exits_naming(certify_global(digits, fake, tmp_path / "c.tsv"), f"checkpoint {fake} is not a safetensors file")
    assert not marker.exists()


def test_plain_tensor_checkpoints_still_load(tmp_path):
    weights = {"a": torch.arange(3.0), "b.c": torch.ones(2, 2)}
    torch.save(weights, tmp_path / "plain.pth")
    torch.save({"state_dict": {f"module.{k}": v for k, v in weights.items()}, "epoch": 3}, tmp_path / "wrapped.pth")
    for name in ("plain.pth", "wrapped.pth"):
        loaded = read_state_dict(tmp_path / name)
        assert loaded.keys() == weights.keys() and all(torch.equal(loaded[k], weights[k]) for k in weights)


# ------------------------------------------------------------------ a denoiser's conditioning.json


@pytest.mark.parametrize(("content", "message"), [
    ('{"timestep_scal": 0.25}', "unknown key(s) ['timestep_scal']; a denoiser's conditioning has only timestep_scale"),
    ('{"timestep_scale": "0.25"}', "timestep_scale must be a positive number (the network is handed t times it), "
                                   "got '0.25'"),
    ('{"timestep_scale": 0}', "timestep_scale must be a positive number"),
    ('{"timestep_scale": NaN}', "timestep_scale must be a positive number"),
    ('{"attention_heads": {"mid_block.attentions.0": 0}}', "attention_heads must map module names to positive"),
    ('{"attention_heads": {"no_such_block": 4}}', "attention_heads names a module the UNet lacks"),
    ("[0.25]", "must hold a JSON object, not list"),
    ("{0.25", "is not valid JSON"),
])
def test_a_bad_conditioning_file_is_refused_naming_it(tmp_path, content, message):
    from diffusers import DDPMScheduler

    from dualrs.denoise import DiffusionDenoiser, build_digits_unet, save_denoiser

    folder = tmp_path / "denoiser"
    save_denoiser(build_digits_unet(), DDPMScheduler(), folder, conditioning={"timestep_scale": 0.25})
    DiffusionDenoiser.from_pretrained(folder, 0.5)  # the file as written loads
    (folder / "conditioning.json").write_text(content)
    with pytest.raises(ValueError) as error:
        DiffusionDenoiser.from_pretrained(folder, 0.5)
    assert str(folder / "conditioning.json") in str(error.value) and message in str(error.value)


@pytest.mark.parametrize("command", ["report", "certify-dual"])
def test_a_radius_given_twice_is_refused(capsys, tmp_path, command):
    argv = {"report": ["report", "--method", f"m={tmp_path / 'm.tsv'}", "--table", str(tmp_path / "t.csv")],
            "certify-dual": ["certify-dual", "--dataset", "digits", "--root", str(tmp_path), "--estimator",
                             str(tmp_path / "e.safetensors"), "--classifier", f"0.5={tmp_path / 'c.safetensors'}",
                             "--sigma-e", "0.5", "--n0", "8", "--n", "32", "--batch-size", "32", "--alpha", "0.01",
                             "--beta", "0.01", "--adaptive", "--out", str(tmp_path / "d.tsv")]}[command]
    for path in ("m.tsv", "e.safetensors", "c.safetensors"):
        (tmp_path / path).write_text("")
    with pytest.raises(SystemExit) as error:
        main([*argv, "--radii", "0", "0.5", "0.5", "1"])
    assert error.value.code == 2
    assert "argument --radii: 0.5 given more than once; give each value once" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.safetensors", "e.safetensors", "m.tsv"]


def test_a_training_sigma_given_twice_is_refused(capsys, tmp_path):
    with pytest.raises(SystemExit) as error:
        main(["train-classifier", "--dataset", "digits", "--root", str(tmp_path), "--arch", "digits_cnn",
              "--sigma", "0.25", "0.5", "0.25", "--epochs", "1", "--batch-size", "8", "--lr", "0.1",
              "--out", str(tmp_path / "c.safetensors")])
    assert error.value.code == 2
    assert "argument --sigma: 0.25 given more than once; give each value once" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--seed", "-1", "argument --seed: must be an integer in [0, 2^32 - 1], got '-1'"),
    ("--seed", str(2**32), f"argument --seed: must be an integer in [0, 2^32 - 1], got '{2**32}'"),
])
def test_a_seed_numpy_cannot_take_is_refused_as_the_config_refuses_it(capsys, digits, tmp_path, flag, value, message):
    assert_usage_error_naming(capsys, certify_global(digits, checkpoint(tmp_path / "c.safetensors"), tmp_path / "c.tsv")
                              + [flag, value], message)


def test_negative_data_loader_workers_are_refused(capsys, digits, tmp_path):
    assert_usage_error_naming(capsys, ["train-classifier", "--dataset", "digits", "--root", str(digits), "--arch",
                                       "digits_cnn", "--sigma", "0.5", "--epochs", "1", "--batch-size", "64", "--lr",
                                       "0.01", "--num-workers", "-1", "--out", str(tmp_path / "c.safetensors")],
                              "argument --num-workers: must be an integer >= 0, got '-1'")
