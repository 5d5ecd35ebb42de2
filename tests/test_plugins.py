"""Datasets and architectures added from outside the package (docs/architecture.md, "Add a dataset or an
architecture"): the recipe's package in tests/plugin_example, installed with pip, then used by a tiny DAG."""
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from dualrs import config_checks, data, io, models
from dualrs.plugins import DATASETS_GROUP, load_plugin
from pipeline import REPO, snakemake

PLUGIN = REPO / "tests" / "plugin_example"
CONFIG = REPO / "tests" / "configs" / "toy_plugin.yaml"


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """The example plugin installed with pip into a folder of its own (put on the path by each test)."""
    source, site = tmp_path_factory.mktemp("source") / "plugin", tmp_path_factory.mktemp("site")
    shutil.copytree(PLUGIN, source)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(site), str(source)], check=True)
    return site


def test_an_installed_plugin_adds_its_dataset_and_architecture(plugin_site, monkeypatch, tmp_path):
    assert "toy_blobs" not in data.dataset_names() and "toy_mlp" not in models.list_models()
    monkeypatch.syspath_prepend(str(plugin_site))
    assert "toy_blobs" in data.dataset_names() and "toy_blobs" in config_checks.dataset_names()
    assert "toy_mlp" in models.list_models()
    data.prepare_dataset("toy_blobs", tmp_path, seed=0, per_class=10)
    train = data.load_split("toy_blobs", tmp_path, "train", per_class=10)
    assert len(train) == 30 and data.dataset_info("toy_blobs").num_classes == 3
    x, y = train[0]
    model = models.create_model("toy_mlp", num_classes=3, in_chans=1)
    assert model(x[None]).shape == (1, 3) and isinstance(y, int)
    with pytest.raises(ValueError, match="prepared with per_class=10 but 20"):
        data.load_split("toy_blobs", tmp_path, "train", per_class=20)


def _fake_distribution(site: Path, entry_points: str) -> None:
    info = site / "broken_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)


def test_a_broken_plugin_gets_one_error_naming_its_entry_point(monkeypatch, tmp_path):
    _fake_distribution(tmp_path, "[dualrs.datasets]\nnot_a_spec = json:dumps\nmissing = no_such_module:X\n"
                                 "[dualrs.models]\nbroken_arch = no_such_module:build\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(TypeError, match="'not_a_spec' .* is a function, not a dualrs.data.DatasetSpec"):
        data.dataset_info("not_a_spec")
    with pytest.raises(ImportError, match=r"'missing' of group 'dualrs.datasets' \(no_such_module:X\)"):
        data.dataset_info("missing")
    with pytest.raises(ImportError, match="'broken_arch' of group 'dualrs.models'"):
        models.create_model("broken_arch", num_classes=3, in_chans=1)
    with pytest.raises(KeyError, match="no entry point 'absent'"):
        load_plugin(DATASETS_GROUP, "absent")
    with pytest.raises(ValueError, match="unknown dataset 'absent'; valid: cifar10, digits, imagenet, missing"):
        data.dataset_info("absent")


def test_a_dataset_no_plugin_provides_is_refused_before_any_job(tmp_path):
    shutil.copytree(REPO / "config", tmp_path / "config")
    result = snakemake(tmp_path, "-n", "--configfile", str(CONFIG), check=False)
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert "config: data.toy_blobs: unknown dataset 'toy_blobs'; known: cifar10, digits, imagenet" in out
    assert "config: experiments.toy.data: unknown dataset 'toy_blobs'" in out
    assert "experiments.toy.classifier.arch: unknown architecture 'toy_mlp'" in out


@pytest.mark.slow
def test_a_tiny_dag_runs_on_the_plugins_dataset_and_architecture(plugin_site, monkeypatch, tmp_path):
    monkeypatch.setenv("PYTHONPATH", str(plugin_site))
    monkeypatch.syspath_prepend(str(plugin_site))
    shutil.copytree(REPO / "config", tmp_path / "config")
    snakemake(tmp_path, "--cores", "2", "--configfile", str(CONFIG))
    table = pd.read_csv(tmp_path / "results" / "tables" / "toy.csv")
    assert set(table["method"]) >= {"global σ=0.25", "global σ=0.5", "dual"}
    assert table.loc[table["method"] == "global σ=0.25", "r=0"].item() > 100 / 3  # above chance: 3 classes
    ready = (tmp_path / "data" / "toy_blobs" / "READY").read_text()
    assert '"per_class": 40' in ready and '"train": 120' in ready
    estimator, meta = io.load_checkpoint(tmp_path / "results" / "toy" / "models" / "estimator_it0.safetensors")
    assert meta["arch"] == "toy_mlp" and isinstance(estimator, torch.nn.Module)
