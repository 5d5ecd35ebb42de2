"""Sequential CERTIFY: Clopper–Pearson bounds at a fixed set of looks with alpha spending.

CERTIFY (Cohen et al. 2019) bounds p_A from n votes. The sequential form looks at the votes only
at cumulative sample sizes n_1 < n_2 < … < n_K = n; at look k it computes the one-sided
Clopper–Pearson bound p_k from the k-th count at its own level α_k, where α_1 + … + α_K = α
(Bonferroni alpha spending). By the union bound

    P[∃k: p_k > p_A] ≤ Σ_k P[p_k > p_A] ≤ Σ_k α_k = α,

so whatever rule stops at look τ from the votes seen so far, max_{k≤τ} p_k is a (1 − α) lower
bound on p_A and σ·Φ⁻¹(max_{k≤τ} p_k) a radius valid with probability ≥ 1 − α (Cohen et al.,
Theorem 1). Bounding at every look with the full α would not be: the chance that some look
overshoots grows with the number of looks.

Stopping changes no outcome. For a final radius min_s R_s over stages s (dual RS: min(R_σ, R_c),
Sun et al. 2025, Theorem 4.2), each stage keeps its radius so far R_s (of max_{j≤k} p_j; −∞ while
below ½) and its reach R̄_s, the largest radius any later look could give if every further vote
went to its guess. R_s ≤ (its radius after all K looks) ≤ R̄_s, so once every stage is *settled*,
R̄_s ≤ R_s (no look can raise it) or R_s ≥ min_{t≠s} R̄_t (it cannot be the minimum), min_s R_s
equals the minimum after all looks of all stages (:func:`settle_minimum`).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import norm

from dualrs.smoothing import CertifyBound, Smooth, check_alpha, check_count, clopper_pearson_lower

LOOK_FRACTIONS = (1 / 8, 1 / 4, 1 / 2, 1.0)  # looks at n/8, n/4, n/2 and n
FINAL_SHARE = 0.9  # share of α spent at the last look; the earlier looks split the rest equally


@dataclass(frozen=True)
class Looks:
    """Cumulative sample sizes n_1 < … < n_K at which the votes are bounded, and the level α_k of each."""

    sizes: tuple[int, ...]
    levels: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.sizes or len(self.sizes) != len(self.levels):
            raise ValueError(f"looks need one level per size, got sizes {self.sizes} and levels {self.levels}")
        if self.sizes[0] < 1 or any(a >= b for a, b in zip(self.sizes, self.sizes[1:])):
            raise ValueError(f"look sizes must be positive and increasing, got {self.sizes}")
        for level in self.levels:
            check_alpha(level, "a look's level")

    @classmethod
    def spending(
        cls, n: int, alpha: float, fractions: Sequence[float] = LOOK_FRACTIONS, final_share: float = FINAL_SHARE,
    ) -> Looks:
        """Looks at ⌈f·n⌉ for f in ``fractions`` (the last must be 1): α_K = final_share·α at n, and
        the K − 1 earlier looks (1 − final_share)·α/(K − 1) each, so Σ_k α_k = α."""
        check_count(n, "n"), check_alpha(alpha)
        if not fractions or fractions[-1] != 1 or any(not 0 < f <= 1 for f in fractions):
            raise ValueError(f"look fractions must lie in (0, 1] and end with 1, got {tuple(fractions)}")
        if not 0 < final_share <= 1:
            raise ValueError(f"final_share must lie in (0, 1], got {final_share!r}")
        sizes = tuple(sorted({math.ceil(f * n) for f in fractions}))
        if len(sizes) == 1:
            return cls(sizes, (alpha,))
        early = (1 - final_share) * alpha / (len(sizes) - 1)
        return cls(sizes, (early,) * (len(sizes) - 1) + (final_share * alpha,))

    @property
    def level(self) -> float:
        """Σ_k α_k: the probability that any look's bound exceeds p_A (union bound)."""
        return sum(self.levels)

    def bound(self, count: int, look: int) -> float:
        """p_k: the Clopper–Pearson lower bound of ``count`` votes among n_k at level α_k."""
        return float(clopper_pearson_lower(count, self.sizes[look], self.levels[look]))

    def reachable(self, count: int, look: int) -> float:
        """The largest bound of a later look if every vote after n_k goes to A (0 after the last look)."""
        sizes, levels = np.array(self.sizes[look + 1:]), np.array(self.levels[look + 1:])
        if not len(sizes):
            return 0.0
        return float(clopper_pearson_lower(count + sizes - self.sizes[look], sizes, levels).max())

    def max_bound(self) -> float:
        """The largest bound any look can give: all n_k votes for A, p_k = α_k^(1/n_k)."""
        return max(level ** (1 / size) for size, level in zip(self.sizes, self.levels))


@dataclass(frozen=True)
class SequentialBound(CertifyBound):
    """:class:`CertifyBound` of the best look: ``count`` votes for A among its ``trials``, p_lower at
    that look's level."""

    trials: int


def radius_of(p_lower: float, sigma: float) -> float:
    """σ·Φ⁻¹(p) for p ≥ ½; −∞ (abstention) below."""
    return sigma * float(norm.ppf(p_lower)) if p_lower >= 0.5 else -math.inf


def select_class(
    smooth: Smooth, x: torch.Tensor, n0: int, batch_size: int, generator: torch.Generator | None,
) -> int:
    """CERTIFY step 1: the most frequent class of f(x + δ) among n0 draws."""
    return int(smooth.vote(x, smooth.noise(x, n0, generator), n0, batch_size).argmax())


class SequentialStage:
    """The votes of ``smooth`` for ``guess`` at x, bounded look by look (module docstring).

    ``radius`` is σ·Φ⁻¹ of the best bound so far (−∞ while below ½) and ``reach`` the largest
    radius the remaining looks could give.
    """

    def __init__(
        self, smooth: Smooth, x: torch.Tensor, guess: int, looks: Looks, batch_size: int,
        generator: torch.Generator | None,
    ):
        self.smooth, self.x, self.guess, self.looks, self.batch_size = smooth, x, guess, looks, batch_size
        self.noise = smooth.noise(x, looks.sizes[-1], generator)
        self.looked = self.count = self.drawn = 0
        self.best = (0.0, 0, looks.sizes[0])  # (p_lower, count, trials) of the best look so far
        self.radius = -math.inf
        self.reach = radius_of(looks.max_bound(), smooth.sigma)

    def look(self) -> None:
        """Draw the votes up to the next look and bound them at its level."""
        size = self.looks.sizes[self.looked]
        self.count += int(self.smooth.vote(self.x, self.noise, size - self.drawn, self.batch_size)[self.guess])
        p_lower = self.looks.bound(self.count, self.looked)
        if p_lower > self.best[0]:
            self.best = (p_lower, self.count, size)
        self.radius = radius_of(self.best[0], self.smooth.sigma)
        self.reach = max(self.radius, radius_of(self.looks.reachable(self.count, self.looked), self.smooth.sigma))
        self.looked, self.drawn = self.looked + 1, size

    def result(self) -> SequentialBound:
        p_lower, count, trials = self.best
        return SequentialBound(self.guess, count, p_lower, self.smooth.sigma, trials)


def settle_minimum(stages: Sequence[SequentialStage]) -> None:
    """Take looks until min_s R_s is settled (module docstring); the unsettled stage with the
    smallest radius, the likeliest minimum, looks next (ties: the first listed)."""
    while True:
        unsettled = [s for s in stages if not _settled(s, stages)]
        if not unsettled:
            return
        min(unsettled, key=lambda s: s.radius).look()


def _settled(stage: SequentialStage, stages: Sequence[SequentialStage]) -> bool:
    others = min((s.reach for s in stages if s is not stage), default=math.inf)
    return stage.reach <= stage.radius or stage.radius >= others
