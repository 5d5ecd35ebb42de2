"""A command's stderr, as a job log: header first, summary last, progress as plain lines."""
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from dualrs.progress import LineWriter

LONGEST_LINE = 300


def run(args: list[str], log: Path, cwd: Path) -> int:
    """``dualrs ARGS`` with stderr written to ``log`` (not a terminal); its exit status."""
    with open(log, "w") as stderr:
        return subprocess.run([sys.executable, "-m", "dualrs", *args], cwd=cwd, stderr=stderr,
                              stdout=subprocess.DEVNULL).returncode


def check_log(text: str) -> list[str]:
    """The log's lines, after checking it is line-oriented: no carriage returns, no overlong lines."""
    assert "\r" not in text
    lines = text.splitlines()
    assert max(map(len, lines)) <= LONGEST_LINE
    return lines


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("logs")
    assert run(["prepare-data", "--dataset", "digits", "--root", "data", "--seed", "3"],
               folder / "prepare.log", folder) == 0
    assert run(["train-classifier", "--dataset", "digits", "--root", "data", "--arch", "digits_cnn", "--sigma",
                "0.25", "--epochs", "1", "--batch-size", "128", "--lr", "0.01", "--device", "cpu", "--threads", "1",
                "--out", "clf.safetensors"], folder / "train.log", folder) == 0
    return folder


@pytest.mark.slow
def test_prepare_data_log_has_header_what_it_wrote_and_summary(logs):
    lines = check_log((logs / "prepare.log").read_text())
    assert lines[0] == "[dualrs] command: dualrs prepare-data --dataset digits --root data --seed 3"
    assert lines[1].startswith("[dualrs] versions: dualrs ") and ", torch " in lines[1] and ", python " in lines[1]
    assert "[dualrs] seed: 3" in lines and any(line.startswith("[dualrs] host: ") for line in lines)
    assert "prepare-data: wrote digits to data: test 540 items, train 1257 items" in lines
    assert lines[-1].startswith("[dualrs] done: exit 0, wall ") and " peak RSS " in lines[-1]


@pytest.mark.slow
def test_training_log_has_device_progress_lines_and_input_digests(logs):
    lines = check_log((logs / "train.log").read_text())
    assert lines[0].startswith("[dualrs] command: dualrs train-classifier --dataset digits")
    assert "[dualrs] device: cpu" in lines and "[dualrs] seed: 0" in lines
    assert any(line.startswith("classifier sigma=0.25: 100%") for line in lines)
    assert lines[-1].startswith("[dualrs] done: exit 0")

    checkpoint = logs / "clf.safetensors"
    assert run(["certify-global", "--dataset", "digits", "--root", "data", "--classifier", checkpoint.name,
                "--sigma", "0.25", "--n0", "8", "--n", "32", "--batch-size", "32", "--every", "100", "--alpha",
                "0.01", "--device", "cpu", "--out", "cert.tsv"], logs / "certify.log", logs) == 0
    lines = check_log((logs / "certify.log").read_text())
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:12]
    assert f"[dualrs] input --classifier: clf.safetensors sha256 {digest}" in lines
    assert lines[-1].startswith("[dualrs] done: exit 0")


def test_a_failing_command_logs_its_exit_status(tmp_path):
    (tmp_path / "a.tsv").write_text("idx\tlabel\n0\t1\n")
    assert run(["merge", "a.tsv", "a.tsv", "--out", "merged.tsv"], tmp_path / "merge.log", tmp_path) == 1
    lines = check_log((tmp_path / "merge.log").read_text())
    assert lines[0] == "[dualrs] command: dualrs merge a.tsv a.tsv --out merged.tsv"
    assert "[dualrs] input inputs: a.tsv sha256" in " ".join(lines)
    assert any(line.startswith("[dualrs] done: exit 1 (ValueError), wall ") for line in lines)
    assert lines[-1] == "dualrs merge: error: shards overlap on idx [0]"


def test_redraws_become_whole_lines():
    class Sink:
        text = ""

        def write(self, text):
            self.text += text

    sink = Sink()
    writer = LineWriter(sink)
    for chunk in ("\rstep 1   ", "\rstep 2", "\n"):
        writer.write(chunk)
    assert sink.text == "step 1\nstep 2\n"
