"""Dual randomized smoothing (Sun, Mao & Vechev 2025, Theorems 4.1 and 4.2): routed smoothing whose
candidates are the noise levels Σ.

A variance estimator e maps an input to one of the candidate noise levels Σ. Smoothing e itself
with RS at σ_e certifies that its choice σ̂ = σ(x) stays constant within R_σ (Theorem 4.1). The
classifier for σ̂, smoothed at σ̂, certifies its prediction within R_c. Together the prediction is
constant within R = min(R_σ, R_c), with probability at least 1 − α − β by the union bound
(Theorem 4.2; :mod:`dualrs.routed`). If the estimator abstains, the dual classifier abstains.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from dualrs.routed import RoutedSmooth, split_generator
from dualrs.smoothing import ABSTAIN, Smooth
from dualrs.validation import check_settings

__all__ = ["DualCertificate", "DualSmooth", "split_generator"]


@dataclass(frozen=True)
class DualCertificate:
    """Outcome of :meth:`DualSmooth.certify`; ``sigma`` is NaN when the estimator abstains.

    ``samples`` counts the forward passes spent, over the estimator and the classifier.
    """

    prediction: int
    sigma: float
    radius: float
    r_sigma: float
    r_c: float
    samples: int


class DualSmooth(RoutedSmooth):
    """Per-input noise level chosen by a smoothed estimator, then certified with that level.

    ``classifiers`` maps each candidate σ to its base classifier; the estimator's output class k
    stands for the k-th smallest σ. ``autocast`` and ``channels_last`` are passed to every
    :class:`Smooth`. The estimator and the classifier draw from two generators split from the
    certificate's generator (:func:`split_generator`).
    """

    def __init__(
        self, estimator: torch.nn.Module, classifiers: Mapping[float, torch.nn.Module],
        sigma_e: float, num_classes: int, *, autocast: torch.dtype | None = None, channels_last: bool = False,
    ):
        check_settings(sigma_e=sigma_e, sigmas=classifiers)
        if len(classifiers) < 2:
            raise ValueError(f"DualSmooth needs at least two candidate sigmas, got {sorted(classifiers)}")
        options = {"autocast": autocast, "channels_last": channels_last}
        self.sigmas = sorted(float(s) for s in classifiers)
        by_sigma = {float(s): model for s, model in classifiers.items()}
        self.classifiers = {s: Smooth(by_sigma[s], num_classes, s, **options, name=f"the classifier for sigma={s:g}")
                            for s in self.sigmas}
        estimator = Smooth(estimator, len(self.sigmas), sigma_e, **options,
                           name=f"the variance estimator over sigmas {self.sigmas}")
        super().__init__(estimator, list(self.classifiers.values()), split_noise=True)
        self.estimator = self.selector

    def estimate(
        self, x: torch.Tensor, n0: int, n: int, beta: float, batch_size: int,
        generator: torch.Generator | None = None,
    ) -> tuple[float, float]:
        """Certified σ(x) and its radius R_σ (Theorem 4.1); (NaN, 0) when the estimator abstains."""
        choice, r_sigma = self.select(x, n0, n, beta, batch_size, generator)
        return (math.nan, 0.0) if choice == ABSTAIN else (self.sigmas[choice], r_sigma)

    def certify(
        self, x: torch.Tensor, n0: int, n: int, alpha: float, beta: float, batch_size: int,
        generator: torch.Generator | None = None, adaptive: bool = False, radii: Sequence[float] | None = None,
    ) -> DualCertificate:
        """Certify x with radius min(R_σ, R_c), valid with probability ≥ 1 − α − β (Theorem 4.2), in
        fixed-n or ``adaptive`` mode (:meth:`RoutedSmooth.certify_routed`)."""
        cert = self.certify_routed(x, n0, n, alpha, beta, batch_size, generator, adaptive, radii)
        sigma = math.nan if cert.choice == ABSTAIN else self.sigmas[cert.choice]
        return DualCertificate(cert.prediction, sigma, cert.radius, cert.r_sigma, cert.r_c, cert.samples)
