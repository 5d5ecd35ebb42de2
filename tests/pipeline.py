"""Shared helper of the workflow tests: run this repository's Snakefile in a work directory."""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "configs" / "tiny.yaml"  # the whole DAG in two minutes: experiments tiny and tiny_dds


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``snakemake --snakefile <repo>/Snakefile --directory workdir *args`` with this venv's tools on PATH;
    with ``check``, a failure raises with the end of Snakemake's output."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
                             "--directory", str(workdir), *args], capture_output=True, text=True, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def fake_paper_weights(workdir: Path) -> None:
    """Empty stand-ins at the paths config/config.yaml gives for the paper's checkpoints (enough for dry runs)."""
    for path in ("cifar10/improved_diffusion_50M", "imagenet/guided_diffusion_256_uncond"):
        (workdir / "models" / path).mkdir(parents=True)
    for path in ("cifar10/vit_base_patch16_224_cifar10.safetensors", "imagenet/beit_large_patch16_512.safetensors"):
        (workdir / "models" / path).touch()
