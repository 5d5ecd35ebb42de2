# Local runs start one dualrs job server (dualrs/jobserver.py): each job's `dualrs` command forks from a
# process that has imported torch, timm and diffusers once, instead of importing them anew. Same outputs;
# off with `--config job_server=False`; never with a cluster executor, whose jobs run on other machines.
import os
import shutil
import subprocess
import tempfile

from dualrs.jobserver import SOCKET_VARIABLE

JOB_SERVER_LOG = "logs/job_server.log"
job_server = {}


def start_job_server():
    """Start the server unless turned off, not local, or unsupported (no pidfd: not Linux)."""
    wanted = config["job_server"] and workflow.local_exec and not workflow.touch
    executable = shutil.which("dualrs")
    if not (wanted and executable and hasattr(os, "pidfd_open")):
        return
    # a short folder: a socket's path has at most 107 bytes
    folder = tempfile.mkdtemp(prefix="dualrs-jobs-")
    socket_path = os.path.join(folder, "socket")
    os.makedirs(os.path.dirname(JOB_SERVER_LOG), exist_ok=True)
    with open(JOB_SERVER_LOG, "w") as log:
        process = subprocess.Popen(
            [executable, "job-server", socket_path, str(os.getpid())],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    job_server.update(process=process, folder=folder)
    # the jobs' environment; those that start before the server listens run their commands alone
    os.environ[SOCKET_VARIABLE] = socket_path


def stop_job_server():
    if "process" in job_server:
        os.environ.pop(SOCKET_VARIABLE, None)
        job_server["process"].terminate()
        job_server["process"].wait()
        shutil.rmtree(job_server["folder"], ignore_errors=True)


onstart:
    start_job_server()


onsuccess:
    stop_job_server()


onerror:
    stop_job_server()
