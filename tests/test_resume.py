"""Certificates are reproducible whatever the batch size, sharding, interruption or concurrency.

Noise for test input i comes from a generator seeded by (seed, stage, i) (docs/architecture.md, "Randomness"),
so every column but ``time`` must be byte-identical across: two batch sizes; 1 vs 3 shards merged;
a run killed with SIGKILL and rerun; 8 shard jobs run two at a time by Snakemake. The models are
small digits CNNs trained for one epoch, so certificates mix classes, radii and abstentions.
"""
from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import TensorDataset

from dualrs.cli import main
from dualrs.data import load_split, prepare_dataset
from dualrs.io import save_checkpoint
from dualrs.tables import GLOBAL_COLUMNS, ResumableTable, read_table, resumable_table
from dualrs.models import create_model
from dualrs.tasks import DataRef, train_classifier_model
from dualrs.train import Optim, train_classifier
from pipeline import run_snakemake, tiny_experiment, venv_environment

REPO = Path(__file__).resolve().parents[1]
SIGMAS = (0.25, 0.5)


@dataclass(frozen=True)
class Setup:
    workdir: Path  # a Snakemake working directory: data/digits, results/tiny/models

    @property
    def data(self) -> Path:
        return self.workdir / "data" / "digits"

    def classifier(self, sigma: float) -> Path:
        return self.workdir / "results" / "tiny" / "models" / f"classifier_sigma{sigma:g}.safetensors"

    @property
    def estimator(self) -> Path:
        return self.workdir / "results" / "tiny" / "models" / "estimator_it0.safetensors"


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Setup:
    return trained_setup(tmp_path_factory.mktemp("resume"))


def trained_setup(workdir: Path) -> Setup:
    """Digits, one classifier per σ and an estimator over SIGMAS, each trained for one epoch."""
    setup = Setup(workdir)
    prepare_dataset("digits", setup.data, seed=0)
    data, optim = DataRef("digits", setup.data), Optim(epochs=1, batch_size=128, lr=0.003)
    for sigma in SIGMAS:
        train_classifier_model(data, setup.classifier(sigma), "digits_cnn", {}, sigma, optim, seed=0, device="cpu")
    train = load_split("digits", setup.data, "train")
    x = torch.stack([train[i][0] for i in range(len(train))])
    parity = torch.tensor([train[i][1] % 2 for i in range(len(train))])  # a σ choice that depends on x
    torch.manual_seed(0)
    estimator = create_model("digits_cnn", 2, 1)
    train_classifier(estimator, TensorDataset(x, parity), 0.5, optim, seed=0, desc="estimator")
    save_checkpoint(setup.estimator, estimator, {"arch": "digits_cnn", "num_classes": 2, "in_chans": 1,
                                                 "role": "estimator", "sigmas": list(SIGMAS), "sigma_e": 0.5})
    return setup


def global_args(setup: Setup, out: Path, **overrides: object) -> list[str]:
    options = {"--dataset": "digits", "--root": setup.data, "--classifier": setup.classifier(0.25), "--sigma": 0.25,
               "--n0": 16, "--n": 200, "--batch-size": 100, "--every": 30, "--alpha": 0.01, "--out": out,
               "--threads": 1, **overrides}
    return ["certify-global", "--device", "cpu", *(str(part) for item in options.items() for part in item)]


def dual_args(setup: Setup, out: Path, **overrides: object) -> list[str]:
    options = {"--estimator": setup.estimator, "--sigma-e": 0.5, "--n0": 16, "--n": 200, "--batch-size": 100,
               "--every": 30, "--alpha": 0.01, "--beta": 0.01, "--out": out, "--threads": 1, **overrides}
    classifiers = [part for s in SIGMAS for part in ("--classifier", f"{s}={setup.classifier(s)}")]
    return ["certify-dual", "--dataset", "digits", "--root", str(setup.data), "--device", "cpu", *classifiers,
            *(str(part) for item in options.items() for part in item)]


def certificates(path: Path) -> pd.DataFrame:
    """Every column but ``time``, as the exact text written."""
    return pd.read_csv(path, sep="\t", dtype=str).drop(columns="time")


def assert_varied(frame: pd.DataFrame) -> None:
    """Not a trivial table: several radii, and more than one predicted class."""
    assert frame["radius"].nunique() > 3 and frame["predict"].nunique() > 1


ARGS = {"global": global_args, "dual": dual_args}


@pytest.mark.parametrize("kind", ["global", "dual"])
def test_certificates_do_not_depend_on_the_batch_size(setup, tmp_path, kind):
    main(ARGS[kind](setup, tmp_path / "b100.tsv", **{"--batch-size": 100}))
    main(ARGS[kind](setup, tmp_path / "b7.tsv", **{"--batch-size": 7}))
    expected = certificates(tmp_path / "b100.tsv")
    assert len(expected) == 18  # 540 test inputs, every 30th
    assert_varied(expected)
    pd.testing.assert_frame_equal(certificates(tmp_path / "b7.tsv"), expected)


@pytest.mark.parametrize("kind", ["global", "dual"])
def test_three_shards_merge_to_the_unsharded_certificates(setup, tmp_path, kind):
    main(ARGS[kind](setup, tmp_path / "all.tsv"))
    shards = [tmp_path / f"shard{k}.tsv" for k in range(3)]
    for k, shard in enumerate(shards):
        main(ARGS[kind](setup, shard, **{"--shard": k, "--num-shards": 3}))
    main(["merge", *map(str, shards), "--out", str(tmp_path / "merged.tsv")])
    pd.testing.assert_frame_equal(certificates(tmp_path / "merged.tsv"), certificates(tmp_path / "all.tsv"))


def rows_written(partial: Path) -> int:
    return max(len(partial.read_text().splitlines()) - 1, 0) if partial.is_file() else 0


@pytest.mark.slow
def test_sigkill_then_rerun_gives_the_uninterrupted_certificates(setup, tmp_path):
    """SIGKILL once rows are in ``<out>.partial``, its last row cut in half as a kill mid-write leaves it;
    the rerun keeps the complete rows, redoes the rest, and none is lost or doubled."""
    overrides = {"--every": 3, "--n": 1000, "--batch-size": 250}  # 180 inputs: seconds of work
    main(global_args(setup, tmp_path / "reference.tsv", **overrides))
    expected = certificates(tmp_path / "reference.tsv")

    out = tmp_path / "killed.tsv"
    partial = out.with_name("killed.tsv.partial")
    with open(tmp_path / "killed.log", "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "dualrs", *global_args(setup, out, **overrides)],
                                   stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while rows_written(partial) < 5 and time.monotonic() < deadline:
            assert process.poll() is None, "the run ended before it could be killed"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        assert process.wait() == -signal.SIGKILL
    assert 5 <= rows_written(partial) < len(expected) and not out.exists()
    lines = partial.read_text().splitlines()
    partial.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        main(global_args(setup, out, **overrides))
    messages = [str(warning.message) for warning in caught]
    assert any("dropping the incomplete last line" in message for message in messages)
    assert not any("starting over" in message for message in messages)
    got = certificates(out)
    assert got["idx"].is_unique
    pd.testing.assert_frame_equal(got, expected)
    assert not partial.exists() and not out.with_name("killed.tsv.partial.json").exists()
    # the complete rows were kept, not computed again: their times are those written before the kill
    times = pd.read_csv(out, sep="\t", dtype=str).set_index("idx")["time"]
    assert all(times[line.split("\t")[0]] == line.split("\t")[-1] for line in lines[1:-1])


def test_partial_file_of_other_settings_is_started_over(setup, tmp_path):
    """A run killed at n = 100 left a row behind; a rerun at n = 200 must not keep it."""
    main(global_args(setup, tmp_path / "reference.tsv"))
    out = tmp_path / "stale.tsv"
    with ResumableTable(out, GLOBAL_COLUMNS, settings={"n": 100}) as stale:
        stale.append({"idx": 0, "label": 0, "predict": 0, "radius": 9.0, "correct": 1, "time": 0.0})
    with pytest.warns(UserWarning, match=r"stale\.tsv\.partial was written with other settings \(.*\bn\b.*\): "
                                         "starting over"):
        main(global_args(setup, out))
    pd.testing.assert_frame_equal(certificates(out), certificates(tmp_path / "reference.tsv"))

    out.with_name("stale.tsv.partial").write_text("\n".join((tmp_path / "reference.tsv").read_text().splitlines()[:4]))
    with pytest.warns(UserWarning, match="has no record of its settings: starting over"):
        main(global_args(setup, tmp_path / "stale.tsv"))


def test_certificate_tsv_keeps_float64_radii(tmp_path):
    """A radius just below a table's grid value must not be rounded up to it when written."""
    rows = [{"idx": 0, "label": 1, "predict": 1, "radius": 0.49999999999999994, "correct": 1, "time": 0.1},
            {"idx": 1, "label": 1, "predict": 1, "radius": 0.1 + 0.2, "correct": 1, "time": 0.2}]
    with resumable_table(tmp_path / "c.tsv", GLOBAL_COLUMNS) as table:
        for row in rows:
            table.append(row)
    assert read_table(tmp_path / "c.tsv")["radius"].tolist() == [0.49999999999999994, 0.30000000000000004]


def test_resumed_partial_keeps_its_complete_rows_exactly(tmp_path):
    out = tmp_path / "c.tsv"
    with ResumableTable(out, GLOBAL_COLUMNS) as table:
        for i in range(3):
            table.append({"idx": i, "label": 0, "predict": 0, "radius": 0.1 * i, "correct": 1, "time": 1.0})
    before = out.with_name("c.tsv.partial").read_bytes()
    with ResumableTable(out, GLOBAL_COLUMNS) as table:
        assert table.done == {0, 1, 2}
    assert out.with_name("c.tsv.partial").read_bytes() == before


TINY_EIGHT_SHARDS = tiny_experiment("{n0: 8, n: 16, alpha: 0.01, every: 20}",
                                    "{n0: 16, n: 200, alpha: 0.01, beta: 0.01, every: 30, shards: 8}", 100)


@pytest.mark.slow
def test_eight_shard_jobs_two_at_a_time_clobber_nothing(setup, tmp_path):
    """Snakemake runs the 8 certify_global shards of one σ with 2 cores, then merges them; each job
    has its own output and log, and the merged table equals one unsharded run."""
    workdir = tmp_path / "work"
    shutil.copytree(setup.workdir, workdir)
    shutil.copytree(REPO / "config", workdir / "config")
    (workdir / "eight.yaml").write_text(TINY_EIGHT_SHARDS)
    target = "results/tiny/certify/global/sigma0.25.tsv"
    env = venv_environment()
    result = run_snakemake(["--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), target, "--cores", "2",
                            "--configfile", str(workdir / "eight.yaml")], cwd=Path.cwd(), env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "rule train_classifier" not in result.stderr + result.stdout  # only certification ran
    logs = sorted((workdir / "logs" / "tiny" / "certify_global").glob("*.log"))
    assert [log.name for log in logs] == [f"sigma0.25_shard{k}.log" for k in range(8)]
    for k, log in enumerate(logs):
        text = log.read_text()
        assert f"sigma0.25_shard{k}.tsv" in text
        assert not any(f"sigma0.25_shard{j}.tsv" in text for j in range(8) if j != k)

    main(global_args(setup, tmp_path / "unsharded.tsv", **{"--batch-size": 100}))
    pd.testing.assert_frame_equal(certificates(workdir / target), certificates(tmp_path / "unsharded.tsv"))


# ------------------------------------------------------------------ what a resumed partial file must match


def interrupted(args: list[str], monkeypatch: pytest.MonkeyPatch, rows: int = 2) -> None:
    """Run ``dualrs *args`` until ``rows`` rows are in the partial file, then stop it as a kill would."""
    import dualrs.tasks
    from dualrs.seeding import sample_generator

    calls = []

    def stop_after_rows(*generator_args):
        calls.append(generator_args)
        if len(calls) > rows:
            raise KeyboardInterrupt
        return sample_generator(*generator_args)

    monkeypatch.setattr(dualrs.tasks, "sample_generator", stop_after_rows)
    with pytest.raises(KeyboardInterrupt):
        main(args)
    monkeypatch.undo()


def assert_started_over(args: list[str], reference: list[str], out: Path, changed: str) -> None:
    """A rerun warns that the partial file is of other settings (naming ``changed``), and its table equals
    a fresh run's: no row of the old partial file survives."""
    with pytest.warns(UserWarning, match=rf"{re.escape(out.name)}\.partial was written with other settings "
                                         rf"\({changed}\): starting over"):
        main(args)
    main(reference)
    pd.testing.assert_frame_equal(certificates(out), certificates(Path(reference[reference.index("--out") + 1])))


def save_tiny_denoiser(path: Path, seed: int) -> None:
    from diffusers import DDPMScheduler

    from dualrs.denoise import build_digits_unet, save_denoiser

    torch.manual_seed(seed)
    save_denoiser(build_digits_unet(), DDPMScheduler(), path)


@pytest.mark.parametrize("change", ["weights retrained", "conditioning edited"])
def test_a_denoiser_replaced_in_its_folder_starts_the_partial_over(setup, tmp_path, monkeypatch, change):
    """The denoiser is recorded by the content of its folder (weights, configs, conditioning), not its path."""
    denoiser = tmp_path / "denoiser"
    save_tiny_denoiser(denoiser, seed=0)
    options = {"--denoiser": denoiser, "--n": 32, "--every": 60}
    out = tmp_path / "dds.tsv"
    interrupted(global_args(setup, out, **options), monkeypatch)
    assert rows_written(out.with_name("dds.tsv.partial")) == 2
    if change == "weights retrained":
        save_tiny_denoiser(denoiser, seed=1)
    else:
        (denoiser / "conditioning.json").write_text('{"timestep_scale": 2.0}\n')
    assert_started_over(global_args(setup, out, **options), global_args(setup, tmp_path / "fresh.tsv", **options),
                        out, "denoiser")


def test_a_dataset_prepared_again_differently_starts_the_partial_over(setup, tmp_path, monkeypatch):
    """digits prepared again with another seed: the same folder, options and size, other test images."""
    root = tmp_path / "digits"
    prepare_dataset("digits", root, seed=0)
    out = tmp_path / "c.tsv"
    interrupted(global_args(setup, out, **{"--root": root}), monkeypatch)
    prepare_dataset("digits", root, seed=1)
    assert_started_over(global_args(setup, out, **{"--root": root}),
                        global_args(setup, tmp_path / "fresh.tsv", **{"--root": root}), out, "data")


def fake_imagenet(folder: Path, seed: int) -> None:
    """Two class folders of six random 8x8 RGB images each."""
    from PIL import Image

    generator = np.random.default_rng(seed)
    for wnid in ("n01", "n02"):
        (folder / wnid).mkdir(parents=True, exist_ok=True)
        for k in range(6):
            pixels = generator.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / wnid / f"{k}.png")


def test_images_replaced_in_the_imagenet_folder_start_the_partial_over(setup, tmp_path, monkeypatch):
    """ImageNet's prepared list names images in the source folder: same names, new images, same list;
    their size and mtime change, which is what is recorded (one stat per image, no reading)."""
    source, root = tmp_path / "val", tmp_path / "imagenet"
    fake_imagenet(source, seed=0)
    options = {"source": str(source), "every": 1, "resize": 8, "crop": 8, "num_classes": 2}
    prepare_dataset("imagenet", root, seed=0, **options)
    classifier = tmp_path / "rgb.safetensors"
    torch.manual_seed(0)
    save_checkpoint(classifier, create_model("digits_cnn", 2, 3), {"arch": "digits_cnn", "num_classes": 2,
                                                                   "in_chans": 3})
    flags = {"--dataset": "imagenet", "--root": root, "--data-options": json.dumps(options),
             "--classifier": classifier, "--every": 1, "--n": 32}
    out = tmp_path / "c.tsv"
    interrupted(global_args(setup, out, **flags), monkeypatch)
    listed = (root / "test.tsv").read_bytes()
    time.sleep(0.01)
    fake_imagenet(source, seed=1)
    assert (root / "test.tsv").read_bytes() == listed
    assert_started_over(global_args(setup, out, **flags), global_args(setup, tmp_path / "fresh.tsv", **flags),
                        out, "data")


@pytest.mark.parametrize(("edit", "problem"), [
    (lambda f: {**f, "radius": "nan"}, "radius 'nan' is not finite"),
    (lambda f: {**f, "idx": str(int(f["idx"]) + 1)}, "is not one of the 9 inputs of this output"),
    (lambda f: {**f, "idx": "30"}, "idx 30 is not one of the 9 inputs of this output"),  # shard 1's input
    (lambda f: {**f, "label": str((int(f["label"]) + 1) % 10), "predict": str((int(f["label"]) + 1) % 10),
                "correct": "1"}, "but input"),
])
def test_rows_that_are_not_of_this_shard_are_refused(setup, tmp_path, monkeypatch, edit, problem):
    """A partial file of the same settings whose second row is impossible: a NaN radius, an input of no
    shard, an input of the other shard, the wrong label. The error names file and line; nothing changes."""
    out = tmp_path / "c.tsv"
    args = global_args(setup, out, **{"--shard": 0, "--num-shards": 2})
    interrupted(args, monkeypatch, rows=3)
    partial = out.with_name("c.tsv.partial")
    lines = partial.read_text().splitlines()
    fields = edit(dict(zip(GLOBAL_COLUMNS, lines[2].split("\t"))))
    lines[2] = "\t".join(fields[c] for c in GLOBAL_COLUMNS)
    partial.write_text("\n".join(lines) + "\n")
    before = partial.read_bytes()
    with pytest.raises(SystemExit) as error:
        main(args)
    assert f"c.tsv.partial:3: corrupt row {lines[2]!r}: " in str(error.value)
    assert problem in str(error.value) and "delete the file to restart" in str(error.value)
    assert partial.read_bytes() == before and not out.exists()


def test_an_interrupted_routing_resumes_to_the_uninterrupted_routes(tmp_path, monkeypatch):
    from dualrs.smoothing import Smooth

    root = tmp_path / "data"
    prepare_dataset("digits", root, seed=0)
    torch.manual_seed(0)
    estimator = tmp_path / "estimator.safetensors"
    save_checkpoint(estimator, create_model("digits_cnn", 2, 1),
                    {"arch": "digits_cnn", "num_classes": 2, "in_chans": 1, "sigmas": [0.25, 0.5], "role": "estimator"})
    command = ["route", "--dataset", "digits", "--root", str(root), "--estimator", str(estimator), "--sigma-e", "0.5",
               "--n", "3", "--batch-size", "3", "--device", "cpu"]
    main([*command, "--out", str(tmp_path / "alone.tsv")])
    votes, sample_counts = [], Smooth.sample_counts

    def counted(self, *args, **kwargs):
        if len(votes) == 500 and stop:
            raise KeyboardInterrupt
        votes.append(1)
        return sample_counts(self, *args, **kwargs)

    monkeypatch.setattr(Smooth, "sample_counts", counted)
    out, stop = tmp_path / "resumed.tsv", True
    with pytest.raises(KeyboardInterrupt):
        main([*command, "--out", str(out)])
    assert not out.exists() and len(read_table(out.with_name(out.name + ".partial"))) == 500
    votes.clear()
    stop = False
    main([*command, "--out", str(out)])
    alone = (tmp_path / "alone.tsv").read_bytes()
    assert len(votes) == alone.count(b"\n") - 1 - 500  # the rerun voted on the other inputs only
    assert out.read_bytes() == alone and len(set(read_table(out)["sigma"])) == 2
