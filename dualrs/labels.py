"""Training targets and per-sample weights of the variance estimator (Sun et al. 2025, Sec. 5 and App.).

Each training sample i is certified under every candidate σ_k (or expert k) with n_label samples,
giving radii r_ik (0 when the smoothed classifier abstains or is wrong). Samples with r_ik = 0 for
every k are dropped; the rest are trained with the loss

    L = mean_i w_e(i) · ( softCE(q_i, f(x_i)) + w_r(i) · L_con(x_i) ),

with the target q_i = softmax(r_i) (plain softmax of the radii, Sec. 5; a temperature τ, softmax(r_i/τ),
and the one-hot argmax_k r_ik are ablations), the class-balance weight w_e and the radius weight w_r.
"""
from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
import pandas as pd
import torch
from scipy.special import ndtri, softmax

from dualrs.sequential import AdaptiveBound, AdaptiveStage, select_class, settle
from dualrs.smoothing import Smooth, lower_confidence_bound
from dualrs.table_checks import CERTIFICATE_KINDS, read_input_table

K = TypeVar("K", bound=Hashable)
RadiusWeight = Literal["strong", "weak", "none"]
RADIUS_WEIGHTS: tuple[RadiusWeight, ...] = ("strong", "weak", "none")


def radius_matrix(
    label_tables: Mapping[K, Path | str], num_items: int | None = None,
) -> tuple[np.ndarray, np.ndarray, list[K]]:
    """Read one labels TSV per candidate (a σ, or an expert of a router) into (idx, radii N×K, candidates),
    columns in the mapping's order, radius 0 where the certificate is not correct; each table is checked
    (:func:`~dualrs.table_checks.read_input_table`) against the ``num_items`` inputs of the training split."""
    keys = list(label_tables)
    frames = [read_input_table(label_tables[k], f"the label table for {k}", CERTIFICATE_KINDS, num_items=num_items,
                               split="training split").set_index("idx").sort_index() for k in keys]
    idx = frames[0].index
    for key, frame in zip(keys, frames):
        if not frame.index.equals(idx):
            raise ValueError(f"label table for {key} covers other samples than the one for {keys[0]}")
    radii = np.stack([np.where(f["correct"].to_numpy() == 1, f["radius"].to_numpy(), 0.0) for f in frames], axis=1)
    return idx.to_numpy(), radii, keys


def soft_labels(radii: np.ndarray, temperature: float | None = None) -> np.ndarray:
    """q_ik = exp(r_ik/τ) / Σ_j exp(r_ij/τ): rows sum to one, larger radius ⇒ larger mass.

    ``temperature`` None is the paper's target, the plain softmax of the radii (τ = 1, Sec. 5)."""
    if temperature is None:
        return softmax(np.asarray(radii, dtype=np.float64), axis=1)
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


def informative_rows(radii: np.ndarray) -> np.ndarray:
    """Mask of the samples certified under at least one candidate (max_k r_ik > 0); the paper drops
    the others from the estimator's training set (Sec. 5): they say nothing about the best σ."""
    return np.asarray(radii).max(axis=1) > 0


def class_balance_weights(radii: np.ndarray) -> np.ndarray:
    """w_e(i) = 1 / q_{k(i)}, with k(i) = argmax_k r_ik and q_k = N_k / N the share of samples whose
    best candidate is k (Sun et al. 2025, Sec. 5): each best candidate gets total weight N.

    Samples certified under no candidate get 0 (they are dropped before training, see
    :func:`informative_rows`); ties go to the first candidate, as in :func:`hard_labels`.
    """
    radii = np.asarray(radii)
    informative = informative_rows(radii)
    best = radii.argmax(axis=1)[informative]
    counts = np.bincount(best, minlength=radii.shape[1]).astype(np.float64)
    weights = np.zeros(len(radii))
    weights[informative] = informative.sum() / counts[best]
    return weights


def radius_weights(radii: np.ndarray, sigmas: Sequence[float], form: RadiusWeight) -> np.ndarray:
    """w_r(i), the weight of sample i's consistency term, from the radii under the extreme candidates.

    - ``strong``: w_r(i) = max_{k: σ_k = σ_max} r_ik, the radius under the largest candidate σ
      (used on CIFAR-10 in the paper);
    - ``weak``: w_r(i) = max_{k: σ_k = σ_min} r_ik, the radius under the smallest candidate σ
      (used on ImageNet in the paper);
    - ``none``: w_r(i) = 1.

    The paper (Sun et al. 2025, Sec. 5 and its appendix) defines a strong and a weak w_r from the radii
    under the largest and the smallest candidate variance; its exact formula could not be consulted, so
    these two forms are a stand-in built from that description, not the paper's verified definition.
    ``sigmas`` holds the σ of each column (an expert's σ for a router).
    """
    radii = np.asarray(radii, dtype=np.float64)
    sigmas = np.asarray(sigmas, dtype=np.float64)
    if sigmas.shape != (radii.shape[1],):
        raise ValueError(f"need one sigma per candidate ({radii.shape[1]}), got {len(sigmas)}")
    if form == "none":
        return np.ones(len(radii))
    if form not in RADIUS_WEIGHTS:
        raise ValueError(f"radius weight must be one of {RADIUS_WEIGHTS}, got {form!r}")
    extreme = sigmas.max() if form == "strong" else sigmas.min()
    return radii[:, np.isclose(sigmas, extreme)].max(axis=1)


def label_summary(radii: np.ndarray, candidates: list) -> pd.DataFrame:
    """How often each candidate σ (or expert) gives the largest radius (for logs)."""
    informative = radii.max(axis=1) > 0
    best = radii.argmax(axis=1)[informative]
    return pd.DataFrame({"candidate": candidates, "best": np.bincount(best, minlength=len(candidates))})


def adaptive_label(
    smooth: Smooth, x: torch.Tensor, n0: int, n: int, alpha: float, precision: float, batch_size: int,
    generator: torch.Generator | None = None,
) -> AdaptiveBound:
    """An option of the labelling step (the paper's is fixed-n CERTIFY with N_label = ``n`` draws): the
    label radius certified to within ``precision`` instead, drawing at most n.

    :class:`~dualrs.sequential.AdaptiveStage` on the grid of multiples of ``precision``: sampling stops
    once the radius's grid step is settled, so the radius is that of its last look's step, which the
    fixed-n certificate shares unless the input is near a step's threshold; the bound holds with
    probability ≥ 1 − α whatever the stopping (:mod:`dualrs.sequential`, (2)). The guess comes from
    the n0 draws (stopping once it is that of all n0). ``trials`` of the result counts the draws after
    the selection; its ``radius`` is 0 and ``prediction`` −1 when the bound stays below ½.
    """
    if not (math.isfinite(precision) and precision > 0):
        raise ValueError(f"label precision must be a positive radius, got {precision!r}")
    guess, _ = select_class(smooth, x, n0, batch_size, generator)
    largest = smooth.sigma * float(ndtri(lower_confidence_bound(n, n, alpha)))
    stage = AdaptiveStage(smooth, x, guess, n, alpha, [precision * k for k in range(int(largest / precision) + 1)],
                          batch_size, generator)
    settle([stage])
    return stage.result()
