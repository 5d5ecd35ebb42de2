"""Cluster execution: every rule declares its resources; profiles/slurm maps them to sbatch; and on a real
Slurm cluster (scripts/local_slurm.sh brings up a single-node one on this machine) the `tiny` experiment
runs through snakemake-executor-plugin-slurm, GPU jobs included, with certificates equal to a local run's."""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from dualrs.cli import HOST_COMMANDS
from pipeline import REPO, TINY, fake_paper_weights, run_snakemake, venv_environment

SCRIPT = REPO / "scripts" / "local_slurm.sh"
TARGET = "results/tables/tiny.csv"

MERGE_RULES = {f"merge_{kind}" for kind in ("training_set_certificates", "global_certificates", "dual_certificates",
                                           "cascade_certificates", "router_certificates",
                                           "expert_training_set_certificates", "expert_certificates",
                                           "ablation_certificates", "ablation_training_set_certificates")}
LOCAL_RULES = {"prepare_data", "report", *MERGE_RULES}


def rule_definitions() -> dict[str, str]:
    """Body of every ``rule NAME:`` of workflow/rules/*.smk; a ``use rule PARENT as NAME with:`` has its parent's
    body followed by its overrides."""
    rules, uses = {}, []
    for path in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        text = path.read_text()
        for match in re.finditer(r"^rule (\w+):\n((?:[ \t].*\n|\n)*)", text, re.MULTILINE):
            rules[match.group(1)] = match.group(2)
        uses += re.findall(r"^use rule (\w+) as (\w+) with:\n((?:[ \t].*\n|\n)*)", text, re.MULTILINE)
    while uses:  # a parent may itself be a ``use rule``, in any file
        ready = [use for use in uses if use[0] in rules]
        assert ready, f"use rule of an undefined rule: {uses}"
        for parent, name, overrides in ready:
            rules[name] = rules[parent] + overrides
            uses.remove((parent, name, overrides))
    return rules


def local_rules() -> set[str]:
    names = set()
    for path in (REPO / "workflow" / "rules").glob("*.smk"):
        for block in re.findall(r"^localrules:\n((?:    \w+,\n)+)", path.read_text(), re.MULTILINE):
            names |= set(re.findall(r"\w+", block))
    return names


def command_of(body: str) -> str:
    """The ``dualrs`` command a rule's shell runs."""
    return re.search(r'"dualrs (\S+)', body).group(1)


def test_every_job_declares_threads_memory_runtime_and_gpu_where_it_runs_a_model():
    rules = {name: body for name, body in rule_definitions().items() if "shell:" in body}
    assert {"certify_training_set", "certify_global", "report", "prepare_data", *MERGE_RULES} <= set(rules)
    for name, body in rules.items():
        assert "threads:" in body and "mem_mb=" in body and "runtime=" in body, name
        assert ("gpu=" in body) == (command_of(body) not in HOST_COMMANDS), f"{name} runs dualrs {command_of(body)}"
    host_rules = {name for name, body in rules.items() if command_of(body) in HOST_COMMANDS}
    assert LOCAL_RULES <= local_rules() <= host_rules


@pytest.mark.slow
def test_slurm_profile_submits_the_paper_jobs_with_their_resources(tmp_path):
    """A dry run of CIFAR-10 with profiles/slurm: each job's sbatch resources, from the experiment's block."""
    shutil.copytree(REPO / "config", tmp_path / "config")
    fake_paper_weights(tmp_path)
    result = run_snakemake(["results/tables/cifar10.csv", "-n", "--snakefile", str(REPO / "Snakefile"),
                            "--workflow-profile", str(REPO / "profiles" / "slurm")], cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    jobs = {}
    for name, line in re.findall(r"^rule (\w+):\n(?:    .*\n)*?    resources: (.*)$", result.stdout, re.MULTILINE):
        jobs.setdefault(name, []).append(dict(item.split("=", 1) for item in line.split(", ")))
    gpu_job = {"gpu": "1", "cpus_per_gpu": "1", "mem_mb": "32000", "runtime": "1440"}
    for name in ("certify_training_set", "train_estimator", "certify_global", "certify_dual"):
        assert jobs[name] and all({key: job.get(key) for key in gpu_job} == gpu_job for job in jobs[name]), name
    assert jobs["fetch_pretrained"] and all("gpu" not in job for job in jobs["fetch_pretrained"])
    # the partition is the plugin's choice from profiles/slurm/partitions.yaml, by the gpu resource
    assert not [job for found in jobs.values() for job in found if "slurm_partition" in job]


def tiny_only(path: Path) -> Path:
    """The tiny experiment alone, its model rules asking for one GPU each (its router needs tiny_dds), in one
    shard per labelling and certification (the same certificates as the suite's two-shard local run)."""
    tiny = yaml.safe_load(TINY.read_text())["experiments"]["tiny"]
    tiny.pop("router", None)
    for step in ("label", "certify"):
        tiny[step]["shards"] = 1
    tiny["resources"] = {"gpu": 1, "mem_mb": 1000, "runtime": 30}
    path.write_text(yaml.safe_dump({"default_targets": ["tiny"], "experiments": {"tiny": tiny}}))
    return path


LOCAL_PARTITIONS = {"gpu": "local_gpu", "cpu": "local_cpu"}  # scripts/local_slurm.sh's


def local_profile(folder: Path) -> Path:
    """profiles/slurm on the local cluster: its partitions.yaml with the entries renamed to the cluster's
    partitions (as profiles/README.md says), one CPU per GPU, squeue and quick status checks."""
    source = REPO / "profiles" / "slurm"
    profile = yaml.safe_load((source / "config.yaml").read_text())
    partitions = yaml.safe_load((source / profile["slurm-partition-config"]).read_text())["partitions"]
    renamed = {LOCAL_PARTITIONS["gpu" if limits.get("max_gpu", 0) > 0 else "cpu"]: limits
               for limits in partitions.values()}
    assert set(renamed) == set(LOCAL_PARTITIONS.values())
    profile["default-resources"]["cpus_per_gpu"] = 1
    profile.update({"slurm-partition-config": "partitions.yaml", "slurm-init-seconds-before-status-checks": 2,
                    "seconds-between-status-checks": 2, "latency-wait": 5})
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump(profile))
    (folder / "partitions.yaml").write_text(yaml.safe_dump({"partitions": renamed}))
    return folder


def launch(workdir: Path, *args: str, cluster: Path | None = None) -> subprocess.Popen:
    """Snakemake on the tiny target in ``workdir`` (through a local Slurm cluster when ``cluster`` is given);
    its output goes to ``workdir``/run.log."""
    command = [sys.executable, "-m", "snakemake", TARGET, "--snakefile", str(REPO / "Snakefile"), *args]
    if cluster is not None:  # afterwards, list the jobs Slurm ran: comment (rule_<name>...), state, GPUs, partition
        jobs = "squeue --states=all --noheader --Format=Comment:200,State:20,tres-per-job:40,Partition:20"
        command = [str(SCRIPT), "run", str(cluster), "bash", "-c", f'"$@" && {jobs}', "bash", *command]
    env = venv_environment()
    with open(workdir / "run.log", "w") as log:
        return subprocess.Popen(command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, text=True, env=env)


def finish(process: subprocess.Popen, workdir: Path) -> str:
    process.wait()
    log = (workdir / "run.log").read_text()
    assert process.returncode == 0, f"{' '.join(process.args)}:\n{log[-8000:]}"
    return log


def certificates(workdir: Path) -> dict[str, pd.DataFrame]:
    """Every merged certificate table of the run, without its wall-time column."""
    folder = workdir / "results" / "tiny" / "certify"
    return {str(path.relative_to(folder)): pd.read_csv(path, sep="\t").drop(columns="time")
            for path in sorted(folder.rglob("*.tsv")) if "shards" not in path.parts}


def running_commands() -> list[str]:
    commands = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            commands.append(cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:  # the process ended meanwhile
            continue
    return commands


@pytest.fixture
def cluster_dir():
    """A short path: the munge socket lives in it (AF_UNIX paths are limited to 108 bytes)."""
    folder = Path(tempfile.mkdtemp(prefix="dualrs-slurm-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="slurmd and slurmctld run as root")
def test_tiny_experiment_through_slurm_equals_a_local_run(request, tmp_path, cluster_dir):
    config = tiny_only(tmp_path / "tiny.yaml")
    on_slurm = tmp_path / "slurm"
    shutil.copytree(REPO / "config", on_slurm / "config")
    started = time.monotonic()
    # certify_dual without GPU: a CPU-only job, as the model jobs of an experiment with gpu: 0
    slurm_run = launch(on_slurm, "--workflow-profile", str(local_profile(tmp_path / "profile")),
                       "--set-resources", "certify_dual:gpu=0", "--slurm-status-command", "squeue",
                       "--configfile", str(config), cluster=cluster_dir)
    try:  # the suite's local run of the tiny DAG, made meanwhile where no test has asked for it yet
        local = request.getfixturevalue("tiny_run")
    finally:
        log = finish(slurm_run, on_slurm)
    print(f"Slurm run: {time.monotonic() - started:.0f} s (cluster start and stop included)")
    print("\n".join(line for line in log.splitlines() if "SLURM" in line or "localrule" in line)[:3000])
    # the cluster is gone: no daemon of it runs, and the link to its configuration is removed
    assert not [command for command in running_commands() if str(cluster_dir) in command]
    assert not Path("/etc/slurm/slurm.conf").is_symlink()

    submitted = [line for line in log.splitlines() if "has been submitted with SLURM jobid" in line]
    slurm_jobs = [line.split() for line in log.splitlines() if line.startswith("rule_")]
    assert len(slurm_jobs) == len(submitted) > 0
    rules = {comment.split("_wildcards_")[0] for comment, _, _, _ in slurm_jobs}
    assert {"rule_train_classifier", "rule_certify_training_set", "rule_certify_global", "rule_certify_dual"} <= rules
    assert not rules & {f"rule_{name}" for name in LOCAL_RULES}  # localrules ran here
    assert "localrule merge_training_set_certificates" in log and "localrule report" in log
    assert all(state == "COMPLETED" for _, state, _, _ in slurm_jobs)
    for comment, _, gpus, partition in slurm_jobs:  # GPU jobs got a GPU on the GPU partition, CPU jobs none
        cpu_job = comment.startswith("rule_certify_dual_wildcards_")
        assert (gpus, partition) == (("N/A", "local_cpu") if cpu_job else ("gres:gpu:1", "local_gpu")), comment

    # the local run also routed among experts (tiny_only drops the router): its other files are the same
    expected, actual = certificates(local), certificates(on_slurm)
    assert set(actual) >= {"global/sigma0.25.tsv", "global/sigma0.5.tsv", "dual/it0.tsv", "dual/finetuned_it1.tsv"}
    assert set(actual) == set(expected) - {"router.tsv"}
    for name, table in actual.items():
        pd.testing.assert_frame_equal(table, expected[name], obj=name)
    local_table = pd.read_csv(local / TARGET, index_col="method").drop(columns="s/input", errors="ignore")
    slurm_table = pd.read_csv(on_slurm / TARGET, index_col="method").drop(columns="s/input", errors="ignore")
    assert set(local_table.index) - set(slurm_table.index) == {"router", "expert dds-0.5"}
    pd.testing.assert_frame_equal(slurm_table, local_table.loc[slurm_table.index])
