"""Shared helper of the workflow tests: run this repository's Snakefile in a work directory.

Snakemake runs as ``python -m snakemake`` would, in a process forked from one that has imported it
(multiprocessing's forkserver, one per test process): importing Snakemake, its plugins and their
pandas and SQLAlchemy costs a new interpreter about 1 of the 2 CPU-seconds of a dry run of the tiny
config, and the suite starts Snakemake about 180 times. The forked process gets the command's working
directory, environment, ``sys.argv`` and the ``sys.path`` a new interpreter would have there; its output
goes to files, read back as ``subprocess.run(..., capture_output=True, text=True)`` returns it. A command
whose environment changes what Python reads at start-up (``PYTHON*`` variables) gets a new interpreter.
"""
import functools
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "configs" / "tiny.yaml"  # the whole DAG in two minutes: experiments tiny and tiny_dds
FORKSERVER = multiprocessing.get_context("forkserver")
FORKSERVER.set_forkserver_preload(["snakemake.cli"])


def startup_variables(env: Mapping[str, str]) -> dict[str, str]:
    """What of ``env`` Python reads when it starts (PYTHONPATH, PYTHONHASHSEED, ...)."""
    return {key: value for key, value in env.items() if key.startswith("PYTHON")}


STARTUP = startup_variables(os.environ)  # this process's, before any test changes them: the fork server's
FORKED: list[int] = []  # the processes forked so far (the fork server runs from the first one on)


@functools.cache
def fresh_sys_path() -> tuple[str, ...]:
    """``sys.path`` of a new interpreter started with STARTUP, without its first entry (the working directory
    for ``python -m``)."""
    env = {**{key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}, **STARTUP}
    listed = subprocess.run([sys.executable, "-c", "import json, sys; print(json.dumps(sys.path[1:]))"],
                            capture_output=True, text=True, check=True, env=env).stdout
    return tuple(json.loads(listed))


def venv_environment() -> dict[str, str]:
    """This process's environment with this venv's executables (``dualrs``, ``snakemake``) first on PATH."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def _snakemake_main(args: list[str], cwd: str, env: dict[str, str], sys_path: list[str], out: str, err: str) -> None:
    """Body of the forked process: ``python -m snakemake *args`` in ``cwd`` with ``env``."""
    import snakemake
    from snakemake.cli import main
    from snakemake.workflow import Workflow

    os.chdir(cwd)
    Workflow._rundir = cwd  # the "Run directory" Snakemake takes from the working directory it is imported in
    os.environ.clear()
    os.environ.update(env)
    sys.path[:] = [cwd, *sys_path]
    sys.argv = [str(Path(snakemake.__file__).with_name("__main__.py")), *args]
    for path, fd in ((out, 1), (err, 2)):
        with open(path, "wb") as file:
            os.dup2(file.fileno(), fd)
    main(args)


def run_snakemake(args: Sequence[str], cwd: Path | str, env: Mapping[str, str] | None = None
                  ) -> subprocess.CompletedProcess:
    """``python -m snakemake *args`` in ``cwd`` with ``env`` (default: this process's), as
    ``subprocess.run(..., capture_output=True, text=True)``; forked as the module docstring says."""
    env = dict(os.environ if env is None else env)
    command = [sys.executable, "-m", "snakemake", *args]
    # the fork server starts at the first fork, with this process's environment of then
    if startup_variables(env) != STARTUP or not (FORKED or startup_variables(os.environ) == STARTUP):
        return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    with tempfile.TemporaryDirectory() as folder:
        out, err = Path(folder, "stdout"), Path(folder, "stderr")
        process = FORKSERVER.Process(target=_snakemake_main, args=(
            list(args), str(Path(cwd).resolve()), env, list(fresh_sys_path()), str(out), str(err)))
        process.start()
        FORKED.append(process.pid)
        process.join()
        return subprocess.CompletedProcess(command, process.exitcode, out.read_text(), err.read_text())


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``snakemake --snakefile <repo>/Snakefile --directory workdir *args`` with this venv's tools on PATH;
    with ``check``, a failure raises with the end of Snakemake's output."""
    result = run_snakemake(["--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), *args],
                           cwd=Path.cwd(), env=venv_environment())
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def fake_paper_weights(workdir: Path) -> None:
    """Stand-ins at the paths config/config.yaml gives for the paper's checkpoints, enough for dry runs: empty
    classifier files, and denoiser folders with the UNet and scheduler configs a plan looks for."""
    for path in ("cifar10/improved_diffusion_50M", "imagenet/guided_diffusion_256_uncond"):
        for config in ("unet/config.json", "scheduler/scheduler_config.json"):
            (workdir / "models" / path / config).parent.mkdir(parents=True, exist_ok=True)
            (workdir / "models" / path / config).write_text("{}")
    for path in ("cifar10/vit_base_patch16_224_cifar10.safetensors", "imagenet/beit_large_patch16_512.safetensors"):
        (workdir / "models" / path).touch()


def tiny_experiment(label: str, certify: str, batch_size: int) -> str:
    """A config of one experiment ``tiny`` on digits (Σ = {0.25, 0.5}, one-epoch CNNs) with the given
    ``label`` and ``certify`` mappings (YAML flow text, e.g. ``{n0: 8, n: 16, alpha: 0.01}``)."""
    return f"""
experiments:
  tiny:
    data: digits
    sigmas: [0.25, 0.5]
    classifier:
      arch: digits_cnn
      train: {{epochs: 1, batch_size: 128, lr: 0.003}}
    estimator:
      arch: digits_cnn
      train: {{epochs: 1, batch_size: 128, lr: 0.003}}
    label: {label}
    certify: {certify}
    batch_size: {batch_size}
"""
