"""benchmarks.dag reads Snakemake's log: jobs, their dependencies and the critical path."""
import re
import subprocess
import sys

import pytest

from benchmarks.dag import critical_path, parse_log
from pipeline import REPO

LOG = """\
[Wed Dec  2 12:00:00 2026]
localrule prepare:
    output: data/READY
    jobid: 3
    reason: Missing output files: data/READY
[Wed Dec  2 12:00:02 2026]
Finished jobid: 3 (Rule: prepare)
[Wed Dec  2 12:00:02 2026]
rule slow:
    input: data/READY
    output: a.tsv
    jobid: 1
    wildcards: experiment=x
[Wed Dec  2 12:00:02 2026]
rule fast:
    input: data/READY
    output: b.tsv, b.json
    jobid: 2
[Wed Dec  2 12:00:05 2026]
Finished jobid: 2 (Rule: fast)
[Wed Dec  2 12:00:07 2026]
rule waits_for_a_core:
    input: b.json
    output: c.tsv
    jobid: 4
[Wed Dec  2 12:00:12 2026]
Finished jobid: 1 (Rule: slow)
[Wed Dec  2 12:00:12 2026]
rule report:
    input: a.tsv, c.tsv
    output: table.csv
    jobid: 0
[Wed Dec  2 12:00:13 2026]
Finished jobid: 4 (Rule: waits_for_a_core)
[Wed Dec  2 12:00:15 2026]
Finished jobid: 0 (Rule: report)
"""


def test_jobs_their_inputs_jobs_and_durations():
    jobs = parse_log(LOG)
    assert {j: (job.rule, job.after, job.seconds) for j, job in jobs.items()} == {
        3: ("prepare", [], 2.0), 1: ("slow", [3], 10.0), 2: ("fast", [3], 3.0),
        4: ("waits_for_a_core", [2], 6.0), 0: ("report", [1, 4], 3.0)}
    assert jobs[1].wildcards == "experiment=x" and jobs[2].outputs == ["b.tsv", "b.json"]


def test_the_critical_path_is_the_chain_with_the_longest_sum_of_durations():
    """prepare → slow → report (15 s) beats prepare → fast → waits_for_a_core → report (14 s), although the
    latter's last job before the report ended later."""
    assert critical_path(parse_log(LOG)) == [3, 1, 0]


def test_an_unfinished_job_is_left_out():
    jobs = parse_log(LOG.rsplit("[Wed Dec  2 12:00:15 2026]", 1)[0])
    assert 0 not in jobs and critical_path(jobs) == [3, 1]


@pytest.mark.slow
def test_a_run_prints_its_line_and_keeps_the_log_it_read(tmp_path):
    log = tmp_path / "snakemake.log"
    result = subprocess.run([sys.executable, "-m", "benchmarks.dag", "--log", str(log), "data/digits/READY"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    line = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"dag_wall_s=\d+ cpu_util=\d\.\d\d jobs=1 critical_path_s=\d+ critical_jobs=1", line), line
    assert "prepare_data  data=digits" in result.stdout
    jobs = parse_log(log.read_text())
    assert [job.rule for job in jobs.values()] == ["prepare_data"]
