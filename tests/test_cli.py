"""The command line: one clear error for bad input before any work; certificates resume without loss."""
import warnings

import pandas as pd
import pytest
import torch

from dualrs import tasks
from dualrs.cli import main
from dualrs.data import prepare_dataset
from dualrs.io import save_checkpoint
from dualrs.models import create_model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    prepare_dataset("digits", root / "data", seed=0)
    torch.manual_seed(0)
    checkpoint = root / "clf.safetensors"
    save_checkpoint(checkpoint, create_model("digits_cnn", 10, 1),
                    {"arch": "digits_cnn", "num_classes": 10, "in_chans": 1})
    return root, checkpoint


def _certify_args(root, checkpoint, out, **overrides):
    args = {"--classifier": checkpoint, "--sigma": 0.5, "--n0": 8, "--n": 64, "--batch-size": 32,
            "--every": 60, "--alpha": 0.001, "--out": out, "--threads": 1}
    args.update(overrides)
    flat = ["certify-global", "--dataset", "digits", "--root", str(root / "data"), "--device", "cpu"]
    for key, value in args.items():
        flat += [key, str(value)]
    return flat


@pytest.mark.parametrize("key,value,message", [
    ("--alpha", "0.7", "must lie in (0, 0.5)"),
    ("--alpha", "0", "must lie in (0, 0.5)"),
    ("--n", "0", "must be a positive integer"),
    ("--sigma", "-1", "must be a positive number"),
    ("--sigma", "nan", "must be a positive number"),
    ("--classifier", "missing.safetensors", "file not found: missing.safetensors"),
    # text that is not a number says what was expected, not what int() or float() said
    ("--n", "1e4", "must be a positive integer, in digits (10000, not 1e4), got '1e4'"),
    ("--sigma", "abc", "must be a number, got 'abc'"),
    ("--seed", "abc", "must be an integer in [0, 2^32 - 1], got 'abc'"),
    ("--every", "x", "must be a positive integer, got 'x'"),
    ("--shard", "x", "must be an integer >= 0, got 'x'"),
])
def test_bad_arguments_give_one_error_naming_the_argument(setup, capsys, key, value, message):
    root, checkpoint = setup
    out = root / "bad.tsv"
    with pytest.raises(SystemExit) as exit_info:
        main(_certify_args(root, checkpoint, out, **{key: value}))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert key in err and message in err
    assert not out.exists() and not out.with_name("bad.tsv.partial").exists()


def test_unprepared_data_is_reported_before_work(setup, tmp_path):
    _, checkpoint = setup
    with pytest.raises(SystemExit, match="READY"):
        main(_certify_args(tmp_path, checkpoint, tmp_path / "x.tsv"))


def test_interrupted_certification_resumes_to_identical_certificates(setup, monkeypatch):
    root, checkpoint = setup
    full = root / "full.tsv"
    main(_certify_args(root, checkpoint, full))
    expected = pd.read_csv(full, sep="\t")
    assert len(expected) == 9  # 540 test samples, every 60th

    calls, sample_generator = [], tasks.sample_generator

    def interrupt_at_sixth(*args):
        calls.append(args)
        if len(calls) == 6:
            raise KeyboardInterrupt
        return sample_generator(*args)

    resumed = root / "resumed.tsv"
    monkeypatch.setattr(tasks, "sample_generator", interrupt_at_sixth)
    with pytest.raises(KeyboardInterrupt):
        main(_certify_args(root, checkpoint, resumed))
    monkeypatch.undo()
    assert len(resumed.with_name("resumed.tsv.partial").read_text().splitlines()) == 1 + 5
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # resuming, not starting over
        main(_certify_args(root, checkpoint, resumed, **{"--batch-size": 32}))
    got = pd.read_csv(resumed, sep="\t")
    cols = ["idx", "label", "predict", "radius", "correct"]
    pd.testing.assert_frame_equal(got[cols], expected[cols])


def test_sharded_certificates_equal_the_unsharded_run(setup):
    root, checkpoint = setup
    main(_certify_args(root, checkpoint, root / "one.tsv"))
    shards = []
    for shard in range(3):
        shards.append(root / f"shard{shard}.tsv")
        main(_certify_args(root, checkpoint, shards[-1], **{"--shard": shard, "--num-shards": 3}))
    main(["merge", *map(str, shards), "--out", str(root / "merged.tsv")])
    cols = ["idx", "label", "predict", "radius", "correct"]
    pd.testing.assert_frame_equal(pd.read_csv(root / "merged.tsv", sep="\t")[cols],
                                  pd.read_csv(root / "one.tsv", sep="\t")[cols])


def test_version_comes_from_the_package_metadata(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"dualrs {version('dualrs')}"


def test_every_flag_of_every_command_has_help_and_shows_its_default():
    import argparse

    from dualrs.cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert {"prepare-data", "certify-global", "certify-dual", "report"} <= set(commands)
    for name, command in commands.items():
        assert issubclass(command.formatter_class, argparse.ArgumentDefaultsHelpFormatter), name
        for action in command._actions:
            assert action.help and action.help.strip(), f"dualrs {name} {action.option_strings or action.dest}"
    assert "(default: 0)" in commands["certify-global"].format_help()  # --seed


def test_flag_defaults_are_the_settings_defaults():
    """Each defaulted field of a command's settings is a flag with that default (dataclass fields of
    dualrs.settings, and dualrs.train.Optim, whose flags spell their defaults out to keep the parser torch-free)."""
    import argparse
    from dataclasses import MISSING, fields

    from dualrs import settings
    from dualrs.cli import build_parser
    from dualrs.train import Optim

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    of_command = {"label": [settings.Sampling, settings.SmoothedSettings], "certify-global": [settings.Sampling],
                  "certify-dual": [settings.Sampling, settings.DualSettings],
                  "certify-cascade": [settings.Sampling, settings.CascadeSettings],
                  "certify-router": [settings.Sampling], "train-estimator": [settings.EstimatorSettings, Optim],
                  "route": [settings.RouteSettings], "finetune": [settings.FinetuneSettings, Optim],
                  "train-classifier": [Optim]}
    flag_of = {"init_weights": "weights", "hard": "hard_labels", "expert_sigmas": "expert_sigma"}
    for name, classes in of_command.items():
        defaults = {action.dest: action.default for action in commands[name]._actions}
        for cls in classes:
            for field in fields(cls):
                if field.default is MISSING and field.default_factory is MISSING:
                    continue
                given = defaults[flag_of.get(field.name, field.name)]
                given = tuple(given) if isinstance(given, list) else given  # --milestones: a list, Optim's a tuple
                assert given == settings.default(cls, field.name), (name, cls.__name__, field.name)


def test_schema_defaults_of_the_estimators_loss_are_the_settings_and_library_defaults():
    """The schema spells the loss defaults out for Snakemake; they must be EstimatorSettings' (the CLI's and
    the library's single source), and the cascade's variant and p0 CascadeSmooth's."""
    import inspect

    import yaml

    from dualrs import settings
    from dualrs.cascade import CascadeSmooth
    from pipeline import REPO

    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    estimator = schema["properties"]["experiments"]["additionalProperties"]["properties"]["estimator"]["properties"]
    for key in ("lam", "eta", "copies", "radius_weight", "class_weight", "train_fraction"):
        assert estimator[key]["default"] == settings.default(settings.EstimatorSettings, key), key
    assert (estimator["labels"]["default"] == "hard") is settings.default(settings.EstimatorSettings, "hard") is False
    assert estimator["temperature"]["default"] is settings.default(settings.EstimatorSettings, "temperature") is None
    for key in ("variant", "threshold"):
        assert inspect.signature(CascadeSmooth).parameters[key].default == settings.default(settings.CascadeSettings,
                                                                                             key), key
