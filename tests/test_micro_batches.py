"""Training steps split into micro-batches, under autocast or with activation checkpointing (dualrs/train.py)."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from dualrs.models import create_model
from dualrs.train import Optim, _fit


def fitted(model: nn.Module, optim: Optim) -> list[float]:
    torch.manual_seed(0)
    x, y = torch.randn(40, 6), torch.randint(0, 3, (40,))
    return _fit(model, TensorDataset(x, y), lambda a, b: nn.functional.cross_entropy(model(a), b), optim, 0, "cpu",
                "test")


@pytest.mark.parametrize("micro", [1, 3, 8])
def test_micro_batches_make_the_same_update_as_whole_batches(micro):
    torch.manual_seed(1)
    whole, split = nn.Linear(6, 3), nn.Linear(6, 3)
    split.load_state_dict(whole.state_dict())
    base = dict(epochs=2, batch_size=8, lr=0.05, optimizer="adamw", weight_decay=0.01)
    losses_whole = fitted(whole, Optim(**base))
    losses_split = fitted(split, Optim(**base, micro_batch_size=micro))
    assert losses_split == pytest.approx(losses_whole, rel=1e-5)
    for a, b in zip(whole.parameters(), split.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_a_micro_batch_larger_than_the_batch_is_the_whole_batch():
    torch.manual_seed(1)
    a, b = nn.Linear(6, 3), nn.Linear(6, 3)
    b.load_state_dict(a.state_dict())
    assert fitted(a, Optim(1, 8, 0.05)) == fitted(b, Optim(1, 8, 0.05, micro_batch_size=64))


@pytest.mark.parametrize("settings, message", [
    (dict(micro_batch_size=0), "micro_batch_size must be a positive integer"),
    (dict(precision="fp16"), "precision must be one of"),
])
def test_bad_memory_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        Optim(1, 8, 0.1, **settings)


def test_checkpointing_keeps_the_losses_and_is_refused_for_a_model_without_it():
    vit_plain = create_model("timm/test_vit", 3, 3, input_size=32)
    vit_ckpt = create_model("timm/test_vit", 3, 3, input_size=32)
    vit_ckpt.load_state_dict(vit_plain.state_dict())
    x, y = torch.rand(8, 3, 32, 32), torch.randint(0, 3, (8,))

    def run(model: nn.Module, optim: Optim) -> list[float]:
        return _fit(model, TensorDataset(x, y), lambda a, b: nn.functional.cross_entropy(model(a), b), optim, 0,
                    "cpu", "vit")

    assert run(vit_ckpt, Optim(1, 4, 1e-3, grad_checkpointing=True)) == pytest.approx(
        run(vit_plain, Optim(1, 4, 1e-3)), rel=1e-5)
    with pytest.raises(ValueError, match="offers no gradient checkpointing"):
        fitted(nn.Linear(6, 3), Optim(1, 8, 0.1, grad_checkpointing=True))
