"""DVC: dvc.yaml's stages match the default targets and read what their Snakemake targets read; DVC and Snakemake
agree on what is out of date after a change to a config key, a module or an input; `dvc exp run -S` reaches
Snakemake through params.yaml; repro, metrics, plots and a push/pull round trip in a throwaway git repository
(Snakemake, or the dualrs commands it runs, replaced by fast stand-ins there)."""
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
import yaml

from pipeline import fake_paper_weights, run_snakemake

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
# What a DVC project needs from this repository; dualrs/ and workflow/ are stage dependencies.
TRACKED = ["dvc.yaml", "paper", "params.yaml", ".dvcignore", ".gitignore", ".dvc/config", ".dvc/plots",
           "Snakefile", "workflow", "config", "dualrs"]

# Writes what one experiment's Snakemake run writes (or the prepared digits, for data/digits/READY); like
# Snakemake, it keeps a checkpoint that exists.
STAND_IN = textwrap.dedent('''\
    #!{python}
    import json, os, sys
    from pathlib import Path
    if sys.argv[-1].endswith("/READY"):
        Path("data/digits").mkdir(parents=True, exist_ok=True)
        if not Path("data/digits/READY").exists():
            Path("data/digits/test.npz").write_bytes(os.urandom(1 << 12))
            Path("data/digits/READY").touch()
        sys.exit()
    name = Path(sys.argv[-1]).stem
    if name in ("cifar10", "imagenet"):
        Path(f"data/{{name}}").mkdir(parents=True, exist_ok=True)
        Path(f"data/{{name}}/prepared").write_text(name)
    for folder in (f"results/{{name}}/models", f"results/{{name}}/certify/dual", f"results/figures/{{name}}",
                   "results/tables"):
        Path(folder).mkdir(parents=True, exist_ok=True)
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

# `dualrs`: writes the files a command's arguments name (their content: the command line) without running it,
# so that a real Snakemake run of the digits DAG takes seconds.
FAKE_DUALRS = textwrap.dedent('''\
    #!{python}
    import sys
    from pathlib import Path
    argv = sys.argv[1:]
    text = " ".join(argv)
    def arg(flag):
        return Path(argv[argv.index(flag) + 1]) if flag in argv else None
    if argv[0] == "prepare-data":
        arg("--root").mkdir(parents=True, exist_ok=True)
        (arg("--root") / "test.npz").write_text(text)
        (arg("--root") / "READY").write_text(text)
    elif argv[0] == "report":
        table = arg("--table")
        for suffix in (".csv", ".md", ".tex", ".json", "_curve.csv", "_headroom.csv", "_headroom.md",
                       "_choices.csv", "_choices.md", "_vs_paper.csv", "_vs_paper.md"):
            table.with_name(table.stem + suffix).write_text(text)
        if arg("--figures"):
            arg("--figures").mkdir(parents=True, exist_ok=True)
            (arg("--figures") / "certified_accuracy.png").write_text(text)
    elif argv[0] == "train-denoiser":
        arg("--out").mkdir(parents=True, exist_ok=True)
        (arg("--out") / "unet.safetensors").write_text(text)
    else:
        arg("--out").write_text(text)
        if arg("--out").suffix == ".safetensors":
            arg("--out").with_suffix(".json").write_text(text)
''').format(python=sys.executable)


def run(cwd: Path, *command: str, env: dict | None = None) -> str:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env)
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


def dry_run(cwd: Path, *args: str, env: dict | None = None) -> str:
    """``python -m snakemake *args`` in ``cwd`` (tests/pipeline.py's run_snakemake); its output."""
    result = run_snakemake(args, cwd=cwd, env=env)
    assert result.returncode == 0, f"snakemake {' '.join(args)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


def dvc(cwd: Path, *args: str, env: dict) -> str:
    return run(cwd, str(VENV_BIN / "dvc"), *args, env=env)


def git(cwd: Path, *args: str) -> str:
    return run(cwd, "git", "-c", "user.name=dualrs", "-c", "user.email=dualrs@localhost", *args)


def committed_copy(root: Path) -> Path:
    """This project's DVC setup (the TRACKED files) copied to ``root`` and committed in a new git repository."""
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
    return root


@pytest.fixture
def project(tmp_path):
    """A git repository holding this project's DVC setup, and an environment whose `snakemake` is the stand-in."""
    root = committed_copy(tmp_path / "project")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "snakemake").write_text(STAND_IN)
    (bin_dir / "snakemake").chmod(0o755)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    return root, env


def config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def default_targets() -> list[str]:
    return config()["default_targets"]


def datasets() -> list[str]:
    return sorted({config()["experiments"][name]["data"] for name in default_targets()})


def stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def params_of(stage: dict, file: str) -> list[str]:
    return next((keys for entry in stage["params"] if isinstance(entry, dict)
                 for name, keys in entry.items() if name == file), [])


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def code_module(basedir: Path) -> types.SimpleNamespace:
    """workflow/rules/code.smk's functions, reading the dualrs package under ``basedir``."""
    namespace = {"workflow": types.SimpleNamespace(basedir=str(basedir))}
    exec(compile((REPO / "workflow" / "rules" / "code.smk").read_text(), "code.smk", "exec"), namespace)
    return types.SimpleNamespace(**namespace)


def test_a_prepare_stage_per_dataset_and_a_stage_per_default_target(project):
    root, env = project
    names = dvc(root, "stage", "list", "--name-only", env=env).split()
    assert sorted(names) == sorted([*(f"prepare@{data}" for data in datasets()), *default_targets()])


def test_every_tracked_output_is_made_by_the_workflow(project):
    """Each out, metric and plot of dvc.yaml is a Snakemake output of its experiment's DAG (or holds some)."""
    root, env = project
    names = default_targets()
    summary = dry_run(root, "-n", "--summary", "--cores", "1", *[f"results/tables/{name}.csv" for name in names])
    made = [line.split("\t")[0] for line in summary.splitlines()[1:] if line.startswith(("results/", "data/"))]
    for name in names:
        for kind in ("outs", "metrics", "plots"):
            for entry in stages()[name][kind]:
                path = next(iter(entry))
                assert any(p == path or p.startswith(path + "/") for p in made), f"{kind}: nothing makes {path}"


@pytest.mark.slow
def test_each_stage_reads_the_config_keys_and_models_of_the_experiments_in_its_dag(project):
    """The config keys of a stage are those of the experiments and datasets its Snakemake target builds: the
    whole block of its own experiment, the model keys of an experiment whose models it borrows (whose stage
    it then follows), and no other experiment's or dataset's."""
    root, env = project
    for name in default_targets():
        summary = dry_run(root, "-n", "--summary", "--cores", "1", f"results/tables/{name}.csv")
        paths = [line.split("\t")[0] for line in summary.splitlines()[1:]]
        used = {m.group(1) for p in paths if (m := re.match(r"results/([^/]+)/", p)) and m.group(1) not in ("tables", "figures")}
        data = {m.group(1) for p in paths if (m := re.match(r"data/([^/]+)/READY$", p))}
        stage = stages()[name]
        keys = params_of(stage, "config/config.yaml")
        assert {k.split(".")[1] for k in keys if k.startswith("experiments.")} == used
        assert {k for k in keys if k.startswith("data")} == {f"data.{d}" for d in data}
        assert f"experiments.{name}" in keys and "seed" in keys
        assert {"seed", "radii", f"experiments.{name}"} <= set(params_of(stage, "params.yaml"))
        borrowed = {p.split("/")[1] for p in paths if p.startswith("results/") and "/models/" in p} - {name}
        assert {f"results/{other}/models" for other in borrowed} | {f"data/{d}" for d in data} <= set(stage["deps"])
        for other in used - {name}:
            assert all(k.startswith(f"experiments.{other}.") for k in keys if k.startswith(f"experiments.{other}"))
            assert other in borrowed, f"{name} reads experiments.{other} but no model of it"


def test_params_yaml_lists_the_documented_keys_unset():
    """params.yaml, which `dvc exp run -S` writes, names every experiment's sampling keys (so -S needs no `+`)
    and, as committed, sets none: config/config.yaml alone gives the values."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert set(params["experiments"]) == set(config()["experiments"])
    keys = {"certify": {"n0", "n", "alpha", "beta"}, "label": {"n0", "n"}}
    for block in params["experiments"].values():
        assert {k: set(v) for k, v in block.items()} == keys
        assert all(value is None for settings in block.values() for value in settings.values())
    assert params["seed"] is None and params["radii"] is None


def test_dvcignore_hides_exactly_the_modules_no_pipeline_command_imports(project):
    """The `dualrs` dependency of the stages is the union of the files whose digest the rules carry and
    of the workflow's plan (dualrs/plan.py and what it imports: it writes the commands' arguments)."""
    from dvc.repo import Repo

    root, _ = project
    code = code_module(REPO)
    pipeline = set().union(*(code.code_files(module) for module in (*code.COMMAND_MODULES, "plan")))
    ignore = Repo(str(root)).dvcignore
    visible = {p.name for p in (root / "dualrs").iterdir()
               if p.is_file() and not ignore.is_ignored_file(str(p))}
    assert visible - pipeline == set(), "no pipeline command imports these: add them to .dvcignore"
    assert pipeline - visible == set(), "pipeline commands import these: remove them from .dvcignore"


@pytest.mark.slow
def test_code_digest_follows_the_imported_files_only(tmp_path):
    """code(module): stable, independent of listing order, changed by an edit of a file the command imports and
    by no other file."""
    shutil.copytree(REPO / "dualrs", tmp_path / "dualrs", ignore=shutil.ignore_patterns("__pycache__"))
    before = {module: code_module(tmp_path).code(module) for module in ("tasks", "tables", "report")}
    assert before == {module: code_module(tmp_path).code(module) for module in before}
    assert "smoothing.py" in code_module(tmp_path).code_files("tasks")
    assert "published_numbers.yaml" in code_module(tmp_path).code_files("report")
    edits = {"smoothing.py": {"tasks"}, "report.py": {"report"}, "published_numbers.yaml": {"report"},
             "cli.py": {"tasks", "tables", "report"}, "convert.py": set()}
    for name, changed in edits.items():
        path = tmp_path / "dualrs" / name
        original = path.read_text()
        path.write_text(original + "\n# edited\n")
        after = {module: code_module(tmp_path).code(module) for module in before}
        path.write_text(original)
        assert {module for module in before if after[module] != before[module]} == changed, name


@pytest.mark.slow
def test_repro_metrics_plots_and_a_push_pull_round_trip(project, tmp_path):
    root, env = project
    log = dvc(root, "repro", env=env)
    assert all(f"Running stage '{name}'" in log for name in default_targets())
    assert all(f"Running stage 'prepare@{data}'" in log for data in datasets())
    name = default_targets()[0]
    checkpoint = root / "results" / name / "models" / "estimator_it0.safetensors"
    before = md5(checkpoint)

    metrics = json.loads(dvc(root, "metrics", "show", "--json", env=env))[""]  # "": the workspace
    assert metrics["data"][f"results/tables/{name}.json"]["data"] == {"dual": {"r=0.25": 50.0, "ACR": 0.31}}
    shown = dvc(root, "metrics", "show", env=env)
    assert all(column in shown.splitlines()[0] for column in ("Path", "dual.r=0.25", "dual.ACR"))
    plots = json.loads(dvc(root, "plots", "show", "--json", env=env))["data"][f"results/tables/{name}_curve.csv"]
    encoding = plots[0]["content"]["encoding"]
    assert (encoding["x"]["field"], encoding["y"]["field"], encoding["color"]["field"]) == (
        "radius", "certified_accuracy", "method")
    values = plots[0]["content"]["data"]["values"]
    assert {(v["method"], float(v["radius"]), float(v["certified_accuracy"])) for v in values} >= {
        ("dual", 0.25, 50.0), ("global", 0.0, 58.0)}

    # persist: DVC keeps outputs when it reruns a stage, so the pipeline's own logic decides what to redo
    dvc(root, "repro", "--force", name, env=env)
    assert md5(checkpoint) == before
    assert "didn't change, skipping" in dvc(root, "repro", env=env)

    dataset = root / "data" / "digits" / "test.npz"
    data_before = md5(dataset)
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
    assert all(f"Running stage '{name}'" in log for name in default_targets())
    assert (clone / "results" / "tables" / f"{default_targets()[0]}.json").is_file()


@pytest.mark.slow
def test_exp_run_set_param_reaches_snakemake_without_rewriting_the_config(project):
    """`dvc exp run -S experiments.digits.certify.n=500` writes params.yaml, not the commented config, and a
    real Snakemake then certifies digits with n = 500 (labels keep config/config.yaml's n)."""
    root, env = project
    config_text = (root / "config" / "config.yaml").read_text()
    dvc(root, "exp", "run", "-S", "experiments.digits.certify.n=500", env=env)
    assert (root / "config" / "config.yaml").read_text() == config_text
    assert yaml.safe_load((root / "params.yaml").read_text())["experiments"]["digits"]["certify"]["n"] == 500
    assert "experiments.digits.certify.n" in dvc(root, "params", "diff", "--deps", env=env)
    dry = dry_run(root, "-n", "-p", "-F", "--cores", "1", "results/tables/digits.csv")
    commands = {m.group(1): m.group(0) for m in re.finditer(r"dualrs (certify-global|label) .*", dry)}
    assert commands, dry[-3000:]
    assert "--n 500 " in commands["certify-global"] and "--n 1000 " in commands["label"]


@pytest.fixture
def pipeline_project(tmp_path):
    """The DVC project with real Snakemake runs of the digits DAGs, their `dualrs` commands stand-ins: after
    `dvc repro`, DVC and Snakemake both hold everything up to date."""
    root = committed_copy(tmp_path / "project")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dualrs").write_text(FAKE_DUALRS)
    (bin_dir / "dualrs").chmod(0o755)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1",
           "PATH": os.pathsep.join([str(bin_dir), str(VENV_BIN), os.environ["PATH"]])}
    dvc(root, "repro", env=env)
    return root, env


def out_of_date(root: Path, env: dict) -> dict[str, tuple[bool, bool]]:
    """Per stage: (DVC's `dvc status` lists it, Snakemake's dry run of its target has jobs)."""
    status = json.loads(dvc(root, "status", "--json", env=env))
    found = {}
    for name, stage in stages().items():
        targets = [f"data/{item}/READY" for item in stage.get("foreach", [])] or [f"results/tables/{name}.csv"]
        names = [f"{name}@{item}" for item in stage.get("foreach", [])] or [name]
        for stage_name, target in zip(names, targets):
            dry = dry_run(root, "-n", "--cores", "1", target, env=env)
            found[stage_name] = (stage_name in status, "Nothing to be done" not in dry)
    return found


@pytest.mark.slow
def test_dvc_and_snakemake_agree_on_what_is_out_of_date(pipeline_project):
    root, env = pipeline_project
    assert set(out_of_date(root, env).values()) == {(False, False)}

    def after(path: Path, text: str) -> dict[str, tuple[bool, bool]]:
        original = path.read_bytes()
        path.write_text(text)
        try:
            return out_of_date(root, env)
        finally:
            path.write_bytes(original)

    params = root / "params.yaml"
    changed = yaml.safe_load(params.read_text())
    changed["experiments"]["digits"]["certify"]["n"] = 500
    changed["radii"] = [0.0, 0.3]
    cases = {
        "a config key of digits (params.yaml)": (
            params, yaml.safe_dump({**changed, "radii": None}), {"digits"}),
        "the shared radii (params.yaml)": (params, yaml.safe_dump(changed), {"digits", "digits_dds"}),
        "a module of the models": (
            root / "dualrs" / "smoothing.py", (root / "dualrs" / "smoothing.py").read_text() + "\n# edited\n",
            {"prepare@digits", "digits", "digits_dds"}),
        "an input (digits_dds's classifier, read by digits's router)": (
            root / "results/digits_dds/models/classifier_noise0.1.safetensors", "retrained", {"digits_dds", "digits"}),
    }
    for case, (path, text, expected) in cases.items():
        found = after(path, text)
        assert all(dvc_says == snakemake_says for dvc_says, snakemake_says in found.values()), (case, found)
        assert {name for name, (dvc_says, _) in found.items() if dvc_says} == expected, (case, found)


@pytest.mark.slow
def test_the_prepared_data_is_the_prepare_stage_out_byte_for_byte(project):
    """prepare@digits runs prepare-data as the pipeline does: twice from scratch, the same files (so a
    committed dvc.lock names them) and, where dvc.lock is committed, the hash it records."""
    root, env = project
    env = {**env, "PATH": os.pathsep.join([str(VENV_BIN), os.environ["PATH"]])}  # the real Snakemake and dualrs
    dvc(root, "repro", "prepare@digits", env=env)
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]["prepare@digits"]["outs"][0]
    shutil.rmtree(root / "data")
    (root / "dvc.lock").unlink()
    dvc(root, "repro", "prepare@digits", env=env)
    again = yaml.safe_load((root / "dvc.lock").read_text())["stages"]["prepare@digits"]["outs"][0]
    assert (lock["path"], lock["md5"], lock["nfiles"]) == ("data/digits", again["md5"], again["nfiles"])
    if (REPO / "dvc.lock").is_file():
        committed = yaml.safe_load((REPO / "dvc.lock").read_text())["stages"]["prepare@digits"]["outs"][0]
        assert committed["md5"] == lock["md5"]


def test_the_committed_dvc_lock_records_this_commits_code_rules_and_params(tmp_path):
    """dvc.lock is what `dvc repro` of this commit wrote: in a copy without the outputs and the cache (git
    holds neither), `dvc status` finds every code, rule and parameter dependency as recorded and only
    outputs missing.
    After changing code, rules or config: `dvc repro`, then commit dvc.lock."""
    root = committed_copy(tmp_path / "project")
    shutil.copy2(REPO / "dvc.lock", root / "dvc.lock")
    status = json.loads(dvc(root, "status", "dvc.yaml", "--json", env={**os.environ, "DVC_NO_ANALYTICS": "1"}))
    recorded = set(yaml.safe_load((REPO / "dvc.lock").read_text())["stages"])
    expected = {f"{name}@{item}" for name, stage in stages().items() for item in stage.get("foreach", [])}
    expected |= {name for name, stage in stages().items() if "foreach" not in stage}
    assert recorded == expected, "dvc.lock lacks stages of dvc.yaml (or has removed ones): run `dvc repro`"
    stale = {}
    for name, changes in status.items():
        for change in changes:
            if not isinstance(change, dict):  # "changed command", "always changed"
                stale[name] = change
                continue
            for kind, paths in change.items():
                stale.update({f"{name}: {path}": state for path, state in paths.items()
                              if kind not in ("changed deps", "changed outs")
                              or state not in ("deleted", "not in cache")})
    assert not stale, f"dvc.lock is stale (run `dvc repro` and commit dvc.lock): {stale}"


def paper_stages() -> dict:
    return yaml.safe_load((REPO / "paper" / "dvc.yaml.example").read_text())["stages"]


@pytest.mark.slow
def test_paper_stages_depend_on_the_weights_keys_and_code_of_their_experiment(tmp_path):
    """paper/dvc.yaml.example: one stage per paper experiment, whose deps are the checkpoints its config names (raw
    inputs, `dvc add`ed), the code, and whose params are its config keys; every out is a Snakemake output of
    its DAG (dry run on stand-in weights)."""
    root = committed_copy(tmp_path / "project")
    fake_paper_weights(root)
    for name, stage in paper_stages().items():
        experiment = config()["experiments"][name]
        assert (stage["wdir"], stage["cmd"]) == ("..", f"snakemake --cores all results/tables/{name}.csv")
        assert {experiment["denoiser"]["path"], experiment["classifier"]["weights"], "Snakefile", "workflow/rules",
                "workflow/schemas", "dualrs"} == set(stage["deps"])
        assert params_of(stage, "config/config.yaml") == ["seed", f"data.{experiment['data']}", f"experiments.{name}"]
        assert params_of(stage, "params.yaml") == ["seed", "radii", f"experiments.{name}"]
        summary = dry_run(root, "-n", "--summary", "--cores", "1", f"results/tables/{name}.csv")
        made = [line.split("\t")[0] for line in summary.splitlines()[1:]]
        assert not {"metrics", "plots"} & set(stage), "declared metrics make `dvc metrics show` fail where unrun"
        for entry in stage["outs"]:
            path = next(iter(entry))
            assert any(p == path or p.startswith(path + "/") for p in made), f"{name}: nothing makes {path}"


@pytest.mark.slow
def test_paper_stages_run_on_dvc_added_weights_and_are_out_of_date_when_they_change(project):
    """The example's recipe: `dvc add` of the weights works where config/config.yaml puts them (.gitignore lets
    the .dvc files in); `dvc repro` leaves the paper stages alone, `dvc repro paper/dvc.yaml` runs them, and a
    changed checkpoint makes exactly its experiment's stage out of date."""
    root, env = project
    shutil.copy(root / "paper" / "dvc.yaml.example", root / "paper" / "dvc.yaml")
    fake_paper_weights(root)
    experiments = [config()["experiments"][name] for name in paper_stages()]
    weights = [Path(e["denoiser"]["path"]) for e in experiments] + [Path(e["classifier"]["weights"]) for e in experiments]
    for path in weights:
        target = root / path / "unet.safetensors" if (root / path).is_dir() else root / path
        target.write_bytes(os.urandom(256))
    dvc(root, "add", *map(str, weights), env=env)
    git(root, "add", "-A")
    assert all((root / f"{path}.dvc").is_file() for path in weights)
    assert "cifar10" not in dvc(root, "repro", env=env)
    log = dvc(root, "repro", "paper/dvc.yaml", env=env)
    assert all(f"Running stage 'paper/dvc.yaml:{name}'" in log for name in paper_stages())
    assert json.loads(dvc(root, "status", "paper/dvc.yaml", "--json", env=env)) == {}
    classifier = root / config()["experiments"]["cifar10"]["classifier"]["weights"]
    classifier.write_bytes(b"retrained")
    status = json.loads(dvc(root, "status", "paper/dvc.yaml", "--json", env=env))
    assert list(status) == ["paper/dvc.yaml:cifar10"], status
    assert status["paper/dvc.yaml:cifar10"][0]["changed deps"] == {str(classifier.relative_to(root)): "modified"}
