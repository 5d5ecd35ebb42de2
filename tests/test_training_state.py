"""Training resumes after an interruption with the weights and losses of an uninterrupted run; a state
saved under other settings is set aside, an unreadable one is an error naming it, and a job deletes
the state once its checkpoint is saved."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from dualrs.cli import main
from dualrs.data import prepare_dataset
from dualrs.denoise import train_ddpm
from dualrs import training_state
from dualrs.models import create_model
from dualrs.train import Optim, train_classifier, train_classifier_at_routed_sigmas, train_estimator
from dualrs.training_state import TrainingState, state_file_for

EPOCHS = 4
OPTIM = Optim(epochs=EPOCHS, batch_size=32, lr=0.01)


class Interrupted(Exception):
    """Stands for the job being killed right after an epoch's state is saved."""


def data(size: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.rand((size, 1, 8, 8), generator=generator), torch.randint(0, 10, (size,), generator=generator)


def fresh_model(num_classes: int = 10) -> torch.nn.Module:
    torch.manual_seed(3)
    return create_model("digits_cnn", num_classes, 1)


def run(loop: str, optim: Optim, state_file: Path | None) -> tuple[torch.nn.Module, list[float]]:
    """One of the training loops on fixed data, from the same initial weights."""
    x, y = data()
    if loop == "classifier":
        model = fresh_model()
        return model, train_classifier(model, TensorDataset(x, y), 0.5, optim, 0, state_file=state_file)
    if loop == "routed":
        model = fresh_model()
        sigmas = [0.25 if i % 3 else 0.5 for i in range(len(x))]
        return model, train_classifier_at_routed_sigmas({0.25: model, 0.5: model}, TensorDataset(x, y), sigmas, optim,
                                                        0, state_file=state_file)
    if loop == "ddpm":  # a step stands for an epoch
        unet, _ = train_ddpm(x, steps=optim.epochs, batch_size=optim.batch_size, lr=optim.lr, seed=0, progress=False,
                             state_file=state_file)
        return unet, []  # train_ddpm returns no losses: its weights are compared
    model = fresh_model(num_classes=3)
    targets = torch.softmax(torch.rand((len(x), 3), generator=torch.Generator().manual_seed(2)), dim=1)
    return model, train_estimator(model, x, targets, torch.ones(len(x)), 0.5, optim, 0, lam=1.0, eta=0.5, copies=2,
                                  class_weight="both", radius=torch.ones(len(x)), state_file=state_file)


def interrupt_after(monkeypatch: pytest.MonkeyPatch, epochs: int) -> list[int]:
    """Save the state after every epoch and raise Interrupted once ``epochs`` epochs are saved; returns the
    epochs saved."""
    saved, save = [], TrainingState.save_if_due
    monkeypatch.setattr(training_state, "SAVE_INTERVAL_S", 0.0)

    def save_then_stop(self, model, optimizer, loader_generator, history):
        save(self, model, optimizer, loader_generator, history)
        saved.append(len(history))
        if len(history) == epochs:
            raise Interrupted

    monkeypatch.setattr(TrainingState, "save_if_due", save_then_stop)
    return saved


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


@pytest.mark.parametrize("loop", ["classifier", "routed", "estimator", "ddpm"])
def test_an_interrupted_training_resumes_to_the_uninterrupted_weights_and_losses(tmp_path, monkeypatch, loop):
    expected_model, expected_history = run(loop, OPTIM, None)
    state_file = tmp_path / "model.safetensors.partial.pt"
    saved = interrupt_after(monkeypatch, 2)
    with pytest.raises(Interrupted):
        run(loop, OPTIM, state_file)
    assert saved == [1, 2] and state_file.is_file()
    monkeypatch.undo()
    saved = interrupt_after(monkeypatch, EPOCHS + 1)  # counts the epochs the rerun trains, never stops it
    model, history = run(loop, OPTIM, state_file)
    assert saved == [3, 4]  # the rerun trained the two missing epochs only
    assert history == expected_history
    assert same_weights(model, expected_model)


def test_a_state_saved_with_other_settings_is_set_aside(tmp_path, monkeypatch):
    state_file = tmp_path / "model.safetensors.partial.pt"
    interrupt_after(monkeypatch, 2)
    with pytest.raises(Interrupted):
        run("classifier", OPTIM, state_file)
    monkeypatch.undo()
    other = Optim(epochs=EPOCHS, batch_size=32, lr=0.02)
    with pytest.warns(UserWarning, match="was saved with other settings; training starts over"):
        model, history = run("classifier", other, state_file)
    expected_model, expected_history = run("classifier", other, None)
    assert history == expected_history and same_weights(model, expected_model)


def test_other_initial_weights_set_a_state_aside(tmp_path, monkeypatch):
    state_file = tmp_path / "model.safetensors.partial.pt"
    interrupt_after(monkeypatch, 1)
    x, y = data()
    with pytest.raises(Interrupted):
        train_classifier(fresh_model(), TensorDataset(x, y), 0.5, OPTIM, 0, state_file=state_file)
    monkeypatch.undo()
    torch.manual_seed(4)  # another initialisation: a retrained checkpoint to finetune, say
    with pytest.warns(UserWarning, match="other settings"):
        train_classifier(create_model("digits_cnn", 10, 1), TensorDataset(x, y), 0.5, OPTIM, 0, state_file=state_file)


def test_an_unreadable_state_is_an_error_naming_it(tmp_path):
    state_file = tmp_path / "model.safetensors.partial.pt"
    state_file.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=f"{state_file} is not a training state this loop can read .*delete it"):
        run("classifier", OPTIM, state_file)


JOBS = {  # a training command, the name of its output, and the files of that output compared byte for byte
    "train-classifier": (["--arch", "digits_cnn", "--sigma", "0.5", "--epochs", "3", "--batch-size", "256", "--lr",
                          "0.01"], "model.safetensors", ["model.safetensors", "model.json"]),
    "train-denoiser": (["--steps", "3", "--batch-size", "16", "--lr", "0.002"], "denoiser",
                       ["denoiser/unet/diffusion_pytorch_model.safetensors", "denoiser/scheduler/scheduler_config.json"]),
}


@pytest.mark.parametrize("job", JOBS)
def test_a_training_job_resumes_and_deletes_the_state_with_its_output(tmp_path, monkeypatch, job):
    options, name, compared = JOBS[job]
    root = tmp_path / "data"
    prepare_dataset("digits", root, seed=0)
    command = [job, "--dataset", "digits", "--root", str(root), *options, "--device", "cpu", "--seed", "0"]
    main([*command, "--out", str(tmp_path / "alone" / name)])
    out = tmp_path / "resumed" / name
    interrupt_after(monkeypatch, 1)
    with pytest.raises(Interrupted):
        main([*command, "--out", str(out)])
    assert state_file_for(out).is_file() and not out.exists()
    monkeypatch.undo()
    main([*command, "--out", str(out)])
    assert not state_file_for(out).exists()
    for path in compared:  # the same weights, and for the classifier the same losses in its metadata
        assert (tmp_path / "alone" / path).read_bytes() == (tmp_path / "resumed" / path).read_bytes(), path


def test_the_state_is_saved_once_the_interval_has_passed(tmp_path, monkeypatch):
    state_file = tmp_path / "model.safetensors.partial.pt"
    run("classifier", OPTIM, state_file)  # four short epochs: none reaches the interval
    assert not state_file.exists()
    clock = iter(range(0, 1000, 40))  # each reading of the clock 40 s after the last
    monkeypatch.setattr(training_state.time, "monotonic", lambda: float(next(clock)))
    saves = []
    monkeypatch.setattr(training_state.torch, "save", lambda state, path: saves.append(state["history"]))
    run("classifier", OPTIM, state_file)
    assert [len(h) for h in saves] == [2, 4]  # 80 s after the start, then 80 s after that save
