"""Training that resumes where it was interrupted, with the result of an uninterrupted run.

At the end of an epoch, once :data:`SAVE_INTERVAL_S` seconds have passed since the loop started or
last saved (every epoch when epochs are longer), a training loop saves its state to
``<checkpoint>.partial.pt``: the trainable
weights and buffers, the optimizer's state, the random generators (torch's global ones, which draw
the training noise, and the data loader's shuffling generator) and the loss of every epoch so far.
A rerun with the same settings restores it and goes on from the next epoch; the learning-rate
schedule is replayed step by step to where it was. Every draw is then the one the uninterrupted run
made, so on the same machine the final weights are the same bit for bit. Settings that differ (the
loop, optimisation, seed, number of training items, or the initial weights, by content) start over
with a warning. The file is written atomically and read with ``torch.load(weights_only=True)``, which
never runs pickled code; writing the checkpoint (:func:`dualrs.io.save_checkpoint`,
:func:`dualrs.denoise.save_denoiser`) removes it. The DDPM's training (:func:`dualrs.denoise.train_ddpm`)
saves the same state, a training step standing for an epoch and its sampling generator for the data
loader's.
"""
from __future__ import annotations

import pickle
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dualrs.fingerprint import module_digest
from dualrs.tables import atomic_file

#: Seconds of training an interruption may lose at most (plus the epoch under way); saving after every
#: epoch made the digits CNN's training 10-20% slower.
SAVE_INTERVAL_S = 60.0


def state_file_for(checkpoint: Path | str) -> Path:
    """Where the training of ``checkpoint`` keeps its state between epochs."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + ".partial.pt")


class TrainingState:
    """The resumable state of one training loop at ``path``, valid for ``settings`` (JSON-like values)
    and the initial weights of ``model`` (recorded by content when the loop starts)."""

    def __init__(self, path: Path | str, settings: Mapping[str, Any], model: nn.Module):
        self.path = Path(path)
        self.settings = {**settings, "initial_weights": module_digest(model)}
        self.frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
        self.saved_at = time.monotonic()

    def restore(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, loader_generator: torch.Generator,
        steps_per_epoch: int,
    ) -> list[float]:
        """Load a saved state into the loop's objects and return the losses of its finished epochs; [] (and
        nothing loaded) without a state file or with one of other settings."""
        if not self.path.is_file():
            return []
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
        except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as error:
            raise ValueError(f"{self.path} is not a training state this loop can read ({type(error).__name__}: "
                             "damaged, or not written by dualrs); delete it to start the training over") from None
        if not isinstance(saved, dict) or saved.get("settings") != self.settings:
            warnings.warn(f"{self.path} was saved with other settings; training starts over", stacklevel=2)
            return []
        missing, unexpected = model.load_state_dict(saved["model"], strict=False)
        if unexpected or set(missing) - self.frozen:
            raise ValueError(f"{self.path} does not hold this model's weights (missing {sorted(missing)[:3]}, "
                             f"unexpected {sorted(unexpected)[:3]}); delete it to start over")
        history = [float(loss) for loss in saved["history"]]
        with warnings.catch_warnings():  # the replay steps the schedule without optimizer steps, on purpose
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(len(history) * steps_per_epoch):
                scheduler.step()
        optimizer.load_state_dict(saved["optimizer"])
        loader_generator.set_state(saved["loader_generator"])
        torch.set_rng_state(saved["rng_cpu"])
        if torch.cuda.is_available() and saved["rng_cuda"]:
            torch.cuda.set_rng_state_all(saved["rng_cuda"])
        return history

    def save_if_due(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, loader_generator: torch.Generator,
        history: list[float],
    ) -> None:
        """Record the state after ``len(history)`` finished epochs, replacing the previous one whole, if
        :data:`SAVE_INTERVAL_S` seconds have passed since the last save (or the start)."""
        if time.monotonic() - self.saved_at < SAVE_INTERVAL_S:
            return
        state = {
            "settings": self.settings,
            "history": list(history),
            "model": {k: v for k, v in model.state_dict().items() if k not in self.frozen},
            "optimizer": optimizer.state_dict(),
            "loader_generator": loader_generator.get_state(),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }
        with atomic_file(self.path) as tmp:
            torch.save(state, tmp)
        self.saved_at = time.monotonic()
