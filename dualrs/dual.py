"""Dual randomized smoothing (Sun, Mao & Vechev 2025, Theorems 4.1 and 4.2).

A variance estimator e maps an input to one of the candidate noise levels Σ. Smoothing e itself
with RS at σ_e certifies that its choice σ̂ = σ(x) stays constant within R_σ (Theorem 4.1). The
classifier for σ̂, smoothed at σ̂, certifies its prediction within R_c. Together the prediction is
constant within R = min(R_σ, R_c), with probability at least 1 − α − β by the union bound
(Theorem 4.2). If the estimator abstains, the dual classifier abstains.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from dualrs.smoothing import ABSTAIN, Smooth, check_alpha


@dataclass(frozen=True)
class DualCertificate:
    """Outcome of :meth:`DualSmooth.certify`; ``sigma`` is NaN when the estimator abstains."""

    prediction: int
    sigma: float
    radius: float
    r_sigma: float
    r_c: float


class DualSmooth:
    """Per-input noise level chosen by a smoothed estimator, then certified with that level.

    ``classifiers`` maps each candidate σ to its base classifier; the estimator's output class k
    stands for the k-th smallest σ.
    """

    def __init__(
        self, estimator: torch.nn.Module, classifiers: Mapping[float, torch.nn.Module],
        sigma_e: float, num_classes: int,
    ):
        if len(classifiers) < 2:
            raise ValueError(f"DualSmooth needs at least two candidate sigmas, got {sorted(classifiers)}")
        self.sigmas = sorted(float(s) for s in classifiers)
        self.estimator = Smooth(estimator, len(self.sigmas), sigma_e)
        self.classifiers = {s: Smooth(classifiers[s], num_classes, s) for s in self.sigmas}

    def estimate(
        self, x: torch.Tensor, n0: int, n: int, beta: float, batch_size: int,
        generator: torch.Generator | None = None,
    ) -> tuple[float, float]:
        """Certified σ(x) and its radius R_σ (Theorem 4.1); (NaN, 0) when the estimator abstains."""
        choice, r_sigma = self.estimator.certify(x, n0, n, beta, batch_size, generator)
        return (math.nan, 0.0) if choice == ABSTAIN else (self.sigmas[choice], r_sigma)

    def certify(
        self, x: torch.Tensor, n0: int, n: int, alpha: float, beta: float, batch_size: int,
        generator: torch.Generator | None = None,
    ) -> DualCertificate:
        """Certify x with radius min(R_σ, R_c), valid with probability ≥ 1 − α − β (Theorem 4.2)."""
        check_alpha(alpha, "alpha"), check_alpha(beta, "beta")
        sigma, r_sigma = self.estimate(x, n0, n, beta, batch_size, generator)
        if math.isnan(sigma):
            return DualCertificate(ABSTAIN, sigma, 0.0, 0.0, 0.0)
        prediction, r_c = self.classifiers[sigma].certify(x, n0, n, alpha, batch_size, generator)
        radius = min(r_sigma, r_c) if prediction != ABSTAIN else 0.0
        return DualCertificate(prediction, sigma, radius, r_sigma, r_c)
