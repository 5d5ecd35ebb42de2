"""Cascaded randomized smoothing over noise levels (Jeong & Shin 2023, "Multi-scale Diffusion Denoised
Smoothing", Sec. 3.1; code jh-jeong/smoothing-multiscale, ``certify.py`` and ``third_party/core_mdds.py``):
the baseline that dual RS is compared with.

Stages k = 0..K−1 smooth the base classifiers at σ_0 > σ_1 > … > σ_{K−1}. Stage k is *confident* in
class c when p_c ≥ p₀ (p₀ ≥ ½, ``skip_p`` in the authors' code; at p₀ = ½ the bound must exceed ½, as in
CERTIFY, since p_c = ½ leaves a tie possible). The cascade outputs the class of the
first confident stage. That output c of stage k stays c within the ℓ2 ball of radius

    R = min( σ_k (Φ⁻¹(p̲_c) − Φ⁻¹(p₀)),  min_{j<k} σ_j (Φ⁻¹(p₀) − Φ⁻¹(p̄_{j,¬c})) ),

where p̄_{j,¬c} bounds max_{b≠c} p_{j,b}, since Φ⁻¹(p(x + ε)) is ‖ε‖/σ-Lipschitz (Salman et al. 2019):
stage k stays confident in c, and no earlier stage becomes confident in another class (one confident
in c would still output c). R < 0 abstains (``certify.py``).

Monte Carlo rules per stage, in order: guess c from n0 draws, count n fresh draws; certify if
p̲_c ≥ p₀; abstain if the stage may be confident (undecided); otherwise the stage is certainly
unconfident and the next one runs. No stage certifies: abstain. Two variants differ in the levels,
the undecided rule and p̄_{j,¬c}:

``published`` (``certify.py``, ``core_mdds.py``), the procedure the paper reports:
    stage k spends α_k = α/(k+1); p̲_c and p̄_c are one-sided Clopper–Pearson bounds at α_k each;
    undecided when p̄_c ≥ p₀ (only the guess counts); p̄_{j,¬c} of every earlier stage j comes from
    Goodman (1965) simultaneous intervals at the *certifying* stage's α_k (see
    :func:`off_class_upper`). The levels sum to α·H_K > α (H_K the K-th harmonic number): the procedure
    carries no guarantee at level α. Its certificate relies on stage k's p̲_c and the earlier
    stages' off-class bounds, k + 1 bounds at α_k that sum to α; but which stage certifies depends on
    the data, and stage j's off-class bound is taken at a level ≤ α_{j+1}, so the union bound caps its
    failure probability at α(2H_K − 1) (:meth:`CascadeSmooth.failure_bound`), and then only as far
    as Goodman's large-sample χ² approximation holds and p₀ = ½ (see :func:`off_class_upper`).

``union_bound``: α is split evenly over the K stages; within a stage half goes to p̲_c and half,
    by Bonferroni, to the Clopper–Pearson upper bounds of all C class probabilities; undecided when
    any class may reach p₀; p̄_{j,¬c} = max_{b≠c} p̄_{j,b}. Every bound the certificate relies on
    then holds with probability ≥ 1 − α, exactly (no approximation).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from scipy.special import gammaincinv, ndtri

from dualrs.smoothing import ABSTAIN, Smooth, clopper_pearson_lower
from dualrs.validation import check_input, check_settings, warn_if_never_certifies

Variant = Literal["published", "union_bound"]
VARIANTS: tuple[Variant, ...] = ("published", "union_bound")
MIN_GROUP = 5  # Goodman cells hold at least this many votes (core_mdds.py, ``_reduce_counts``)


@dataclass(frozen=True)
class CascadeCertificate:
    """Outcome of :meth:`CascadeSmooth.certify`; ``stage`` counts from 0 at the largest σ, ``sigma`` is
    the certifying stage's σ (NaN on abstention; ``stage`` is then the last stage run)."""

    prediction: int
    sigma: float
    radius: float
    stage: int


@dataclass(frozen=True)
class StageVotes:
    """One stage's evidence: its σ, the guess from n0 draws and the class counts of n fresh draws."""

    sigma: float
    guess: int
    counts: np.ndarray

    @property
    def n(self) -> int:
        return int(self.counts.sum())


def clopper_pearson_upper(successes: np.ndarray, trials: int, alpha: float) -> np.ndarray:
    """One-sided (1 − α) Clopper–Pearson upper bound: 1 − the lower bound of the failures."""
    return 1.0 - clopper_pearson_lower(trials - np.asarray(successes), trials, alpha)


def goodman_intervals(counts: np.ndarray, alpha: float) -> np.ndarray:
    """Goodman's (1965) simultaneous (1 − α) intervals for multinomial proportions, one row (low, high)
    per cell: with χ the 1 − α/m quantile of χ²₁, 2·P⁻¹(½, 1 − α/m) for P the regularized lower incomplete
    gamma function (Bonferroni over the m cells), and N = Σ n_i,

        p_i ∈ [2n_i + χ ∓ √(χ² + 4 n_i (N − n_i) χ / N)] / (2(N + χ)),

    the inversion of each cell's one-degree χ² test; large-sample, not exact (Goodman 1965, "On
    simultaneous confidence intervals for multinomial proportions", Technometrics 7; statsmodels'
    ``multinomial_proportions_confint`` with its default ``method='goodman'``, which core_mdds.py calls)."""
    n_i = np.asarray(counts, dtype=float)
    total, q = n_i.sum(), 2 * gammaincinv(0.5, 1 - alpha / len(n_i))
    half = np.sqrt(q * q + 4 * n_i * (total - n_i) * q / total)
    return np.stack([2 * n_i + q - half, 2 * n_i + q + half], axis=1) / (2 * (total + q))


def pooled_counts(counts: np.ndarray, c: int) -> np.ndarray:
    """Goodman cells for the classes other than c (core_mdds.py, ``_reduce_counts``): c's count first,
    then the others by decreasing count, each with ≥ 5 votes its own cell, the rest pooled in order
    into cells of ≥ 5; a final pool under 5 joins the last cell. A pooled cell's upper bound bounds
    each of its classes."""
    others = np.delete(np.asarray(counts), c)
    cells, pool = [int(counts[c])], 0
    for count in sorted(others.tolist(), reverse=True):
        if count >= MIN_GROUP:
            cells.append(count)
        else:
            pool += count
            if pool >= MIN_GROUP:
                cells.append(pool)
                pool = 0
    cells[-1] += pool
    return np.array(cells)


def off_class_upper(votes: StageVotes, c: int, alpha: float) -> float:
    """The published p̄_{j,¬c} of an earlier stage at level α (core_mdds.py, ``off_class_upper_radius``):
    the largest Goodman upper bound among the non-c cells of :func:`pooled_counts`, at simultaneous
    level 2α (two-sided, so α for the upper sides). With at most one non-c cell it is instead the
    one-sided Clopper–Pearson bound 1 − p̲ at α of that stage's own guess, as the authors' code does:
    for guess = c this bounds all other classes together; for guess ≠ c it does not bound p of the
    guess, but with p₀ = ½ it exceeds p₀ (the stage passed on, so p̲_guess ≤ p̄_guess < ½) and the
    radius is negative, an abstention."""
    cells = pooled_counts(votes.counts, c)
    if len(cells) <= 2:
        return float(1.0 - clopper_pearson_lower(votes.counts[votes.guess], votes.n, alpha))
    return float(goodman_intervals(cells, 2 * alpha)[1:, 1].max())


class CascadeSmooth:
    """Cascaded smoothing over ``classifiers`` (σ → base classifier), tried from the largest σ down, with
    the ``variant``'s levels and bounds (module docstring)."""

    def __init__(
        self, classifiers: Mapping[float, torch.nn.Module], num_classes: int, threshold: float = 0.5,
        variant: Variant = "published",
    ):
        if not classifiers:
            raise ValueError("CascadeSmooth needs at least one sigma")
        check_settings(sigmas=classifiers)
        if not 0.5 <= threshold < 1:
            raise ValueError(f"threshold p0 must lie in [0.5, 1), got {threshold!r}")
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        self.sigmas = sorted((float(s) for s in classifiers), reverse=True)
        by_sigma = {float(s): model for s, model in classifiers.items()}
        self.stages = [Smooth(by_sigma[s], num_classes, s, name=f"the classifier for sigma={s:g}") for s in self.sigmas]
        self.num_classes = num_classes
        self.threshold = float(threshold)
        self.variant = variant

    def stage_level(self, alpha: float, k: int) -> float:
        """α_k of stage k (from 0): α/(k+1) published (certify.py), α/K for the union bound."""
        return alpha / (k + 1) if self.variant == "published" else alpha / len(self.stages)

    def failure_bound(self, alpha: float) -> float:
        """Union bound on the probability of a wrong certificate: α for ``union_bound``; α(2H_K − 1) for
        ``published`` (Σ_k α_k for the p̲'s plus Σ_{j<K−1} α_{j+1} for the earlier stages' p̄_{j,¬c})."""
        if self.variant == "union_bound":
            return alpha
        harmonic = sum(1 / (k + 1) for k in range(len(self.stages)))
        return alpha * (2 * harmonic - 1)

    def guess_share(self, level: float) -> float:
        """The level of p̲ of the guess at a stage of level α_k: α_k published, α_k/2 for the union bound."""
        return level if self.variant == "published" else level / 2

    def guess_lower(self, votes: StageVotes, level: float) -> float:
        """p̲ of the guess: one-sided Clopper–Pearson at α_k published (core_mdds.py
        ``confidence_bound``: a two-sided interval at 2α_k), at α_k/2 for the union bound."""
        return float(clopper_pearson_lower(votes.counts[votes.guess], votes.n, self.guess_share(level)))

    def undecided(self, votes: StageVotes, level: float) -> bool:
        """May the stage be confident? Published: p̄ of the guess at α_k reaches p₀ (core_mdds.py
        ``certified_radius`` returns −2); union bound: p̄ of any class at α_k/(2C) reaches p₀."""
        if self.variant == "published":
            return float(clopper_pearson_upper(votes.counts[votes.guess], votes.n, level)) >= self.threshold
        return bool(clopper_pearson_upper(votes.counts, votes.n, level / (2 * self.num_classes)).max()
                    >= self.threshold)

    def earlier_upper(self, votes: StageVotes, c: int, alpha: float, j: int, k: int) -> float:
        """p̄_{j,¬c} of earlier stage j when stage k certifies c: published, :func:`off_class_upper` at
        α_k (certify.py passes the certifying stage's level); union bound, max_{b≠c} of the
        Clopper–Pearson upper bounds at α_j/(2C) spent by stage j."""
        if self.variant == "published":
            return off_class_upper(votes, c, self.stage_level(alpha, k))
        level = self.stage_level(alpha, j) / (2 * self.num_classes)
        return float(np.delete(clopper_pearson_upper(votes.counts, votes.n, level), c).max())

    def radius(self, votes: StageVotes, p_lower: float, earlier: list[StageVotes], alpha: float, k: int) -> float:
        """R of the module docstring for the guess c of stage k."""
        p0 = ndtri(self.threshold)
        radius = votes.sigma * (ndtri(p_lower) - p0)
        for j, earlier_votes in enumerate(earlier):
            upper = self.earlier_upper(earlier_votes, votes.guess, alpha, j, k)
            radius = min(radius, earlier_votes.sigma * (p0 - ndtri(upper)))
        return float(radius)

    def certify(
        self, x: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int,
        generator: torch.Generator | None = None,
    ) -> CascadeCertificate:
        """The cascade's class and radius R, wrong with probability ≤ :meth:`failure_bound`;
        (-1, NaN, 0) on abstention."""
        check_input(x)
        check_settings(n0=n0, n=n, alpha=alpha, batch_size=batch_size)
        warn_if_never_certifies(n, self.guess_share(self.stage_level(alpha, len(self.stages) - 1)),
                                threshold=self.threshold)
        earlier: list[StageVotes] = []
        for k, (sigma, stage) in enumerate(zip(self.sigmas, self.stages)):
            guess = int(stage.sample_counts(x, n0, batch_size, generator).argmax())
            votes = StageVotes(sigma, guess, stage.sample_counts(x, n, batch_size, generator))
            level = self.stage_level(alpha, k)
            p_lower = self.guess_lower(votes, level)
            if p_lower >= self.threshold and p_lower > 0.5:  # at p0 = ½ as CERTIFY: ½ itself leaves a tie possible
                radius = self.radius(votes, p_lower, earlier, alpha, k)
                if radius < 0:
                    return CascadeCertificate(ABSTAIN, math.nan, 0.0, k)
                return CascadeCertificate(guess, sigma, radius, k)
            if self.undecided(votes, level):
                return CascadeCertificate(ABSTAIN, math.nan, 0.0, k)
            earlier.append(votes)
        return CascadeCertificate(ABSTAIN, math.nan, 0.0, len(self.stages) - 1)
