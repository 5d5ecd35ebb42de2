"""GPU slot pinning: distinct slots across processes, release on death, the CLI hook."""
import multiprocessing
import os
import signal
import time

import pytest
import torch

from dualrs import cli, gpu_slots, tasks

FORK = multiprocessing.get_context("fork")


def test_claims_the_lowest_free_slot_and_pins_cuda_to_it(tmp_path):
    first, second = {gpu_slots.LOCK_DIR_VARIABLE: str(tmp_path)}, {gpu_slots.LOCK_DIR_VARIABLE: str(tmp_path)}
    slot0 = gpu_slots.pin_gpu(4, first)
    slot1 = gpu_slots.pin_gpu(4, second)
    assert (slot0.index, first["CUDA_VISIBLE_DEVICES"]) == (0, "0")
    assert (slot1.index, second["CUDA_VISIBLE_DEVICES"]) == (1, "1")
    slot0.release()
    assert gpu_slots.try_claim(4, tmp_path).index == 0


@pytest.mark.parametrize("environ,device_count", [
    ({"CUDA_VISIBLE_DEVICES": "3", "SLURM_JOB_ID": "17"}, 4),  # Slurm granted GPU 3
    ({"CUDA_VISIBLE_DEVICES": ""}, 4),                         # the user hid every GPU
    ({}, 0),                                                   # no GPU visible
])
def test_leaves_assigned_or_absent_gpus_alone(tmp_path, environ, device_count):
    environ = {gpu_slots.LOCK_DIR_VARIABLE: str(tmp_path / "locks"), **environ}
    before = dict(environ)
    assert gpu_slots.pin_gpu(device_count, environ) is None
    assert environ == before and not (tmp_path / "locks").exists()


def test_lock_dir_is_per_user_unless_set(tmp_path):
    assert gpu_slots.lock_dir({}).name == f"dualrs-gpu-slots-{os.getuid()}"
    assert gpu_slots.lock_dir({gpu_slots.LOCK_DIR_VARIABLE: str(tmp_path)}) == tmp_path


def test_rejects_zero_slots(tmp_path):
    with pytest.raises(ValueError, match="num_slots"):
        gpu_slots.claim(0, tmp_path)


def _hold_until_all_hold(directory, num_slots, barrier, results):
    slot = gpu_slots.claim(num_slots, directory, poll_seconds=0.01)
    barrier.wait(timeout=30)  # every process holds its slot at this moment
    results.put(slot.index)


def test_as_many_processes_as_gpus_get_one_gpu_each(tmp_path):
    num_slots = 4
    barrier, results = FORK.Barrier(num_slots), FORK.Queue()
    workers = [FORK.Process(target=_hold_until_all_hold, args=(tmp_path, num_slots, barrier, results), daemon=True)
               for _ in range(num_slots)]
    for worker in workers:
        worker.start()
    indices = sorted(results.get(timeout=30) for _ in workers)
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    assert indices == list(range(num_slots))


def _hold_briefly(directory, num_slots, start, results):
    start.wait(timeout=30)
    slot = gpu_slots.claim(num_slots, directory, poll_seconds=0.005)
    held_from = time.monotonic()
    time.sleep(0.1)
    results.put((slot.index, held_from, time.monotonic()))
    slot.release()


def test_more_processes_than_gpus_never_share_a_slot(tmp_path):
    num_slots, num_workers = 2, 8
    start, results = FORK.Event(), FORK.Queue()
    workers = [FORK.Process(target=_hold_briefly, args=(tmp_path, num_slots, start, results), daemon=True)
               for _ in range(num_workers)]
    for worker in workers:
        worker.start()
    start.set()
    held = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    assert {index for index, _, _ in held} == set(range(num_slots))
    for index in range(num_slots):
        spans = sorted((begin, end) for i, begin, end in held if i == index)
        assert all(end <= next_begin for (_, end), (next_begin, _) in zip(spans, spans[1:])), spans


def _hold_forever(directory, claimed):
    slot = gpu_slots.claim(1, directory)
    claimed.set()
    time.sleep(600)
    slot.release()


def test_a_killed_process_frees_its_slot(tmp_path):
    claimed = FORK.Event()
    holder = FORK.Process(target=_hold_forever, args=(tmp_path, claimed), daemon=True)
    holder.start()
    try:
        assert claimed.wait(timeout=30)
        assert gpu_slots.try_claim(1, tmp_path) is None
    finally:
        os.kill(holder.pid, signal.SIGKILL)
    holder.join(timeout=30)
    assert holder.exitcode == -signal.SIGKILL
    assert gpu_slots.try_claim(1, tmp_path).index == 0


@pytest.fixture
def fake_gpus(tmp_path, monkeypatch):
    """Two visible GPUs, no CUDA_VISIBLE_DEVICES, locks under tmp_path (all restored afterwards)."""
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv(gpu_slots.LOCK_DIR_VARIABLE, str(tmp_path / "locks"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    return tmp_path / "locks"


def _label_argv(tmp_path, *extra):
    checkpoint = tmp_path / "classifier.safetensors"
    checkpoint.touch()
    return ["label", "--dataset", "digits", "--root", str(tmp_path), "--classifier", str(checkpoint),
            "--sigma", "0.5", "--n0", "1", "--n", "1", "--batch-size", "1", "--alpha", "0.01",
            "--out", str(tmp_path / "out.tsv"), *extra]


def test_cli_pins_model_commands_before_they_run(tmp_path, monkeypatch, fake_gpus):
    seen = []
    monkeypatch.setattr(tasks, "certify_smoothed", lambda *args: seen.append(
        (os.environ.get("CUDA_VISIBLE_DEVICES"), gpu_slots.try_claim(1, fake_gpus))))
    other = gpu_slots.try_claim(1, fake_gpus)  # another job holds GPU 0
    cli.main(_label_argv(tmp_path))
    assert seen == [("1", None)]  # GPU 1, still locked while the command ran
    other.release()
    assert gpu_slots.try_claim(2, fake_gpus).index == 0  # both free again after the command


def test_cli_does_not_pin_cpu_runs_or_host_commands(tmp_path, monkeypatch, fake_gpus):
    seen = []
    monkeypatch.setattr(tasks, "certify_smoothed", lambda *args: seen.append(os.environ.get("CUDA_VISIBLE_DEVICES")))
    cli.main(_label_argv(tmp_path, "--device", "cpu"))
    table = tmp_path / "shard.tsv"
    table.write_text("idx\tlabel\n0\t1\n")
    cli.main(["merge", str(table), "--out", str(tmp_path / "merged.tsv")])
    assert seen == [None] and "CUDA_VISIBLE_DEVICES" not in os.environ
    assert not fake_gpus.exists()


def test_host_commands_are_commands():
    commands = set(cli.build_parser()._subparsers._group_actions[0].choices)
    assert cli.HOST_COMMANDS < commands
