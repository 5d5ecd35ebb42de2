"""A toy dataset (noisy copies of three 6x6 patterns) and a small MLP, registered with dualrs by entry points."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from dualrs.data import DatasetInfo, DatasetSpec, LabeledTensorDataset

SIDE, CLASSES = 6, 3


@dataclass(frozen=True)
class ToyOptions:
    """``per_class``: training images per class (written to disk, so recorded in READY)."""

    per_class: int = field(default=60, metadata={"on_disk": True})


def _info(opts: ToyOptions) -> DatasetInfo:
    return DatasetInfo(num_classes=CLASSES, input_shape=(1, SIDE, SIDE))


def _prepare(root: Path, seed: int, opts: ToyOptions) -> None:
    rng = np.random.default_rng(seed)
    patterns = rng.uniform(0, 1, size=(CLASSES, 1, SIDE, SIDE))
    for split, per_class in (("train", opts.per_class), ("test", 20)):
        labels = np.repeat(np.arange(CLASSES), per_class)
        images = np.clip(patterns[labels] + rng.normal(0, 0.1, size=(len(labels), 1, SIDE, SIDE)), 0, 1)
        np.savez(root / f"{split}.npz", x=images.astype(np.float32), y=labels)


def _load(root: Path, split: str, opts: ToyOptions) -> LabeledTensorDataset:
    arrays = np.load(root / f"{split}.npz")
    return LabeledTensorDataset(torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"]))


TOY_BLOBS = DatasetSpec(ToyOptions, _info, _prepare, _load)


def toy_mlp(num_classes: int, in_chans: int = 1, width: int = 32) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(in_chans * SIDE * SIDE, width), nn.ReLU(),
                         nn.Linear(width, num_classes))
