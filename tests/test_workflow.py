"""The Snakemake workflow: a whole-DAG run on a tiny config, the paper's DAGs dry-run, config errors."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipeline import REPO, TINY, fake_paper_weights, run_snakemake, snakemake, venv_environment


@pytest.fixture
def workdir(tmp_path):
    shutil.copytree(REPO / "config", tmp_path / "config")
    return tmp_path


@pytest.mark.slow
def test_whole_dag_on_a_tiny_config(tiny_run):
    workdir = tiny_run
    oracle, cascades = "oracle over global σ (not a certificate)", ["cascade (Multiscale, as published)",
                                                                     "cascade (union bound)"]
    rows = {"tiny": ["global σ=0.25", "global σ=0.5", oracle, "expert dds-0.5", *cascades, "dual (off-the-shelf)",
                     "dual (finetuned)", "dual (finetuned, estimator retrained, round 1)", "router"],
            "tiny_dds": ["global σ=0.25", "global σ=0.5", oracle, *cascades, "dual (off-the-shelf)",
                         "dual (finetuned)"]}
    for name, methods in rows.items():
        table = pd.read_csv(workdir / "results" / "tables" / f"{name}.csv", index_col="method")
        assert list(table.index) == methods and (table["n"] == table["n"].iloc[0]).all()
        assert ((table.filter(like="r=") >= 0) & (table.filter(like="r=") <= 100)).all().all()
        figures = workdir / "results" / "figures" / name
        for figure in ("certified_accuracy", "delta_rc_ecdf"):
            assert (figures / f"{figure}.png").stat().st_size > 0 and (figures / f"{figure}.pdf").stat().st_size > 0
        assert (workdir / "results" / "tables" / f"{name}.json").stat().st_size > 0
    for stem in ("it1", "finetuned_it1"):
        dual = pd.read_csv(workdir / "results" / "tiny" / "certify" / "dual" / f"{stem}.tsv", sep="\t")
        assert list(dual["idx"]) == list(range(0, 540, 30))
        assert ((dual["radius"] <= dual[["r_sigma", "r_c"]].min(axis=1) + 1e-9) | (dual["predict"] == -1)).all()
    # the paper's headline row: round-0 estimator, no relabelling or estimator retraining
    assert not (workdir / "results" / "tiny_dds" / "models" / "estimator_it1.safetensors").exists()
    assert not (workdir / "results" / "tiny_dds" / "labels" / "it1").exists()
    assert (workdir / "results" / "tiny_dds" / "models" / "denoiser").is_dir()
    assert (workdir / "results" / "tiny_dds" / "models" / "it1" / "classifier_shared.safetensors").is_file()
    routed = pd.read_csv(workdir / "results" / "tiny" / "certify" / "router.tsv", sep="\t")
    assert set(routed["expert"].dropna()) <= {"noise-0.25", "noise-0.5", "dds-0.5"}
    assert ((routed["radius"] <= routed[["r_sigma", "r_c"]].min(axis=1) + 1e-9) | (routed["predict"] == -1)).all()
    for variant in ("published", "union_bound"):
        cascade = pd.read_csv(workdir / "results" / "tiny" / "certify" / f"cascade_{variant}.tsv", sep="\t")
        assert set(cascade["stage"]) <= {0, 1} and set(cascade["sigma"].dropna()) <= {0.25, 0.5}
    # everything is up to date afterwards: nothing to rerun
    assert "Nothing to be done" in snakemake(workdir, "-n", "--cores", "2", "--configfile", str(TINY)).stdout


def test_a_mixed_noise_classifier_is_trained_once_for_every_sigma_and_finetuned_once(workdir):
    name = "digits16_contrast_shared"
    out = snakemake(workdir, f"results/tables/{name}.csv", "-n", "-p", "--cores", "2").stdout
    models = f"results/{name}/models"
    assert "--sigma 0.25 0.5 " in out and f"--out {models}/classifier_mixed.safetensors" in out
    assert out.count("dualrs train-classifier") == 1 and out.count("dualrs finetune") == 1
    assert f"--classifier 0.5={models}/it1/classifier_shared.safetensors" in out


@pytest.mark.slow
@pytest.mark.parametrize("name,certify_jobs", [("cifar10", 3 * 8 + 2 * 8), ("imagenet", 2 * 16 + 2 * 16)])
def test_paper_dags_list_every_denoised_smoothing_job(workdir, name, certify_jobs):
    fake_paper_weights(workdir)
    out = snakemake(workdir, f"results/tables/{name}.csv", "-n", "--cores", "8", "--resources", "gpu=4").stdout
    counts = {line.split()[0]: int(line.split()[1]) for line in out.splitlines()
              if len(line.split()) == 2 and line.split()[1].isdigit()}
    # global sigmas, the round-0 estimator with round-0 and with finetuned classifiers (Table 1's rows)
    assert counts["certify_global"] + counts["certify_dual"] + counts["certify_dual_finetuned"] == certify_jobs
    assert counts["train_estimator"] == 1 and "certify_training_set" in counts
    assert counts["fetch_pretrained"] == 1 and counts["report"] == 1 and counts["prepare_data"] == 1
    assert "--denoiser models/" in snakemake(workdir, "-n", "-p", "--cores", "8", f"results/tables/{name}.csv").stdout


@pytest.mark.slow
def test_missing_weights_name_the_path_and_the_config_key(workdir):
    result = snakemake(workdir, "-n", "--cores", "1", "results/tables/cifar10.csv", check=False)
    assert result.returncode != 0
    text = result.stdout + result.stderr
    assert "experiments.cifar10.classifier.weights" in text or "experiments.cifar10.denoiser.path" in text
    assert "models/cifar10/" in text


def test_invalid_config_is_rejected_before_any_job(workdir):
    bad = workdir / "bad.yaml"
    bad.write_text("experiments:\n  tiny:\n    data: digits\n    sigmas: [0.25, -0.5]\n")
    result = snakemake(workdir, "-n", "--cores", "1", "--configfile", str(bad), check=False)
    assert result.returncode != 0 and "sigmas" in (result.stdout + result.stderr)
    assert not (workdir / "results").exists()


@pytest.mark.parametrize("config", ["tiny.yaml", "bad.yaml"])
def test_forked_snakemake_prints_what_a_new_interpreter_prints(workdir, config):
    """tests/pipeline.py's run_snakemake forks Snakemake from a process that has imported it: a dry run, and a
    refused configuration, print the words ``python -m snakemake`` prints on each line (but for the date, the
    run's ID, the timestamps and job numbers) and exit with its status."""
    shutil.copy2(TINY, workdir / "tiny.yaml")
    (workdir / "bad.yaml").write_text("experiments:\n  tiny:\n    data: digits\n    sigmas: [0.25, -0.5]\n")
    args = ["results/tables/tiny.csv", "-n", "--cores", "1", "--snakefile", str(REPO / "Snakefile"),
            "--configfile", config]
    env = venv_environment()
    forked = run_snakemake(args, cwd=workdir, env=env)
    fresh = subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=workdir, env=env, capture_output=True,
                           text=True)

    def stable(text: str) -> list[list[str]]:
        """The words of each line, and the lines, sorted: Snakemake lists jobs and files in an order that varies
        from run to run (it follows string hashes)."""
        text = re.sub(r"^  (Date|Workflow ID): .*$", r"  \1", text, flags=re.MULTILINE)
        text = re.sub(r"^\[\w{3} \w{3} +\d+ [\d:]+ \d{4}\]$", "[time]", text, flags=re.MULTILINE)
        text = re.sub(r"jobid: \d+", "jobid", text)
        return sorted(sorted(line.replace(",", " ").split()) for line in text.splitlines())

    assert forked.returncode == fresh.returncode == (0 if config == "tiny.yaml" else 1)
    assert stable(forked.stdout) == stable(fresh.stdout) and stable(forked.stderr) == stable(fresh.stderr)
    assert f"Run directory: {workdir}" in forked.stdout or config == "bad.yaml"


def test_lint_is_clean():
    result = run_snakemake(["--lint", "--snakefile", str(REPO / "Snakefile"), "--directory", str(REPO)], cwd=Path.cwd())
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_are_snakefmt_clean():
    """The Snakefile and every rule file are formatted as snakefmt (the workflow catalog's formatter) writes them."""
    result = subprocess.run([sys.executable, "-m", "snakefmt", "--check", "Snakefile", "workflow"], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_conda_env_installs_the_tested_versions_and_this_package():
    """workflow/envs/dualrs.yaml (for `--software-deployment-method conda`) installs requirements.txt and the
    package itself, paths relative to its folder, on a Python that pyproject.toml admits."""
    import yaml

    env_file = REPO / "workflow" / "envs" / "dualrs.yaml"
    env = yaml.safe_load(env_file.read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert (env_file.parent / pip[0].removeprefix("-r ")).resolve() == REPO / "requirements.txt"
    assert (env_file.parent / pip[1].removeprefix("-e ")).resolve() == REPO
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    assert tuple(int(v) for v in python.split("=")[1].split(".")) >= (3, 10)
    # every rule that runs a command declares the environment (`use rule ... with:` inherits it)
    for path in (REPO / "workflow" / "rules").glob("*.smk"):
        for block in path.read_text().split("\nrule ")[1:]:
            if "shell:" in block:
                assert 'conda:\n        "../envs/dualrs.yaml"' in block, f"{path.name}: rule {block.split(':')[0]}"


def test_every_rule_says_what_its_job_does(workdir):
    """`snakemake --list-rules` (README, "The paper's steps in the workflow"): a description for every rule."""
    listed = snakemake(workdir, "--list-rules").stdout
    rules = re.findall(r"^(\w+)(?: \((.+)\))?$", listed, re.MULTILINE)
    assert len(rules) >= 30 and {"certify_dual", "train_estimator", "ablation_estimator"} <= {r for r, _ in rules}
    assert [rule for rule, description in rules if not description] == []
