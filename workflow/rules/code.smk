# The code a rule's command runs, as a param (`code=`): Snakemake reruns a job whose params changed, so
# editing a dualrs module reruns the jobs whose command imports it, as DVC reruns the stages that depend
# on the module's file (dvc.yaml lists the same files: code_files of every entry below).
import ast
import hashlib
from functools import cache
from pathlib import Path

PACKAGE = Path(workflow.basedir) / "dualrs"
# Modules every command loads: the package and the command-line dispatcher.
ENTRY_MODULES = ("__init__", "cli")
# What each dualrs command runs: models, datasets and checkpoints (tasks); merge (tables); report.
COMMAND_MODULES = ("tasks", "tables", "report")


@cache
def module_facts(path):
    """(dualrs modules imported at module level, dualrs modules imported anywhere, package files named in a
    string such as published_numbers.yaml) of ``path``, from one walk of its syntax tree; imports under
    ``if TYPE_CHECKING:`` (annotations only: never run) are left out."""
    tree = ast.parse(path.read_text(), str(path))
    skipped = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If)
        and getattr(node.test, "id", getattr(node.test, "attr", None))
        == "TYPE_CHECKING"
        for statement in node.body
        for inner in ast.walk(statement)
    }
    top_level = {id(node) for node in tree.body}
    imported, imported_at_top, named = set(), set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            bare_name = Path(node.value).name == node.value
            if bare_name and node.value.endswith((".yaml", ".json", ".csv")):
                named.add(PACKAGE / node.value)
            continue
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module == "dualrs":
            names = {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "dualrs."
        ):
            names = {node.module.split(".")[1]}
        elif isinstance(node, ast.Import):
            names = {
                a.name.split(".")[1] for a in node.names if a.name.startswith("dualrs.")
            }
        else:
            continue
        imported |= names
        if id(node) in top_level:
            imported_at_top |= names
    return (
        _modules(imported_at_top),
        _modules(imported),
        frozenset(p for p in named if p.is_file()),
    )


def _modules(names):
    """The names among ``names`` of the package's own modules."""
    return frozenset(name for name in names if (PACKAGE / f"{name}.py").is_file())


@cache
def code_files(module):
    """The files a command that runs ``module`` loads: the entry modules (cli.py's module-level imports
    only: its functions import what one command needs) and ``module`` with every dualrs module it
    imports, anywhere in its files, and the data files they name; sorted paths relative to the package.
    """
    files, seen = set(), set()
    pending = [(name, True) for name in ENTRY_MODULES] + [(module, False)]
    while pending:
        name, top_level_only = pending.pop()
        if (name, top_level_only) in seen:
            continue
        seen.add((name, top_level_only))
        path = PACKAGE / f"{name}.py"
        at_top, anywhere, named = module_facts(path)
        files |= {path, *named}
        pending += [(dep, False) for dep in (at_top if top_level_only else anywhere)]
    return tuple(sorted(str(path.relative_to(PACKAGE)) for path in files))


@cache
def code(module):
    """SHA-256 over (path, SHA-256 of the content) of code_files(module), in path order."""
    digest = hashlib.sha256()
    for name in code_files(module):
        digest.update(name.encode() + b"\0")
        digest.update(hashlib.sha256((PACKAGE / name).read_bytes()).digest())
    return digest.hexdigest()
