"""Every `snakemake` command README.md shows runs as written (as a dry run, with stand-ins for the paper's
checkpoints at the configured paths) in a copy of the repository."""
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline import REPO, fake_paper_weights, run_snakemake, venv_environment


def readme_commands(program: str) -> list[str]:
    """Lines of README.md's bash blocks that run ``program``, without trailing comments."""
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    lines = [line.split(" #")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.split()[:1] == [program]]


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("readme")
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout
    for name in listed.splitlines():
        if (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    fake_paper_weights(root)
    return root


def test_the_readme_shows_the_paper_commands():
    commands = readme_commands("snakemake")
    assert any("results/tables/cifar10.csv" in c and "--resources" in c for c in commands)
    assert any("config/quick.yaml" in c for c in commands)


@pytest.mark.slow
@pytest.mark.parametrize("command", readme_commands("snakemake"))
def test_readme_snakemake_command_dry_runs(checkout, command):
    args = shlex.split(command)[1:]
    env = venv_environment()
    result = run_snakemake(["--dry-run", *args], cwd=checkout, env=env)
    assert result.returncode == 0, f"{command}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def test_a_target_after_resources_is_refused(checkout):
    """Why the README puts the target first: `--resources` would read it as one more resource."""
    result = run_snakemake(["--dry-run", "--cores", "8", "--resources", "gpu=4", "results/tables/cifar10.csv"],
                           cwd=checkout)
    assert result.returncode != 0


@pytest.mark.parametrize("command", readme_commands("dualrs"))
def test_readme_dualrs_command_parses(tmp_path, monkeypatch, command):
    """Each `dualrs` command of the README is accepted by the parser as written (input files it names
    exist here as empty stand-ins; the command itself is not run)."""
    from dualrs.cli import build_parser

    args = shlex.split(command)[1:]
    for flag, value in zip(args, args[1:]):
        if flag == "--checkpoint":
            (tmp_path / value).touch()
    monkeypatch.chdir(tmp_path)
    parsed = build_parser().parse_args(args)
    assert callable(parsed.run)


def test_the_readme_shows_how_to_convert_both_denoisers():
    presets = {shlex.split(c)[shlex.split(c).index("--preset") + 1] for c in readme_commands("dualrs")
               if "convert-denoiser" in c}
    from dualrs.convert import PRESETS

    assert presets == set(PRESETS)


def test_the_paper_step_table_names_rules_commands_and_modules_that_exist():
    """README's "paper step → rule → command → module" table: each rule is defined in the rule file it
    names and runs one of the commands of its row; each command is a `dualrs` command; each module exists."""
    from dualrs.cli import build_parser

    text = (REPO / "README.md").read_text()
    table = text.split("### The paper's steps in the workflow", 1)[1].split("\n\n")[1]
    rows = [line.split(" | ")[1:] for line in table.splitlines()[2:]]
    assert len(rows) >= 10
    commands = set(build_parser()._subparsers._group_actions[0].choices)
    for rules_cell, commands_cell, modules_cell in rows:
        named = set(re.findall(r"`([a-z-]+)`", commands_cell))
        assert named and named <= commands, commands_cell
        modules = re.findall(r"`([a-z_]+\.py)`", modules_cell)
        assert all((REPO / "dualrs" / m).is_file() for m in modules), modules_cell
        for rules, smk in re.findall(r"((?:`\w+`(?:, )?)+) \((\w+\.smk)\)", rules_cell):
            source = (REPO / "workflow" / "rules" / smk).read_text()
            for rule in re.findall(r"`(\w+)`", rules):
                body = re.search(rf"^(?:rule {rule}\b|use rule \w+ as {rule}\b).*?(?=^(?:use )?rule |\Z)", source, flags=re.S | re.M)
                assert body, f"{rule} is not defined in {smk}"
                ran = set(re.findall(r"dualrs ([a-z-]+)", body.group(0)))
                assert not ran or ran & named or "{params.command}" in body.group(0), (rule, ran, named)
