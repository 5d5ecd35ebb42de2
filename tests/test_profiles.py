"""The execution profiles: every key is a Snakemake option, both dry-run in a copy of the repository, and the
Slurm profile sends GPU jobs and CPU jobs to different partitions with threads matching the CPUs it asks for."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.cli import get_argument_parser

from dualrs.cli import HOST_COMMANDS
from test_slurm import command_of, local_rules, rule_definitions

REPO = Path(__file__).resolve().parents[1]
PROFILES = ("default", "slurm")
MODEL_FILES = ("cifar10/vit_base_patch16_224_cifar10.safetensors", "imagenet/beit_large_patch16_512.safetensors")
MODEL_DIRS = ("cifar10/improved_diffusion_50M", "imagenet/guided_diffusion_256_uncond")


def profile(name: str) -> dict:
    return yaml.safe_load((REPO / "profiles" / name / "config.yaml").read_text())


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
    for name in MODEL_DIRS:
        (copy / "models" / name).mkdir(parents=True)
    for name in MODEL_FILES:
        (copy / "models" / name).touch()
    return copy


def dry_run(workdir: Path, *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "snakemake", "-n", *args], cwd=workdir, capture_output=True,
                            text=True)
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


def test_slurm_profile_sends_gpu_and_cpu_jobs_to_their_partitions(repo_copy):
    slurm = profile("slurm")
    assert slurm["retries"] >= 1
    output = dry_run(repo_copy, "--workflow-profile", "profiles/slurm", "results/tables/cifar10.csv")
    partitions = {"gpu": set(), "cpu": set()}
    for name, resources, threads in jobs(output):
        if name in local_rules():
            continue
        kind = "gpu" if int(resources.get("gpu", 0)) else "cpu"
        partitions[kind].add(resources["slurm_partition"])
        if kind == "gpu":
            assert int(resources["cpus_per_gpu"]) == threads, name  # torch threads = CPUs granted per GPU
    assert partitions["gpu"] == {slurm["default-resources"]["slurm_partition"]}
    assert partitions["cpu"] == {slurm["set-resources"]["fetch_pretrained"]["slurm_partition"]}
    assert partitions["gpu"] != partitions["cpu"]


def test_every_cpu_only_job_has_a_cpu_partition():
    """Rules that run a host command outside this process (not localrules) override the GPU partition."""
    slurm = profile("slurm")
    cpu_partition = slurm["set-resources"]["fetch_pretrained"]["slurm_partition"]
    cpu_rules = {name for name, body in rule_definitions().items()
                 if "shell:" in body and command_of(body) in HOST_COMMANDS} - local_rules()
    assert cpu_rules
    assert {name: slurm["set-resources"].get(name, {}).get("slurm_partition") for name in cpu_rules} == \
        dict.fromkeys(cpu_rules, cpu_partition)
