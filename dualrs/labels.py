"""Training targets for the variance estimator (Sun et al. 2025, Sec. 5.1).

Each training sample i is certified under every candidate σ_k with n_label samples, giving radii
r_ik (0 when the smoothed classifier abstains or is wrong). The soft target is
q_i = softmax(r_i / τ) over the candidates, and the loss is reweighted so that every candidate,
counted by argmax_k r_ik, has equal total weight.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import softmax

from dualrs.io import read_table


def radius_matrix(label_tables: Mapping[float, Path | str]) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Read one labels TSV per σ into (idx, radii N×K, sigmas) with radius 0 where not correct."""
    sigmas = sorted(float(s) for s in label_tables)
    frames = [read_table(label_tables[s]).set_index("idx").sort_index() for s in sigmas]
    idx = frames[0].index
    for sigma, frame in zip(sigmas, frames):
        if not frame.index.equals(idx):
            raise ValueError(f"label table for sigma={sigma} covers other samples than sigma={sigmas[0]}")
    radii = np.stack([np.where(f["correct"].to_numpy() == 1, f["radius"].to_numpy(), 0.0) for f in frames], axis=1)
    return idx.to_numpy(), radii, sigmas


def soft_labels(radii: np.ndarray, temperature: float) -> np.ndarray:
    """q_ik = exp(r_ik/τ) / Σ_j exp(r_ij/τ): rows sum to one, larger radius ⇒ larger mass."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature!r}")
    return softmax(np.asarray(radii, dtype=np.float64) / temperature, axis=1)


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


def label_summary(radii: np.ndarray, sigmas: list[float]) -> pd.DataFrame:
    """How often each σ gives the largest radius (for logs)."""
    informative = radii.max(axis=1) > 0
    best = radii.argmax(axis=1)[informative]
    return pd.DataFrame({"sigma": sigmas, "best": np.bincount(best, minlength=len(sigmas))})
