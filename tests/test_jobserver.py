"""The job server (dualrs.jobserver) and the `dualrs` command's client (dualrs.launch): a served command
writes what the same command run alone writes, exits the same way, and is stopped with its client."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from dualrs.jobserver import SOCKET_VARIABLE, identity

PREPARE = ["prepare-data", "--dataset", "digits", "--root"]


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.05)


def start_server(path: Path, **popen) -> subprocess.Popen:
    server = subprocess.Popen([sys.executable, "-m", "dualrs", "job-server", str(path), str(os.getpid())], **popen)
    wait_for(lambda: path.exists() or server.poll() is not None, 300, "the job server's socket")
    assert server.poll() is None, "the job server exited while preloading"
    return server


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("jobs") / "socket"
    process = start_server(path)
    yield path
    process.terminate()
    assert process.wait(30) == 0
    assert not path.exists(), "the server leaves its socket behind"


def dualrs(args: list[str], cwd: Path, server: Path | None, **popen) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != SOCKET_VARIABLE}
    if server is not None:
        env[SOCKET_VARIABLE] = str(server)
    return subprocess.run([sys.executable, "-m", "dualrs", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, **popen)


def train_args(epochs: int, out: str) -> list[str]:
    return ["train-classifier", "--dataset", "digits", "--root", "data", "--epochs", str(epochs), "--batch-size",
            "64", "--lr", "0.001", "--arch", "digits_cnn", "--sigma", "0.5", "--device", "cpu", "--threads", "2",
            "--out", out]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, server) -> Path:
    work = tmp_path_factory.mktemp("work")
    result = dualrs([*PREPARE, "data"], work, server)
    assert result.returncode == 0, result.stderr
    return work


@pytest.fixture(scope="module")
def served_training(prepared, server) -> subprocess.CompletedProcess:
    """A classifier trained by a served command (torch with two intra-op threads in a forked child), in the
    client's cwd: served.safetensors."""
    return dualrs(train_args(2, "served.safetensors"), prepared, server)


@pytest.mark.slow
def test_a_served_command_writes_what_the_command_alone_writes(prepared, served_training, tmp_path):
    alone = dualrs([*PREPARE, str(tmp_path / "data")], tmp_path, None)
    assert alone.returncode == 0, alone.stderr
    written = sorted(p.relative_to(prepared / "data") for p in (prepared / "data").rglob("*") if p.is_file())
    assert written == sorted(p.relative_to(tmp_path / "data") for p in (tmp_path / "data").rglob("*") if p.is_file())
    assert all((prepared / "data" / p).read_bytes() == (tmp_path / "data" / p).read_bytes() for p in written)
    # same weights as a fresh process
    served = served_training
    alone = dualrs(train_args(2, "alone.safetensors"), prepared, None)
    assert served.returncode == alone.returncode == 0, served.stderr + alone.stderr
    assert (prepared / "served.safetensors").read_bytes() == (prepared / "alone.safetensors").read_bytes()
    assert "forked by job server" in served.stderr and "forked by job server" not in alone.stderr


DENOISER = ["train-denoiser", "--dataset", "digits", "--root", "data", "--steps", "3", "--batch-size", "8", "--lr",
            "0.002", "--threads", "1", "--device", "cpu", "--out"]


def certify_denoised(denoiser: str, out: str) -> list[str]:
    return ["certify-global", "--dataset", "digits", "--root", "data", "--n0", "8", "--n", "32", "--batch-size", "16",
            "--every", "60", "--denoiser", denoiser, "--classifier", "served.safetensors", "--sigma", "0.5",
            "--alpha", "0.01", "--device", "cpu", "--threads", "1", "--out", out]


@pytest.mark.slow
def test_a_served_ddpm_and_denoised_certification_write_what_they_write_alone(prepared, server, served_training):
    """The DDPM's training and a denoised-smoothing certificate, the jobs whose imports the server saves most."""
    assert served_training.returncode == 0, served_training.stderr
    for kind in ("served", "alone"):
        where = server if kind == "served" else None
        result = dualrs([*DENOISER, f"ddpm_{kind}"], prepared, where)
        assert result.returncode == 0, result.stderr
        result = dualrs(certify_denoised(f"ddpm_{kind}", f"{kind}.tsv"), prepared, where)
        assert result.returncode == 0, result.stderr
        assert ("forked by job server" in result.stderr) == (kind == "served")
    weights = "unet/diffusion_pytorch_model.safetensors"
    assert (prepared / "ddpm_served" / weights).read_bytes() == (prepared / "ddpm_alone" / weights).read_bytes()
    served, alone = (pd.read_csv(prepared / f"{kind}.tsv", sep="\t").drop(columns="time") for kind in ("served", "alone"))
    assert len(served) == 9 and served.equals(alone)


@pytest.mark.parametrize("args,code,message", [
    (["certify-global", "--sigma", "-1"], 2, "sigma must be a positive number"),  # argparse: exit 2
    (train_args(1, "out.safetensors") + ["--root", "nowhere"], 1, "nowhere"),  # the command's own error: exit 1 with one message
    (["--version"], 0, ""),
])
def test_a_served_command_exits_and_reports_as_the_command_alone(prepared, server, args, code, message):
    served, alone = dualrs(args, prepared, server), dualrs(args, prepared, None)
    assert served.returncode == alone.returncode == code
    assert message in served.stderr and message in alone.stderr
    assert served.stdout == alone.stdout


def child_pid(log: Path) -> int:
    """The served process's pid, from the header its log starts with (dualrs.runlog)."""
    wait_for(lambda: log.exists() and "forked by job server" in log.read_text() and ", pid " in log.read_text(), 120,
             "the served job's header")
    return int(log.read_text().split(", pid ", 1)[1].split(",", 1)[0])


def gone(pid: int) -> bool:
    """The process has exited (a zombie not yet reaped by its parent counts as exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL])
def test_a_stopped_client_stops_its_served_command(prepared, server, tmp_path, stop):
    """SIGTERM is relayed to the child; a client killed outright closes its connection, and the server
    then sends the child SIGTERM."""
    log = tmp_path / "long.log"
    env = {**os.environ, SOCKET_VARIABLE: str(server)}
    with log.open("w") as out:
        client = subprocess.Popen([sys.executable, "-m", "dualrs", *train_args(10_000, "long.safetensors")],
                                  cwd=prepared, env=env, stdout=out, stderr=subprocess.STDOUT)
    pid = child_pid(log)
    client.send_signal(stop)
    assert client.wait(30) == -stop
    wait_for(lambda: gone(pid), 30, f"served process {pid} to end")
    assert not (prepared / "long.safetensors").exists()


def request(server: Path, **changes) -> str:
    with socket.socket(socket.AF_UNIX) as connection:
        connection.connect(str(server))
        message = {"argv": ["--version"], "cwd": os.getcwd(), "env": dict(os.environ), **identity(), **changes}
        with open(os.devnull, "w") as sink:
            socket.send_fds(connection, [json.dumps(message).encode() + b"\n"], [0, sink.fileno(), sink.fileno()])
        return connection.makefile("r").read()


def test_a_client_of_another_environment_is_refused_and_runs_its_command_itself(server, tmp_path):
    assert request(server, prefix="/another/venv") == "refused different prefix from the server's\n"
    assert request(server, package="/another/dualrs") == "refused different package from the server's\n"
    with socket.socket(socket.AF_UNIX) as connection:  # not a request: refused, and the server goes on
        connection.connect(str(server))
        connection.sendall(b"{not json\n")
        assert connection.makefile("r").read().startswith("refused unreadable request (JSONDecodeError")
    with socket.socket(socket.AF_UNIX) as connection:
        connection.connect(str(server))  # and goes away at once
    replies = request(server).splitlines()
    assert [line.split()[0] for line in replies] == ["pid", "status"] and replies[1] == "status 0"
    nowhere = dualrs(["--version"], tmp_path, tmp_path / "no-socket")
    assert nowhere.returncode == 0 and nowhere.stdout.startswith("dualrs ")


@pytest.mark.slow
def test_the_server_stops_when_the_process_that_started_it_is_gone(tmp_path):
    path = tmp_path / "socket"
    parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                               "import os; p = subprocess.Popen([sys.executable, '-m', 'dualrs', 'job-server', "
                               f"{str(path)!r}, str(os.getpid())]); "
                               "print(p.pid, flush=True); time.sleep(600)"], stdout=subprocess.PIPE, text=True)
    server = int(parent.stdout.readline())
    wait_for(path.exists, 300, "the job server's socket")
    parent.kill()
    parent.wait()
    wait_for(lambda: not path.exists(), 30, "the orphaned server to stop")
    wait_for(lambda: gone(server), 30, "the orphaned server to exit")


def test_a_server_whose_parent_is_already_gone_exits_without_listening(tmp_path):
    """Snakemake killed while its server starts: the server, reparented before it could look, exits at once."""
    gone_parent = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                                 text=True, check=True).stdout.strip()
    result = subprocess.run([sys.executable, "-m", "dualrs", "job-server", str(tmp_path / "socket"), gone_parent],
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr, list(tmp_path.iterdir())) == (0, "", [])
    for args in ([], ["only-a-socket"], ["socket", "not-a-pid"]):
        usage = subprocess.run([sys.executable, "-m", "dualrs", "job-server", *args], capture_output=True, text=True)
        assert (usage.returncode, usage.stderr) == (1, "usage: dualrs job-server SOCKET PARENT_PID\n")


def test_exit_fast_exits_as_sys_exit_does_after_the_atexit_handlers(tmp_path):
    for code, status, stderr in (("'no such file'", 1, "no such file\n"), ("3", 3, ""), ("None", 0, "")):
        result = subprocess.run([sys.executable, "-c", "import atexit; from dualrs.launch import exit_fast; "
                                 f"atexit.register(print, 'atexit ran'); print('out', end=' '); exit_fast({code})"],
                                capture_output=True, text=True)
        assert (result.returncode, result.stdout, result.stderr) == (status, "out atexit ran\n", stderr)
