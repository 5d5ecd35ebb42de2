"""The paper's two DAGs (cifar10, imagenet) run end to end on stand-ins in the real on-disk formats.

tests/standins.py writes torchvision's CIFAR-10 batches, ImageNet ImageFolders of JPEGs, the two converted
openai denoisers and timm classifier weights; tests/configs/paper_standins.yaml only shrinks sizes.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from dualrs.published import published_table
from pipeline import run_snakemake, venv_environment
from standins import OVERLAY, REPO, merged_config, write_standins

EXPERIMENTS = ("cifar10", "imagenet")
TARGETS = [f"results/tables/{name}.csv" for name in EXPERIMENTS]
ORACLE = "oracle over global σ (not a certificate)"
LATER_ROWS = ["cascade (Multiscale, as published)", "cascade (union bound)", "dual (off-the-shelf)", "dual (finetuned)"]


@dataclass
class PaperRun:
    work: Path
    env: dict[str, str]
    planned: Counter
    ran: Counter
    output: str
    seconds: float


def copy_repository(work: Path) -> None:
    """The repository's files (tracked, and untracked but not ignored) as they are in the working tree."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, work / name)


def snakemake(run_dir: Path, env: dict[str, str], targets: list[str], *flags: str) -> str:
    """``snakemake --cores 2 --configfile <overlay> *flags -- *targets`` in ``run_dir``; its output, or a failure
    with its end."""
    result = run_snakemake(["--cores", "2", "--resources", "gpu=2", *flags, "--configfile",
                            str(OVERLAY.relative_to(REPO)), "--", *targets], cwd=run_dir, env=env)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(flags)} {' '.join(targets)} failed:\n{output[-6000:]}")
    return output


def planned_jobs(output: str) -> Counter:
    """Jobs per rule of a run's "Job stats" table."""
    table = output.split("Job stats:", 1)[1].split("total", 1)[0]
    return Counter({m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.MULTILINE)})


def finished_jobs(output: str) -> Counter:
    return Counter(re.findall(r"Finished jobid: \d+ \(Rule: (\w+)\)", output))


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory: pytest.TempPathFactory) -> PaperRun:
    work = tmp_path_factory.mktemp("paper_dags")
    copy_repository(work)
    site = write_standins(work)
    env = {**venv_environment(),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    planned = planned_jobs(snakemake(work, env, TARGETS, "-n"))
    start = time.perf_counter()
    output = snakemake(work, env, TARGETS)
    seconds = time.perf_counter() - start
    print(f"paper DAGs on stand-ins: {seconds:.0f} s, jobs per rule {dict(finished_jobs(output))}")
    return PaperRun(work, env, planned, finished_jobs(output), output, seconds)


@pytest.mark.slow
def test_every_planned_job_ran(paper_run: PaperRun) -> None:
    assert paper_run.ran == paper_run.planned
    for rule in ("prepare_data", "fetch_pretrained", "certify_training_set", "train_estimator", "route_training_set",
                 "finetune_shared_classifier", "certify_global", "certify_cascade", "certify_dual",
                 "certify_dual_finetuned", "merge_training_set_certificates", "merge_global_certificates",
                 "merge_dual_certificates", "merge_cascade_certificates", "report"):
        assert paper_run.ran[rule] > 0, rule


@pytest.mark.slow
def test_models_run_behind_the_configured_denoisers(paper_run: PaperRun) -> None:
    config = merged_config()
    for name in EXPERIMENTS:
        assert f"--denoiser {config['experiments'][name]['denoiser']['path']} " in paper_run.output


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_tables_and_figures(paper_run: PaperRun, name: str) -> None:
    sigmas = sorted(float(s) for s in merged_config()["experiments"][name]["sigmas"])
    table = pd.read_csv(paper_run.work / "results" / "tables" / f"{name}.csv", index_col="method")
    assert list(table.index) == [*(f"global σ={s:g}" for s in sigmas), ORACLE, *LATER_ROWS]
    assert ((table.filter(like="r=") >= 0) & (table.filter(like="r=") <= 100)).all().all()
    figures = paper_run.work / "results" / "figures" / name
    for figure in ("certified_accuracy", "delta_rc_ecdf", "vs_paper"):
        for ext in ("png", "pdf"):
            assert (figures / f"{figure}.{ext}").stat().st_size > 0
    # every published radius of the paper's finetuned row is compared with this run's
    comparison = pd.read_csv(paper_run.work / "results" / "tables" / f"{name}_vs_paper.csv")
    accuracy = comparison[comparison["metric"] == "certified accuracy (%)"]
    assert sorted(accuracy["radius"]) == sorted(published_table(name)["radius"])
    assert (accuracy["method"] == "dual (finetuned)").all()
    assert ((accuracy["ci_low"] <= accuracy["reproduced"]) & (accuracy["reproduced"] <= accuracy["ci_high"])).all()


@pytest.mark.slow
def test_second_dry_run_has_nothing_to_do(paper_run: PaperRun) -> None:
    assert "Nothing to be done" in snakemake(paper_run.work, paper_run.env, TARGETS, "-n")


@pytest.mark.slow
def test_cifar10_ablations_plan(paper_run: PaperRun) -> None:
    keys = merged_config()["experiments"]["cifar10"]["ablations"]
    tables = [f"results/tables/ablations/cifar10_{key}.csv" for key in keys]
    planned = planned_jobs(snakemake(paper_run.work, paper_run.env, tables, "-n"))
    assert planned["ablation_report"] == len(keys) and planned["ablation_estimator"] > 0
    assert planned["ablation_certify"] > 0 and planned["ablation_certify_training_set"] > 0


@pytest.mark.slow
def test_gpu_check_without_cuda_exits_2() -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py")], env=env,
                            capture_output=True, text=True)
    assert result.returncode == 2 and result.stdout == ""
    assert "no CUDA device" in result.stderr
