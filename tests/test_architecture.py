"""The library's import graph (docs/architecture.md, "Layers"): no cycles, no import of a higher layer, no Snakemake."""
import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dualrs"

# Each module of dualrs and its layer: a module imports only modules of its own or a lower layer.
LAYERS = {
    0: {"__init__", "validation", "tables", "table_checks", "seeding", "host_memory", "progress", "runlog", "gpu_slots", "published",
        "config_checks", "plugins", "timm_names", "denoiser_layout"},  # foundations: no dualrs import but another foundation
    1: {"smoothing", "sequential", "routed", "dual", "router", "cascade", "assembly", "models", "denoise", "data",
        "fingerprint", "io", "labels", "train", "training_state", "report", "convert", "memory", "compute"},  # the method
    2: {"settings", "tasks", "certify", "plan"},  # jobs: a command's inputs → library → outputs; the workflow's plan
    3: {"cli", "__main__", "launch", "jobserver"},  # entry points
}
LAYER = {module: layer for layer, modules in LAYERS.items() for module in modules}


def imports(path: Path) -> tuple[set[str], set[str]]:
    """(dualrs modules, top-level packages of other imports) that ``path`` imports anywhere in its code."""
    ours, others = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "dualrs":
                ours |= {alias.name for alias in node.names}
            elif node.module.startswith("dualrs."):
                ours.add(node.module.split(".")[1])
            else:
                others.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("dualrs."):
                    ours.add(alias.name.split(".")[1])
                else:
                    others.add(alias.name.split(".")[0])
    return ours - {path.stem}, others


def graph() -> dict[str, set[str]]:
    return {path.stem: imports(path)[0] for path in PACKAGE.glob("*.py")}


def test_every_module_has_a_layer():
    assert set(graph()) == set(LAYER), "give each new module of dualrs a layer in LAYERS"


def test_the_import_graph_has_no_cycle():
    try:
        tuple(TopologicalSorter(graph()).static_order())
    except CycleError as error:
        raise AssertionError(f"import cycle: {' -> '.join(error.args[1])}") from None


def test_no_module_imports_a_higher_layer():
    upward = {(module, dep) for module, deps in graph().items() for dep in deps if LAYER[dep] > LAYER[module]}
    assert not upward, f"imports of a higher layer: {sorted(upward)}"


def test_the_library_never_imports_snakemake():
    assert not {path.name for path in PACKAGE.glob("*.py") if "snakemake" in imports(path)[1]}


def test_the_checks_see_a_violation(tmp_path, monkeypatch):
    """The graph reader finds an upward import and a cycle where there is one."""
    for name, text in {"validation.py": "from dualrs.tasks import x\n", "tasks.py": "import dualrs.validation\n"}.items():
        (tmp_path / name).write_text(text)
    monkeypatch.setattr(__import__(__name__), "PACKAGE", tmp_path)
    assert graph() == {"validation": {"tasks"}, "tasks": {"validation"}}
    try:
        test_the_import_graph_has_no_cycle()
    except AssertionError as error:
        assert "import cycle" in str(error)
    else:
        raise AssertionError("the cycle went unseen")
