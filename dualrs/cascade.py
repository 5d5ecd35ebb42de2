"""Cascaded randomized smoothing over noise levels (Jeong & Shin 2023, "Multi-scale Diffusion Denoised
Smoothing", Sec. 3.1): the baseline that dual RS is compared with.

Stages k = 1..K smooth the base classifiers at σ_1 > σ_2 > … > σ_K. Stage k is *confident* in class c
when p_c ≥ p₀ (p₀ ≥ ½). The cascade outputs the class of the first confident stage. That output c of
stage k stays c within the ℓ2 ball of radius

    R = min( σ_k (Φ⁻¹(p̲_c) − Φ⁻¹(p₀)),  min_{j<k} σ_j (Φ⁻¹(p₀) − Φ⁻¹(max_{b≠c} p̄_{j,b})) ),

since Φ⁻¹(p(x + ε)) is ‖ε‖/σ-Lipschitz (Salman et al. 2019): stage k stays confident in c, and no
earlier stage becomes confident in another class (one confident in c would still output c).

Monte Carlo rules per stage, in order: guess c from n0 draws, count n fresh draws; certify if
p̲_c ≥ p₀; abstain if p₀ ≤ max_b p̄_b (the stage may be confident: undecided); otherwise the stage is
certainly unconfident and the next one runs. No stage certifies: abstain.

Failure probability: α is split evenly over the K stages, and within a stage half goes to the lower
bound of c and half, by Bonferroni, to the simultaneous upper bounds of the C class probabilities.
Every bound the certificate relies on then holds with probability ≥ 1 − α (union bound).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import norm

from dualrs.smoothing import ABSTAIN, Smooth, check_alpha, check_count, clopper_pearson_lower, lower_confidence_bound


@dataclass(frozen=True)
class CascadeCertificate:
    """Outcome of :meth:`CascadeSmooth.certify`; ``stage`` counts from 0 at the largest σ, ``sigma`` is
    the certifying stage's σ (NaN on abstention; ``stage`` is then the last stage run)."""

    prediction: int
    sigma: float
    radius: float
    stage: int


@dataclass(frozen=True)
class StageBounds:
    """One stage's evidence: the guess, p̲ of the guess and p̄ of every class."""

    guess: int
    p_lower: float
    p_upper: np.ndarray


class CascadeSmooth:
    """Cascaded smoothing over ``classifiers`` (σ → base classifier), tried from the largest σ down."""

    def __init__(self, classifiers: Mapping[float, torch.nn.Module], num_classes: int, threshold: float = 0.5):
        if not classifiers:
            raise ValueError("CascadeSmooth needs at least one sigma")
        if not 0.5 <= threshold < 1:
            raise ValueError(f"threshold p0 must lie in [0.5, 1), got {threshold!r}")
        self.sigmas = sorted((float(s) for s in classifiers), reverse=True)
        self.stages = [Smooth(classifiers[s], num_classes, s) for s in self.sigmas]
        self.num_classes = num_classes
        self.threshold = float(threshold)

    def stage_level(self, alpha: float) -> float:
        """α_k = α / K: the failure probability each stage may spend."""
        return alpha / len(self.stages)

    def stage_bounds(
        self, stage: Smooth, x: torch.Tensor, n0: int, n: int, alpha_stage: float, batch_size: int,
        generator: torch.Generator | None,
    ) -> StageBounds:
        """p̲ of the n0-guess at α_k/2 and p̄ of every class at α_k/(2C), from n fresh draws."""
        guess = int(stage.sample_counts(x, n0, batch_size, generator).argmax())
        counts = stage.sample_counts(x, n, batch_size, generator)
        p_lower = lower_confidence_bound(counts[guess], n, alpha_stage / 2)
        # Clopper–Pearson upper bound of p_b = 1 − lower bound of 1 − p_b (the votes for other classes).
        p_upper = 1.0 - clopper_pearson_lower(n - counts, n, alpha_stage / (2 * self.num_classes))
        return StageBounds(guess, p_lower, p_upper)

    def certify(
        self, x: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int,
        generator: torch.Generator | None = None,
    ) -> CascadeCertificate:
        """The cascade's class and radius R above, valid with probability ≥ 1 − α; (-1, NaN, 0) on abstention."""
        check_count(n0, "n0"), check_count(n, "n"), check_count(batch_size, "batch_size")
        check_alpha(alpha)
        p0 = norm.ppf(self.threshold)
        earlier: list[tuple[float, np.ndarray]] = []
        for k, (sigma, stage) in enumerate(zip(self.sigmas, self.stages)):
            bounds = self.stage_bounds(stage, x, n0, n, self.stage_level(alpha), batch_size, generator)
            if bounds.p_lower >= self.threshold:
                c = bounds.guess
                radius = sigma * (norm.ppf(bounds.p_lower) - p0)
                for sigma_j, upper in earlier:
                    others = np.delete(upper, c)
                    radius = min(radius, sigma_j * (p0 - norm.ppf(others.max())))
                return CascadeCertificate(c, sigma, float(radius), k)
            if bounds.p_upper.max() >= self.threshold:
                return CascadeCertificate(ABSTAIN, math.nan, 0.0, k)
            earlier.append((sigma, bounds.p_upper))
        return CascadeCertificate(ABSTAIN, math.nan, 0.0, len(self.stages) - 1)
