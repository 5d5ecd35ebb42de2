"""Fixtures shared by test modules."""
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from filelock import FileLock

from dualrs.host_memory import keep_freed_memory
from pipeline import REPO, TINY, snakemake

keep_freed_memory()  # in-process certification as fast as in a dualrs job

SLURM_TESTS = Path(__file__).parent / "test_slurm.py"

# Test files that run whole pipelines, longest first. pytest-xdist (--dist loadfile --no-loadscope-reorder)
# hands out files in collection order, so these start at once and overlap, instead of the longest running
# last on one worker while the other idles. The fourth file is a short one: pytest-xdist queues it behind
# the live Slurm run as soon as test_slurm.py's quick tests have passed (a worker is given the next file
# when two or fewer of its tests are left), so that test_dvc.py goes to a worker that is free before then.
FIRST = ("test_slurm.py", "test_paper_dags.py", "test_determinism.py", "test_workflow.py", "test_dvc.py",
         "test_ablations.py", "test_bad_input.py")


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist, absent under -p no:xdist
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n logical`` (pyproject's addopts): one worker per logical CPU, and one more when the live Slurm
    test runs. That test holds its worker for minutes while using little CPU (alone: 97 CPU-seconds in
    214 s, most of them the local run it compares with): Slurm starts each job alone and the executor polls
    for its end; the extra worker keeps both cores busy meanwhile (full suite on 2 cores: 12 min 07 s
    against 13 min 59 s). Without it an extra worker only slows the others (quick tests: 3 min 02 s against
    2 min 21 s), and a second extra one slows the whole suite (990 tests, one after the other on the same
    day: 11 min 36 s with four workers, 9 min 40 s with three). PYTEST_XDIST_AUTO_NUM_WORKERS, when set,
    decides instead."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS") or config.option.numprocesses != "logical":
        return None
    return (os.cpu_count() or 1) + runs_live_slurm(config)


def runs_live_slurm(config: pytest.Config) -> bool:
    """Whether the run selects the live Slurm test: as root (it is skipped otherwise), on the whole suite or
    tests/test_slurm.py, with a marker expression that keeps tests marked ``slurm`` and ``slow``."""
    paths = [arg.split("::")[0] for arg in config.args]
    selected = not paths or any(Path(path).resolve() in (Path(__file__).parent, SLURM_TESTS) for path in paths)
    markexpr = config.option.markexpr
    try:  # pytest's parser of -m expressions (not public API: without it, any -m counts as keeping the test)
        from _pytest.mark.expression import Expression
    except ImportError:
        kept = True
    else:
        kept = not markexpr or Expression.compile(markexpr).evaluate(lambda name, **_: name in ("slurm", "slow"))
    return os.geteuid() == 0 and selected and kept


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: position for position, name in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(FIRST)))  # stable: other files keep their order


@pytest.fixture
def single_thread() -> Iterator[None]:
    """For tiny models, intra-op threads only add OpenMP overhead (and stall on a busy CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A work directory in which the whole DAG of tests/configs/tiny.yaml (experiments tiny and tiny_dds) ran
    with ``--cores 2``: one run for the whole test session, pytest-xdist workers included (the first worker
    to ask runs it, the others wait for it under a file lock). Tests must not change it."""
    shared = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:  # basetemp is <session folder>/<worker>
        shared = shared.parent
    workdir, done = shared / "tiny_run", shared / "tiny_run.done"
    with FileLock(shared / "tiny_run.lock"):
        if not done.exists():
            shutil.rmtree(workdir, ignore_errors=True)
            shutil.copytree(REPO / "config", workdir / "config")
            snakemake(workdir, "--cores", "2", "--configfile", str(TINY))
            done.touch()
    return workdir

