"""Certify a user's own model on a user's own dataset, outside the pipeline.

:func:`certify_dataset` runs Cohen et al.'s CERTIFY on every (``every``-th) item of a torch
``Dataset`` with the pipeline's per-input seeded noise and resumable TSV writer, so it gives the
same certificates as ``dualrs certify-global`` on the same model, items and seed, and an
interrupted run resumes where it stopped.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset

from dualrs.fingerprint import module_digest
from dualrs.settings import Sampling
from dualrs.smoothing import Smooth, device_of, evaluation
from dualrs.tables import GLOBAL_COLUMNS, read_table
from dualrs.tasks import certify_split, resolve_device, smoothed_row
from dualrs.validation import check_count, check_input, check_settings


def certify_dataset(
    model: nn.Module, dataset: Dataset, sigma: float, *, n0: int, n: int, alpha: float, batch_size: int,
    out: Path | str | None = None, seed: int = 0, every: int = 1, num_classes: int | None = None,
    device: str | torch.device | None = None,
) -> pd.DataFrame:
    """Certify every ``every``-th item ``(x, label)`` of ``dataset`` with the smoothed ``model`` at noise ``sigma``.

    Returns Cohen et al.'s table (idx label predict radius correct time; predict -1 abstains) and,
    when ``out`` is given, writes it there as TSV, resuming ``<out>.partial`` left by an interrupted
    run with the same settings. ``num_classes`` defaults to the width of the model's output on the
    first item; ``device`` (default: where the model is; ``"auto"``: CUDA when available) is where
    the model is moved and the noise is drawn. The model runs in eval mode and is left in the mode
    it came in.
    """
    check_settings(sigma=sigma, n0=n0, n=n, alpha=alpha, batch_size=batch_size)
    check_count(every, "every")
    if len(dataset) == 0:
        raise ValueError("the dataset has no items to certify")
    device = device_of(model) if device is None else resolve_device(str(device))
    model = model.to(device)
    if num_classes is None:
        num_classes = _output_width(model, dataset[0][0], device)
    sampling = Sampling(n0, n, alpha, batch_size, seed, every)
    settings = {"sigma": sigma, "num_classes": num_classes, "model": module_digest(model), "num_items": len(dataset)}
    row = smoothed_row(Smooth(model, num_classes, sigma), sampling)
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(out) if out is not None else Path(scratch) / "certificates.tsv"
        certify_split(dataset, sampling, "certify", row, path, GLOBAL_COLUMNS, device, settings)
        return read_table(path)


def _output_width(model: nn.Module, x: torch.Tensor, device: torch.device) -> int:
    """The number of logits ``model`` returns for the input ``x`` (in eval mode, without gradients)."""
    check_input(x)
    with torch.no_grad(), evaluation(model):
        logits = model(x[None].to(device))
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"the model must return logits of shape (batch, classes), got {shape} for a batch of 1")
    return int(logits.shape[1])
