"""One writer per output, and outputs that cannot be written are refused before any work.

A writer of a certificate table holds ``<out>.lock`` (an OS lock) for its whole life: a second writer
(two runs on one ``--out``; Snakemake rerun after ``--unlock`` while the dead scheduler's job still runs)
fails at once, naming the output and the lock, and the first finishes the whole table. The lock dies
with its process, so a killed run blocks nothing.
"""
from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from dualrs.cli import main
from dualrs.tables import GLOBAL_COLUMNS, OutputError, ResumableTable
from pipeline import REPO, snakemake, tiny_experiment, venv_environment
from test_resume import Setup, certificates, global_args, rows_written, trained_setup


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Setup:
    return trained_setup(tmp_path_factory.mktemp("concurrency"))


SLOW = {"--every": 3, "--n": 1000, "--batch-size": 250}  # 180 inputs: seconds of work


def wait_for_rows(partial: Path, rows: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while rows_written(partial) < rows:
        assert process.poll() is None, "the run ended before it could be caught"
        assert time.monotonic() < deadline, f"{partial} did not reach {rows} rows"
        time.sleep(0.01)


@pytest.mark.slow
def test_a_second_writer_fails_at_once_and_the_first_finishes_the_whole_table(setup, tmp_path):
    """The first writer is held (SIGSTOP) with rows in its partial file while a second runs on the same
    ``--out``: the second exits with one error naming output and lock and touches nothing; the first
    then finishes a table equal to an uninterrupted run's."""
    main(global_args(setup, tmp_path / "reference.tsv", **SLOW))
    out = tmp_path / "c.tsv"
    partial = out.with_name("c.tsv.partial")
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen([sys.executable, "-m", "dualrs", *global_args(setup, out, **SLOW)],
                                 stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_rows(partial, 3, first)
        first.send_signal(signal.SIGSTOP)
        before = partial.read_bytes()
        start = time.monotonic()
        with pytest.raises(SystemExit) as error:
            main(global_args(setup, out, **SLOW))
        elapsed = time.monotonic() - start
        assert str(error.value) == (f"dualrs certify-global: error: {out} is being written by another process, "
                                    f"which holds the lock {out}.lock: wait for that run to end, or stop it, "
                                    "then run again")
        assert partial.read_bytes() == before and not out.exists() and elapsed < 20
        first.send_signal(signal.SIGCONT)
        assert first.wait(timeout=300) == 0
    finally:
        first.send_signal(signal.SIGCONT)
        first.kill()
        first.wait()
    pd.testing.assert_frame_equal(certificates(out), certificates(tmp_path / "reference.tsv"))


def test_the_lock_of_a_killed_writer_blocks_nothing(tmp_path):
    """SIGKILL leaves ``c.tsv.lock`` behind, but the OS released the lock with the process."""
    out = tmp_path / "c.tsv"
    code = ("import os, signal, sys\n"
            "from dualrs.tables import GLOBAL_COLUMNS, ResumableTable\n"
            "table = ResumableTable(sys.argv[1], GLOBAL_COLUMNS)\n"
            "table.append({'idx': 0, 'label': 1, 'predict': 1, 'radius': 0.5, 'correct': 1, 'time': 0.1})\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    assert subprocess.run([sys.executable, "-c", code, str(out)]).returncode == -signal.SIGKILL
    assert out.with_name("c.tsv.lock").is_file()
    start = time.monotonic()
    with ResumableTable(out, GLOBAL_COLUMNS) as table:
        assert table.done == {0}
    assert time.monotonic() - start < 1


def test_an_output_that_is_a_directory_is_refused_before_any_work(setup, tmp_path, capsys):
    """Refused by the table writer (any caller, e.g. ``certify_dataset``) and by the CLI, before any work."""
    out = tmp_path / "c.tsv"
    out.mkdir()
    with pytest.raises(ValueError, match=r"output .*c\.tsv is a directory; name a file to write"):
        ResumableTable(out, GLOBAL_COLUMNS)
    with pytest.raises(SystemExit) as error:
        main(global_args(setup, out))
    assert f"{out} is a directory" in str(error.value) + capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["c.tsv"] and not any(out.iterdir())


def test_an_unwritable_results_folder_is_one_error_before_any_work(setup, tmp_path, monkeypatch):
    """A read-only folder: the lock cannot be created. Root ignores the mode, so for root the refusal
    of the file system is simulated."""
    folder = tmp_path / "results"
    folder.mkdir()
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):

        class ReadOnlyFolder:
            def __init__(self, path: Path, timeout: float):
                self.lock_file = str(path)

            def acquire(self) -> None:
                raise PermissionError(errno.EACCES, "Permission denied")

        monkeypatch.setattr("dualrs.tables.FileLock", ReadOnlyFolder)
    try:
        with pytest.raises(SystemExit, match=r"error: cannot write .*results/c\.tsv: creating its lock "
                                             r".*results/c\.tsv\.lock failed \(Permission denied\)"):
            main(global_args(setup, folder / "c.tsv"))
        assert not any(folder.iterdir())
    finally:
        folder.chmod(0o755)


def test_a_full_disk_while_appending_keeps_the_rows_written(tmp_path, monkeypatch):
    """The write of row 1 stops half-way (ENOSPC): one error naming the partial file; row 0 is kept and
    the next run drops the cut-off line and resumes."""
    out = tmp_path / "c.tsv"
    row = {"idx": 0, "label": 1, "predict": 1, "radius": 0.5, "correct": 1, "time": 0.1}
    real_open = Path.open

    class FullDisk:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, text):
            self.handle.write(text[: len(text) // 2])
            self.handle.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

    with ResumableTable(out, GLOBAL_COLUMNS) as table:
        table.append(row)
        monkeypatch.setattr(Path, "open", lambda self, *a, **k: FullDisk(real_open(self, *a, **k)))
        with pytest.raises(OutputError, match=r"cannot append to .*c\.tsv\.partial \(No space left on device\); "
                                              "the rows written before are kept"):
            table.append({**row, "idx": 1})
        monkeypatch.undo()
    with pytest.warns(UserWarning, match="dropping the incomplete last line"), \
            ResumableTable(out, GLOBAL_COLUMNS) as table:
        assert table.done == {0}


# ------------------------------------------------------------------ Snakemake dies, its job lives on


ONE_SHARD = tiny_experiment("{n0: 8, n: 16, alpha: 0.01, every: 20}",
                            "{n0: 16, n: 500, alpha: 0.01, beta: 0.01, every: 6, shards: 1}", 250)
TARGET = "results/tiny/certify/global/shards/sigma0.25_shard0.tsv"
RULE_ARGS = {"--n0": 16, "--n": 500, "--batch-size": 250, "--every": 6, "--seed": 0}  # the rule's, from ONE_SHARD


def certify_processes(workdir: Path) -> list[int]:
    """Pids of the ``dualrs certify-global`` processes running in ``workdir``."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if "certify-global" in args and cwd == str(workdir.resolve()):
            pids.append(int(entry.name))
    return pids


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def snakemake_workdir(setup: Setup, path: Path) -> tuple[Path, tuple[str, ...]]:
    """A copy of the trained setup as a Snakemake working directory, and the arguments of the target."""
    shutil.copytree(setup.workdir, path)
    shutil.copytree(REPO / "config", path / "config")
    (path / "one_shard.yaml").write_text(ONE_SHARD)
    return path, (TARGET, "--cores", "1", "--configfile", str(path / "one_shard.yaml"))


@pytest.mark.slow
def test_killed_scheduler_then_unlock_and_rerun_gives_the_uninterrupted_table(setup, tmp_path):
    """Snakemake is SIGKILLed mid-certification; its job lives on (held with SIGSTOP for determinism).
    ``--unlock`` and a rerun: the rerun's job fails at once on the lock instead of writing a second
    table. Once the orphan has finished, a rerun completes, and the table equals an uninterrupted run's
    (every column but ``time``, byte for byte)."""
    main(global_args(setup, tmp_path / "reference.tsv", **RULE_ARGS))
    workdir, args = snakemake_workdir(setup, tmp_path / "work")
    partial = workdir / (TARGET + ".partial")
    env = venv_environment()
    with open(tmp_path / "killed.log", "w") as log:
        scheduler = subprocess.Popen([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
                                      "--directory", str(workdir), *args], stdout=log, stderr=subprocess.STDOUT,
                                     env=env)
    orphans: list[int] = []
    try:
        wait_for_rows(partial, 5, scheduler)
        orphans = certify_processes(workdir)
        assert len(orphans) == 1, orphans
        scheduler.send_signal(signal.SIGKILL)
        assert scheduler.wait() == -signal.SIGKILL
        os.kill(orphans[0], signal.SIGSTOP)
        assert running(orphans[0]) and rows_written(partial) < 90

        snakemake(workdir, "--unlock", *args)
        rerun = snakemake(workdir, *args, check=False)
        log_text = (workdir / "logs/tiny/certify_global/sigma0.25_shard0.log").read_text(errors="replace")
        assert rerun.returncode != 0, rerun.stderr[-3000:]
        assert f"{TARGET} is being written by another process, which holds the lock {TARGET}.lock" in log_text
        assert running(orphans[0])

        os.kill(orphans[0], signal.SIGCONT)
        deadline = time.monotonic() + 300
        while running(orphans[0]):
            assert time.monotonic() < deadline, "the orphaned job did not finish"
            time.sleep(0.05)
    finally:
        for pid in orphans:
            if running(pid):
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
        if scheduler.poll() is None:
            scheduler.kill()
            scheduler.wait()
    snakemake(workdir, *args)
    assert not partial.exists()
    expected = certificates(tmp_path / "reference.tsv")
    assert len(expected) == 90
    pd.testing.assert_frame_equal(certificates(workdir / TARGET), expected)


# ------------------------------------------------------------------ two experiments, one report file


def test_an_experiment_named_after_another_experiments_curve_file_is_refused(tmp_path):
    """``tiny_curve`` would write results/tables/tiny_curve.csv, the curve file of ``tiny``: refused by the
    schema, naming the key and why, before any job."""
    shutil.copytree(REPO / "config", tmp_path / "config")
    (tmp_path / "bad.yaml").write_text((REPO / "tests" / "configs" / "tiny.yaml").read_text()
                                       .replace("tiny_dds", "tiny_curve"))
    result = snakemake(tmp_path, "-n", "--cores", "1", "--configfile", str(tmp_path / "bad.yaml"), check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "config: experiments: 'tiny_curve' does not match" in output
    assert "not ending in _curve, _headroom, _choices or _vs_paper" in output
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(("name", "legal"), [
    ("tiny", True), ("tiny_dds", True), ("curve", True), ("x_curves", True), ("headroom-1", True),
    ("x_curve", False), ("x_headroom", False), ("x_choices", False), ("x_vs_paper", False), ("x y", False),
])
def test_experiment_names_that_collide_with_report_files(name, legal):
    import jsonschema
    import yaml

    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    names = schema["properties"]["experiments"]["propertyNames"]
    assert jsonschema.Draft202012Validator(names).is_valid(name) == legal
