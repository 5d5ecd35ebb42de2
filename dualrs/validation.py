"""Checks of user input that run before any noise is drawn or any file is written.

Each check raises one ``ValueError`` (``TypeError`` for a wrong type) that names what is wrong.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

LEVEL_RULE = "a one-sided confidence bound that fails with probability 0.5 or more certifies nothing"


def check_input(x: Any) -> None:
    """``x`` must be one input without batch dimension: a non-empty floating-point tensor of finite values.

    Smoothing adds Gaussian noise to ``x`` in the model's dtype, and a NaN or ±inf coordinate would make
    every noisy copy non-finite, so p_A and the radius would say nothing about x.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor (one input without batch dimension), got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() == 0 or x.numel() == 0:
        raise ValueError(f"x must be one input without batch dimension with at least one value, "
                         f"got shape {tuple(x.shape)}")
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ValueError(f"x has {bad} non-finite value(s) (NaN or inf) among {x.numel()}; "
                         "smoothing needs a finite input")


def check_checkpoint(meta: Mapping[str, Any], path: Path | str, num_classes: int, in_chans: int, what: str) -> None:
    """A checkpoint's metadata must match the classes and input channels of its use, named by ``what``
    (e.g. "a classifier of dataset 'digits'")."""
    if (meta["num_classes"], meta["in_chans"]) != (num_classes, in_chans):
        raise ValueError(f"checkpoint {path} is for {meta['num_classes']} classes from {meta['in_chans']}-channel "
                         f"inputs, but {what} needs {num_classes} classes from {in_chans}-channel inputs")
