"""The pipeline's wall time, CPU use and critical path, in one run: ``python -m benchmarks.dag [--cores 2] [TARGET ...]``.

Copies this checkout (the files git tracks or would track) to a temporary directory, runs
``snakemake --cores N`` there from nothing (no data, no results), and prints the critical path (the
chain of dependent jobs whose durations add up to the most), then one line:

    dag_wall_s=<s> cpu_util=<u> jobs=<n> critical_path_s=<s> critical_jobs=<k>

- cpu_util: CPU seconds (user + system) of Snakemake and every job, over wall time times N
  (1: every core busy for the whole run);
- critical_path_s: the sum of the critical path's job durations (the run cannot be shorter than it
  on any number of cores without making those jobs faster).
"""
from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAMP = r"\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]\n"
STARTED = re.compile(STAMP + r"(?:local)?rule (\w+):\n((?:    .*\n)+)")
FINISHED = re.compile(STAMP + r"Finished jobid: (\d+)")


@dataclass
class Job:
    rule: str
    inputs: list[str]
    outputs: list[str]
    wildcards: str
    start: datetime
    end: datetime | None = None
    after: list[int] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


def when(stamp: str) -> datetime:
    return datetime.strptime(" ".join(stamp.split()), "%a %b %d %H:%M:%S %Y")


def field_of(body: str, name: str) -> str:
    found = re.search(rf"^    {name}: (.*)$", body, flags=re.M)
    return found.group(1) if found else ""


def parse_log(text: str) -> dict[int, Job]:
    """Jobs of a Snakemake log: rule, files, start and end, and the jobs whose outputs they read."""
    jobs = {}
    for stamp, rule, body in STARTED.findall(text):
        jobid = int(field_of(body, "jobid"))
        jobs[jobid] = Job(rule, field_of(body, "input").split(", ") if field_of(body, "input") else [],
                          field_of(body, "output").split(", "), field_of(body, "wildcards"), when(stamp))
    for stamp, jobid in FINISHED.findall(text):
        jobs[int(jobid)].end = when(stamp)
    producer = {path: jobid for jobid, job in jobs.items() for path in job.outputs}
    for job in jobs.values():
        job.after = sorted({producer[path] for path in job.inputs if path in producer})
    return {jobid: job for jobid, job in jobs.items() if job.end is not None}


def critical_path(jobs: dict[int, Job]) -> list[int]:
    """The chain of dependent jobs with the largest sum of durations (jobs in order of their end)."""
    longest: dict[int, tuple[float, list[int]]] = {}
    for jobid in sorted(jobs, key=lambda j: jobs[j].end):
        before = max((longest[d] for d in jobs[jobid].after if d in longest), default=(0.0, []))
        longest[jobid] = (before[0] + jobs[jobid].seconds, [*before[1], jobid])
    return max(longest.values())[1]


def checkout_copy(root: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout
    for name in filter(None, listed.split("\0")):
        if (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cores", type=int, default=2, help="snakemake --cores (default: %(default)s)")
    parser.add_argument("--log", type=Path, help="also write Snakemake's output (the job log parsed here) to this file")
    parser.add_argument("targets", nargs="*", help="Snakemake targets (default: the default target)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dualrs-dag-") as tmp:
        root = Path(tmp)
        checkout_copy(root)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
               "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}  # `dualrs`
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "snakemake", "--cores", str(args.cores), *args.targets],
                                cwd=root, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if args.log is not None:
            args.log.write_text(result.stdout + result.stderr)
        if result.returncode != 0:
            sys.exit(f"snakemake failed:\n{result.stderr[-5000:]}")
        jobs = parse_log(result.stderr)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    path = critical_path(jobs)
    print("critical path (seconds, rule, wildcards):")
    for jobid in path:
        print(f"  {jobs[jobid].seconds:6.0f}  {jobs[jobid].rule}  {jobs[jobid].wildcards}")
    print(f"dag_wall_s={wall:.0f} cpu_util={cpu / (wall * args.cores):.2f} jobs={len(jobs)} "
          f"critical_path_s={sum(jobs[j].seconds for j in path):.0f} critical_jobs={len(path)}")


if __name__ == "__main__":
    main()
