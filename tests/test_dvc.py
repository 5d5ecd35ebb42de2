"""DVC: dvc.yaml's stages match the default targets and what Snakemake makes; repro, metrics, plots and a
push/pull round trip in a throwaway git repository (Snakemake replaced by a fast stand-in there)."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
# What a DVC project needs from this repository; dualrs/ and workflow/ are stage dependencies.
TRACKED = ["dvc.yaml", "data.dvc", ".dvcignore", ".gitignore", ".dvc/config", ".dvc/plots", "Snakefile",
           "workflow", "config", "dualrs"]

# Writes what one experiment's Snakemake run writes; like Snakemake, it keeps a checkpoint that exists.
STAND_IN = textwrap.dedent('''\
    #!{python}
    import json, os, sys
    from pathlib import Path
    name = Path(sys.argv[-1]).stem
    for folder in ("data/digits", f"results/{{name}}/models", f"results/{{name}}/certify/dual",
                   f"results/figures/{{name}}", "results/tables"):
        Path(folder).mkdir(parents=True, exist_ok=True)
    if not Path("data/digits/READY").exists():
        Path("data/digits/test.npz").write_bytes(os.urandom(1 << 12))
        Path("data/digits/READY").touch()
    checkpoint = Path(f"results/{{name}}/models/estimator_it0.safetensors")
    if not checkpoint.exists():
        checkpoint.write_bytes(os.urandom(1 << 16))
    Path(f"results/{{name}}/certify/dual/it0.tsv").write_text("idx\\tlabel\\tpredict\\tradius\\n0\\t3\\t3\\t0.4\\n")
    for ext in ("csv", "md", "tex"):
        Path(f"results/tables/{{name}}.{{ext}}").write_text("method,r=0.25\\ndual,50.0\\n")
    Path(f"results/figures/{{name}}/certified_accuracy.png").write_bytes(b"png")
    Path(f"results/tables/{{name}}.json").write_text(json.dumps({{"dual": {{"r=0.25": 50.0, "ACR": 0.31}}}}))
    Path(f"results/tables/{{name}}_curve.csv").write_text(
        "method,radius,certified_accuracy\\ndual,0.0,60.0\\ndual,0.25,50.0\\nglobal,0.0,58.0\\nglobal,0.25,52.0\\n")
''').format(python=sys.executable)


def run(cwd: Path, *command: str, env: dict | None = None) -> str:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env)
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


def dvc(cwd: Path, *args: str, env: dict) -> str:
    return run(cwd, str(VENV_BIN / "dvc"), *args, env=env)


def git(cwd: Path, *args: str) -> str:
    return run(cwd, "git", "-c", "user.name=dualrs", "-c", "user.email=dualrs@localhost", *args)


@pytest.fixture
def project(tmp_path):
    """A git repository holding this project's DVC setup, and an environment whose `snakemake` is the stand-in."""
    root = tmp_path / "project"
    for name in TRACKED:
        source, target = REPO / name, root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, target)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "project")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "snakemake").write_text(STAND_IN)
    (bin_dir / "snakemake").chmod(0o755)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    return root, env


def default_targets() -> list[str]:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())["default_targets"]


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_one_stage_per_default_target(project):
    root, env = project
    stages = dvc(root, "stage", "list", "--name-only", env=env).split()
    assert sorted(stages) == sorted(f"experiment@{name}" for name in default_targets())


def test_every_tracked_output_is_made_by_the_workflow(project):
    """Each out, metric and plot of dvc.yaml is a Snakemake output of its experiment's DAG (or holds some)."""
    root, env = project
    names = default_targets()
    summary = run(root, sys.executable, "-m", "snakemake", "-n", "--summary", "--cores", "1",
                  *[f"results/tables/{name}.csv" for name in names])
    made = [line.split("\t")[0] for line in summary.splitlines()[1:] if line.startswith(("results/", "data/"))]
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]["experiment"]["do"]
    for name in names:
        for kind in ("outs", "metrics", "plots"):
            for entry in stages[kind]:
                path = next(iter(entry)).replace("${item}", name)
                assert any(p == path or p.startswith(path + "/") for p in made), f"{kind}: nothing makes {path}"


def test_repro_metrics_plots_and_a_push_pull_round_trip(project, tmp_path):
    root, env = project
    log = dvc(root, "repro", env=env)
    assert all(f"Running stage 'experiment@{name}'" in log for name in default_targets())
    name = default_targets()[0]
    checkpoint = root / "results" / name / "models" / "estimator_it0.safetensors"
    before = md5(checkpoint)

    metrics = json.loads(dvc(root, "metrics", "show", "--json", env=env))[""]  # "": the workspace
    assert metrics["data"][f"results/tables/{name}.json"]["data"] == {"dual": {"r=0.25": 50.0, "ACR": 0.31}}
    plots = json.loads(dvc(root, "plots", "show", "--json", env=env))["data"][f"results/tables/{name}_curve.csv"]
    encoding = plots[0]["content"]["encoding"]
    assert (encoding["x"]["field"], encoding["y"]["field"], encoding["color"]["field"]) == (
        "radius", "certified_accuracy", "method")

    # persist: DVC keeps outputs when it reruns a stage, so the pipeline's own logic decides what to redo
    dvc(root, "repro", "--force", f"experiment@{name}", env=env)
    assert md5(checkpoint) == before
    assert "didn't change, skipping" in dvc(root, "repro", env=env)

    dataset = root / "data" / "digits" / "test.npz"
    data_before = md5(dataset)
    dvc(root, "add", "data", env=env)  # record the prepared datasets in data.dvc
    dvc(root, "remote", "add", "--default", "local", str(tmp_path / "remote"), env=env)
    dvc(root, "push", env=env)
    for folder in ("results", "data", ".dvc/cache"):
        shutil.rmtree(root / folder)
    dvc(root, "pull", env=env)
    assert md5(checkpoint) == before and md5(dataset) == data_before
    assert "up to date" in dvc(root, "status", env=env)


def test_repro_in_a_fresh_clone(project, tmp_path):
    """A clone has no cache and no outputs: `dvc repro` runs every stage from the committed files alone."""
    root, env = project
    dvc(root, "repro", env=env)
    git(root, "add", "dvc.lock")
    git(root, "commit", "-q", "-m", "results")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(root), str(clone))
    log = dvc(clone, "repro", env=env)
    assert all(f"Running stage 'experiment@{name}'" in log for name in default_targets())
    assert (clone / "results" / "tables" / f"{default_targets()[0]}.json").is_file()


def test_data_dvc_records_the_datasets_prepare_data_writes(project):
    """`dvc add data` after preparing the digits as the pipeline does leaves data.dvc unchanged."""
    root, env = project
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    run(root, sys.executable, "-m", "dualrs", "prepare-data", "--dataset", "digits", "--root", "data/digits",
        "--data-options", json.dumps(config["data"]["digits"]), "--seed", str(config["seed"]))
    before = (root / "data.dvc").read_text()
    dvc(root, "add", "data", env=env)
    assert (root / "data.dvc").read_text() == before
