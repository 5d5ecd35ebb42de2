"""Training targets for the variance estimator (Sun et al. 2025, Sec. 5.1).

Each training sample i is certified under every candidate σ_k with n_label samples, giving radii
r_ik (0 when the smoothed classifier abstains or is wrong). The soft target is
q_i = softmax(r_i / τ) over the candidates (or, as an ablation, the one-hot argmax_k r_ik), and the
loss is reweighted so that every candidate, counted by argmax_k r_ik, has equal total weight.
"""
from __future__ import annotations

from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
from scipy.special import softmax

from dualrs.tables import read_table

K = TypeVar("K", bound=Hashable)


def radius_matrix(label_tables: Mapping[K, Path | str]) -> tuple[np.ndarray, np.ndarray, list[K]]:
    """Read one labels TSV per candidate (a σ, or an expert of a router) into (idx, radii N×K, candidates),
    columns in the mapping's order, radius 0 where the certificate is not correct."""
    keys = list(label_tables)
    frames = [read_table(label_tables[k]).set_index("idx").sort_index() for k in keys]
    idx = frames[0].index
    for key, frame in zip(keys, frames):
        if not frame.index.equals(idx):
            raise ValueError(f"label table for {key} covers other samples than the one for {keys[0]}")
    radii = np.stack([np.where(f["correct"].to_numpy() == 1, f["radius"].to_numpy(), 0.0) for f in frames], axis=1)
    return idx.to_numpy(), radii, keys


def soft_labels(radii: np.ndarray, temperature: float) -> np.ndarray:
    """q_ik = exp(r_ik/τ) / Σ_j exp(r_ij/τ): rows sum to one, larger radius ⇒ larger mass."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature!r}")
    return softmax(np.asarray(radii, dtype=np.float64) / temperature, axis=1)


def hard_labels(radii: np.ndarray) -> np.ndarray:
    """q_ik = 1[k = argmax_j r_ij]: the best candidate as a one-hot row (the τ → 0 limit of
    :func:`soft_labels` where the maximum is unique; ties go to the first candidate, the smallest σ)."""
    radii = np.asarray(radii)
    return np.eye(radii.shape[1])[radii.argmax(axis=1)]


def training_subset(num_samples: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted positions of round(fraction · N) of N samples (at least one), drawn uniformly without
    replacement by a generator seeded with ``seed``; fraction 1 keeps every sample."""
    if not 0 < fraction <= 1:
        raise ValueError(f"train fraction must lie in (0, 1], got {fraction!r}")
    size = max(1, round(fraction * num_samples))
    return np.sort(np.random.default_rng(seed).choice(num_samples, size=size, replace=False))


def class_balance_weights(radii: np.ndarray) -> np.ndarray:
    """w_i = N / (K · N_{k(i)}) with k(i) = argmax_k r_ik, so each candidate's total weight is N/K.

    Samples certified under no σ (all radii 0) carry no information about the best σ and get 0.
    """
    radii = np.asarray(radii)
    informative = radii.max(axis=1) > 0
    best = radii.argmax(axis=1)
    counts = np.bincount(best[informative], minlength=radii.shape[1]).astype(np.float64)
    present = counts > 0
    weights = np.zeros(len(radii))
    scale = informative.sum() / present.sum() if present.any() else 0.0
    weights[informative] = scale / counts[best[informative]]
    return weights


def label_summary(radii: np.ndarray, candidates: list) -> pd.DataFrame:
    """How often each candidate σ (or expert) gives the largest radius (for logs)."""
    informative = radii.max(axis=1) > 0
    best = radii.argmax(axis=1)[informative]
    return pd.DataFrame({"candidate": candidates, "best": np.bincount(best, minlength=len(candidates))})
