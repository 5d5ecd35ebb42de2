"""Repeatability: the same commit, config and machine give the same models, certificates and tables.

Only wall time may differ between two runs: the ``time`` column of a certificate TSV and the
``s/input`` column (its mean) of a table are left out of the comparison, and nothing else is
(filelock's empty ``*.lock`` files beside the outputs are not results and are not compared).
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dualrs.data import prepare_dataset
from dualrs.seeding import deterministic
from pipeline import REPO, TINY, snakemake
from scripts.compare_runs import differing_files, untimed
def test_timing_columns_are_the_only_ones_left_out(tmp_path):
    tsv = tmp_path / "x.tsv"
    tsv.write_text("idx\tradius\ttime\n0\t0.5\t0.01\n")
    assert untimed(tsv) == "idx\tradius\n0\t0.5\n"
    md = tmp_path / "x.md"
    md.write_text("note\n\n| method | ACR | s/input |\n|:--|:--|:--|\n| dual | 0.3 | 0.02 |")
    assert untimed(md) == "note\n\n| method | ACR |\n|:--|:--|\n| dual | 0.3 |"
    tex = tmp_path / "x.tex"
    tex.write_text("\\toprule\nmethod & ACR & s/input \\\\\ndual & 0.3 & 0.02 \\\\\n")
    assert untimed(tex) == "\\toprule\nmethod & ACR \\\\\ndual & 0.3 \\\\"
    js = tmp_path / "x.json"
    js.write_text(json.dumps({"dual": {"ACR": 0.3, "s/input": 0.02}}))
    assert untimed(js) == json.dumps({"dual": {"ACR": 0.3}})


def test_compare_runs_names_what_differs_outside_timing_and_exits_1(tmp_path):
    """scripts/compare_runs.py, README's check of two full runs."""
    for run, radius, time in (("a", "0.5", "0.01"), ("b", "0.5", "0.02"), ("c", "0.4", "0.01")):
        certify = tmp_path / run / "results" / "digits" / "certify"
        certify.mkdir(parents=True)
        (certify / "dual.tsv").write_text(f"idx\tradius\ttime\n0\t{radius}\t{time}\n")
    script = [sys.executable, str(REPO / "scripts" / "compare_runs.py")]
    same = subprocess.run([*script, str(tmp_path / "a"), str(tmp_path / "b")], capture_output=True, text=True)
    assert (same.returncode, same.stdout) == (0, "0 file(s) differ outside the timing columns\n")
    other = subprocess.run([*script, str(tmp_path / "a"), str(tmp_path / "c")], capture_output=True, text=True)
    assert (other.returncode, other.stdout.splitlines()[0]) == (1, "results/digits/certify/dual.tsv")


def _train_denoiser(root: Path, out: Path) -> bytes:
    """``dualrs train-denoiser`` in a fresh process; the UNet's weight file."""
    subprocess.run([sys.executable, "-m", "dualrs", "train-denoiser", "--dataset", "digits", "--root", str(root),
                    "--steps", "3", "--batch-size", "8", "--lr", "0.002", "--seed", "0", "--threads", "1",
                    "--device", "cpu", "--out", str(out)], check=True, capture_output=True)
    return (out / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()


@pytest.mark.slow
def test_a_denoiser_trained_in_two_processes_has_the_same_weights(tmp_path):
    """A fresh torch process starts from a random seed: every random draw of a job must derive from ``--seed``."""
    prepare_dataset("digits", tmp_path / "data", seed=0)
    assert _train_denoiser(tmp_path / "data", tmp_path / "a") == _train_denoiser(tmp_path / "data", tmp_path / "b")


def test_deterministic_seeds_torch_and_restricts_it_to_deterministic_kernels():
    threads, enabled = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        deterministic(3, threads=1)
        first = torch.rand(4)
        assert torch.are_deterministic_algorithms_enabled() and torch.get_num_threads() == 1
        deterministic(3, threads=1)
        assert torch.equal(first, torch.rand(4))
    finally:
        torch.use_deterministic_algorithms(enabled)
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_deterministic_kernels_in_warn_only_mode_without_loading_torch_compile():
    """A job's setup switches the kernels as torch.use_deterministic_algorithms(True, warn_only=True)
    does, without importing torch._inductor (seconds per job); a process that has loaded it gets the
    public call, which also makes torch.compile deterministic."""
    setup = "import sys, torch; from dualrs.seeding import deterministic; "
    state = "torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()"
    fresh = setup + f"deterministic(0, 1); print({state}, 'torch._inductor' in sys.modules)"
    compiled = setup + f"import torch._inductor.config as c; deterministic(0, 1); print({state}, c.deterministic)"
    for code, expected in ((fresh, "True True False"), (compiled, "True True True")):
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert result.stdout.split() == expected.split(), (code, result.stdout, result.stderr[-2000:])


@pytest.fixture
def second_run(tmp_path):
    """The tiny DDPM experiment run again, alone (the shared run had both tiny experiments' jobs interleaved):
    every kind of training job (DDPM, classifier, estimator, routing and finetuning), every kind of
    certificate and the experiment's table. (That a served job writes what it writes alone is
    tests/test_jobserver.py's.)"""
    shutil.copytree(REPO / "config", tmp_path / "config")
    snakemake(tmp_path, "results/tables/tiny_dds.csv", "--cores", "2", "--configfile", str(TINY))
    return tmp_path


def served_logs(run: Path) -> tuple[int, int]:
    """(job logs of the tiny_dds experiment, how many of them a job server's child wrote)."""
    logs = list((run / "logs" / "tiny_dds").rglob("*.log"))
    return len(logs), sum("forked by job server" in log.read_text() for log in logs)


@pytest.mark.slow
def test_two_runs_give_the_same_models_certificates_and_tables(tiny_run, second_run):
    a, b = tiny_run, second_run
    for jobs, served in (served_logs(a), served_logs(b)):
        assert served >= jobs // 2, (jobs, served)  # the first jobs start before the server listens
    assert differing_files(a, b, ["results/tiny_dds/models"], "*.safetensors") == []
    assert differing_files(a, b, ["results/tiny_dds/certify", "results/tiny_dds/labels"]) == []
    assert differing_files(a, b, ["results/tables"], "tiny_dds*") == []
