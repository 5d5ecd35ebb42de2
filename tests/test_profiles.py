"""The execution profiles: every key is a Snakemake option, both dry-run in a copy of the repository, and the
Slurm profile sends GPU jobs and CPU jobs to different partitions (the plugin's choice from its partitions.yaml)
with threads matching the CPUs it asks for."""
import logging
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from snakemake.cli import get_argument_parser
from snakemake_executor_plugin_slurm import Executor
from snakemake_executor_plugin_slurm.partitions import Partition, read_partition_file
from snakemake_executor_plugin_slurm.submit_string import get_submit_command
from snakemake_executor_plugin_slurm.utils import set_gres_string

from pipeline import fake_paper_weights, run_snakemake
from test_slurm import local_rules

REPO = Path(__file__).resolve().parents[1]
PROFILES = ("default", "slurm")


def profile(name: str) -> dict:
    return yaml.safe_load((REPO / "profiles" / name / "config.yaml").read_text())


def partitions_file() -> Path:
    """The file profiles/slurm names in slurm-partition-config, found in the profile's folder as Snakemake finds it."""
    return REPO / "profiles" / "slurm" / profile("slurm")["slurm-partition-config"]


class JobResources(dict):
    """A job's resources as the plugin reads them: ``get`` and attribute access."""

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError as error:
            raise AttributeError(name) from error


def sbatch_call(rule: str, resources: dict[str, str], threads: int, partitions: list[Partition]) -> list[str]:
    """The sbatch command line snakemake-executor-plugin-slurm builds for a job (its partition choice included)."""
    job = SimpleNamespace(name=rule, threads=threads, resources=JobResources(
        {key: int(value) if value.isdigit() else value for key, value in resources.items()}))
    executor = SimpleNamespace(_partitions=partitions, _fallback_partition="<no partition fits>",
                               logger=logging.getLogger(__name__))
    params = {"run_uuid": "run", "slurm_logfile": "slurm.log", "comment_str": f"rule_{rule}", "account": "",
              "partition": Executor.get_partition_arg(executor, job), "workdir": None}
    return shlex.split(get_submit_command(job, params) + set_gres_string(job))


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory) -> Path:
    """The working tree's files that git tracks or would track, with the external model files in place."""
    copy = tmp_path_factory.mktemp("repo")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, copy / name)
    fake_paper_weights(copy)
    return copy


def dry_run(workdir: Path, *args: str) -> str:
    result = run_snakemake(["-n", *args], cwd=workdir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def jobs(output: str) -> list[tuple[str, dict[str, str], int]]:
    """Each job of a dry run: its rule, its resources and the ``--threads`` its command gets."""
    found = []
    pattern = r"^(?:local)?rule (\w+):\n(?:    .*\n)*?    resources: (.*)\n(?:Shell command: (.*)\n)?"
    for name, resources, command in re.findall(pattern, output, re.MULTILINE):
        threads = re.search(r"--threads (\d+)", command)
        found.append((name, dict(item.split("=", 1) for item in resources.split(", ")),
                      int(threads.group(1)) if threads else 1))
    return found


@pytest.mark.parametrize("name", PROFILES)
def test_every_profile_key_is_a_snakemake_option(name):
    options = {option for action in get_argument_parser()._actions for option in action.option_strings}
    assert {f"--{key}" for key in profile(name)} <= options


@pytest.mark.parametrize("name", PROFILES)
def test_profile_dry_runs_the_default_targets(repo_copy, name):
    output = dry_run(repo_copy, "--workflow-profile", f"profiles/{name}", "--cores", "2")
    assert "rule train_classifier:" in output


@pytest.mark.slow
def test_slurm_jobs_go_to_the_partition_of_their_kind(repo_copy):
    """The plugin's sbatch call of every job: GPU jobs (cifar10) on the GPU partition with their GPUs and one CPU
    per torch thread, CPU-only jobs (fetch_pretrained; digits, whose model jobs have gpu: 0) on the CPU one."""
    assert profile("slurm")["retries"] >= 1
    partitions = read_partition_file(partitions_file())
    gpu_partition, cpu_partition = ({p.name for p in partitions if (p.limits.max_gpu > 0) == gpu} for gpu in (1, 0))
    assert len(gpu_partition) == len(cpu_partition) == 1
    output = dry_run(repo_copy, "--workflow-profile", "profiles/slurm", "results/tables/cifar10.csv",
                     "results/tables/digits.csv")
    rules = {"gpu": set(), "cpu": set()}
    for name, resources, threads in jobs(output):
        if name in local_rules():
            continue
        call = sbatch_call(name, resources, threads, partitions)
        partition = call[call.index("-p") + 1]
        gpus = int(resources.get("gpu", 0))
        if gpus:
            rules["gpu"].add(name)
            assert {partition} == gpu_partition and f"--gpus={gpus}" in call, (name, call)
            assert f"--cpus-per-gpu={threads}" in call, (name, call)  # one GPU per job: CPUs granted = torch threads
        else:
            rules["cpu"].add(name)
            assert {partition} == cpu_partition and f"--cpus-per-task={threads}" in call, (name, call)
            assert not [option for option in call if option.startswith("--gpus")], (name, call)
    assert {"certify_training_set", "certify_global", "certify_dual"} <= rules["gpu"] & rules["cpu"]
    assert "fetch_pretrained" in rules["cpu"]


def test_slurm_profile_leaves_the_partition_to_the_partitions_file():
    """No slurm_partition in the profile (it would override the choice); the partitions file lies in the profile's
    folder, and its partitions declare the same limits apart from GPUs, so that CPU-only jobs rank the CPU one first."""
    slurm = profile("slurm")
    resources = [slurm.get("default-resources", {}), *slurm.get("set-resources", {}).values()]
    assert not [entry for entry in resources if "slurm_partition" in entry]
    assert partitions_file().parent == REPO / "profiles" / "slurm" and partitions_file().is_file()
    gpu_limits = {"max_gpu", "available_gpu_models", "max_cpus_per_gpu"}
    limits = [{key: value for key, value in vars(p.limits).items() if key not in gpu_limits}
              for p in read_partition_file(partitions_file())]
    assert len(limits) == 2 and limits[0] == limits[1]
