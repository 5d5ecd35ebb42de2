"""Adaptive CERTIFY: an anytime-valid lower bound on p_A, and sampling that stops once the radius is
known on a grid.

**The bound.** The votes X_1, X_2, … for the guess A are i.i.d. Bernoulli(p_A); k_t = X_1 + … + X_t.
For m ∈ (0, 1) let

    M_t(m) = ∫_m^1 (θ/m)^{k_t} ((1 − θ)/(1 − m))^{t − k_t} dθ/(1 − m)
           = B(k_t + 1, t − k_t + 1) · Ī_m(k_t + 1, t − k_t + 1) / (m^{k_t} (1 − m)^{t − k_t + 1}),

the likelihood ratio of the uniform mixture of alternatives θ ∈ [m, 1] against p = m (B the beta
function, Ī_m the regularized upper incomplete beta function): a one-sided beta-binomial mixture
(Robbins 1970; the conjugate mixtures of Howard, Ramdas, McAuliffe & Sekhon 2021). Under
p_A = m it is a nonnegative martingale with M_0 = 1, so by Ville's inequality
P[∃t: M_t(p_A) ≥ 1/a] ≤ a. Substituting θ = m + (1 − m)u shows that M_t(m) decreases in m, hence

    L_t(a) = inf{m : M_t(m) < 1/a}   satisfies   P[∃t ≥ 1: L_t(a) > p_A] ≤ a     (1)

(a time-uniform lower confidence sequence, Howard et al. 2021), and U_t(a) = 1 − L_t(a) computed on the
failures is an upper one.

**A stage** (one smoothed model at one input: the estimator, or the classifier for σ̂) takes looks at
sample sizes n_1 < … < n_K = n. Its bound after look k is the largest of L_{n_j}(εα), j ≤ k, and, at
the last look only, the one-sided Clopper–Pearson bound of the n votes at level (1 − ε)α: the
fixed-n CERTIFY bound of Cohen et al. (2019). By (1) and the union bound

    P[the bound at any look exceeds p_A] ≤ εα + (1 − ε)α = α,                        (2)

so the bound where sampling stops, whatever rule chose that look, is a (1 − α) lower bound on p_A
and σ·Φ⁻¹(bound) a valid radius (Cohen et al., Theorem 1). With two stages, the estimator at β and
the classifier at α, min(R_σ, R_c) is valid with probability ≥ 1 − α − β (Sun et al. 2025,
Theorem 4.2): (2) holds for each stage whatever the other did. ε = ``EARLY_SHARE`` = 0.1: a stage
that reaches its last look certifies as fixed-n CERTIFY at 0.9α does.

**Stopping** (any rule keeps (2); this one aims at fixed-n's certified accuracy on a radius grid
r_1 < r_2 < …). A stage's *certified* step is the number of grid radii at or below its radius (0
while its bound is below ½: abstention). Its *potential* step is the largest step j whose
threshold τ_j = Φ(r_j/σ) it may still certify: the last look can still reach τ_j (k*_j ≤ k_t + n − t,
k*_j the least count of n votes whose last-look bound reaches τ_j) and is not unlikely to,
P[Bin(n − t, U_t(γ)) ≥ k*_j − k_t] ≥ δ, with γ = δ = ``FUTILITY`` = 0.01 (stochastic
curtailment, Lan, Simon & Halperin 1982). Dual certification stops once the smaller certified step
of the two stages equals the smaller potential step; until then the stage with the smaller certified
step looks next. So an input stops early when its radius is far inside a grid cell, when the
estimator's upper bound falls below ½ (early abstention), or when the other stage caps the minimum.
The futility rule can only lose a step that the last look would have certified with probability
below about γ + δ.

**Selection** (the n0 draws that pick A) stops as soon as the leading class's lead over the
runner-up exceeds the draws left: the guess is that of all n0 draws.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike
from scipy.special import betaincc, betaincinv, betaln, ndtr, ndtri

from dualrs.smoothing import CertifyBound, Smooth, clopper_pearson_lower
from dualrs.validation import check_count, check_level

EARLY_SHARE = 0.1  # ε: share of a stage's level spent on the confidence sequence; the last look gets the rest
FUTILITY = 0.01  # γ = δ of the stopping rule (module docstring); it does not enter the guarantee
FIRST_LOOK = 32  # draws before the first look
GROWTH = 1.2  # each look draws about 20% more than the one before, in multiples of 8
SELECTION_LOOKS = (0.55, 0.7, 0.85, 1.0)  # shares of n0 after which the selection checks its lead
GRID_STEP = 0.25  # default radius grid: multiples of 0.25 (the columns of Sun et al.'s Table 1)
_BISECTIONS = 50  # bracket width below 2⁻⁵⁰ of k/t


def log_mixture(successes: ArrayLike, trials: ArrayLike, m: ArrayLike) -> np.ndarray:
    """log M_t(m) of the module docstring for k = ``successes`` of t = ``trials`` votes, 0 < m < 1, elementwise."""
    k, t, m = (np.asarray(v, dtype=np.float64) for v in (successes, trials, m))
    with np.errstate(divide="ignore"):
        return (betaln(k + 1, t - k + 1) + np.log(betaincc(k + 1, t - k + 1, m))
                - k * np.log(m) - (t - k + 1) * np.log1p(-m))


def cs_lower(successes: ArrayLike, trials: ArrayLike, level: float) -> np.ndarray:
    """L_t(a), the lower confidence sequence (1), for k = ``successes`` of t = ``trials``, a = ``level``, elementwise.

    P[∃t: L_t(a) > p] ≤ a for i.i.d. Bernoulli(p) votes. Bisection of log M_t(m) = log(1/a) on
    [0, k/t] (M_t(k/t) ≤ 1 < 1/a, k/t maximizing the likelihood), returning the end of the last
    bracket where M_t ≥ 1/a: at most the root, within 2⁻⁵⁰; 0 when k = 0."""
    k, t = np.broadcast_arrays(np.asarray(successes, dtype=np.float64), np.asarray(trials, dtype=np.float64))
    if np.any((k < 0) | (k > t)):
        raise ValueError(f"successes must lie in [0, trials], got {successes} of {trials}")
    low, high = np.zeros(k.shape), np.divide(k, t, out=np.zeros(k.shape), where=t > 0)
    threshold = math.log(1 / level)
    for _ in range(_BISECTIONS):
        middle = (low + high) / 2
        rejected = log_mixture(k, t, np.maximum(middle, 1e-300)) >= threshold
        low, high = np.where(rejected, middle, low), np.where(rejected, high, middle)
    return low


def cs_upper(successes: ArrayLike, trials: ArrayLike, level: float) -> np.ndarray:
    """U_t(a) = 1 − L_t(a) of the failures: P[∃t: U_t(a) < p] ≤ a."""
    k, t = np.asarray(successes), np.asarray(trials)
    return 1.0 - cs_lower(t - k, t, level)


@functools.lru_cache(maxsize=1 << 14)
def least_count(trials: int, tau: float, level: float) -> int:
    """The least k with L_t(a) ≥ τ for t = ``trials``, a = ``level`` (t + 1 if none): L_t(a) ≥ τ iff
    M_t(τ) ≥ 1/a (M_t decreases in m), and M_t(τ) increases with k, so bisection over k finds it."""
    threshold, low, high = math.log(1 / level), -1, trials + 1
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if log_mixture(middle, trials, tau) >= threshold else (middle, high)
    return high


@functools.lru_cache(maxsize=1 << 12)
def least_final_count(n: int, tau: float, level: float) -> int:
    """k*: the least count of the n votes whose last-look bound (L_n(εa) or Clopper–Pearson at (1 − ε)a)
    reaches τ; n + 1 if none does."""
    low, high = -1, n + 1
    while high - low > 1:
        middle = (low + high) // 2
        reached = clopper_pearson_lower(middle, n, (1 - EARLY_SHARE) * level) >= tau
        low, high = (low, middle) if reached else (middle, high)
    return min(high, least_count(n, tau, EARLY_SHARE * level))


def implausible(count: int, trials: int, needed: int, left: int) -> bool:
    """P[Bin(left, q) ≥ needed] < δ for every q ≤ U_t(γ) (γ = δ = ``FUTILITY``): with q* the q where that
    probability is δ (the δ quantile of Beta(needed, left − needed + 1)), U_t(γ) < q* iff the mixture of
    the failures rejects 1 − q*."""
    if needed <= 0:
        return False
    if needed > left:
        return True
    q = float(betaincinv(needed, left - needed + 1, FUTILITY))
    return bool(log_mixture(trials - count, trials, 1 - q) >= math.log(1 / FUTILITY))


def look_sizes(n: int, first: int = FIRST_LOOK, growth: float = GROWTH) -> tuple[int, ...]:
    """n_1 < … < n_K = n: ``first``, then ×``growth`` rounded up to a multiple of 8 (at least +8)."""
    check_count(n, "n")
    sizes, size = [], min(first, n)
    while size < n:
        sizes.append(size)
        size = max(size + 8, math.ceil(size * growth / 8) * 8)
    return (*sizes, n)


def radius_grid(radii: Sequence[float] | None, largest: float) -> tuple[float, ...]:
    """The grid r_1 < r_2 < …: 0 and the given radii (default: multiples of ``GRID_STEP``) up to ``largest``."""
    if radii is None:
        radii = [GRID_STEP * i for i in range(int(largest / GRID_STEP) + 1)]
    radii = sorted({0.0, *(float(r) for r in radii)})
    if radii[0] < 0 or not all(math.isfinite(r) for r in radii):
        raise ValueError(f"radius grid must hold finite radii ≥ 0, got {radii}")
    return tuple(r for r in radii if r <= largest) or (0.0,)


@dataclass(frozen=True)
class AdaptiveBound(CertifyBound):
    """:class:`CertifyBound` where sampling stopped: ``count`` votes for the guess among ``trials``."""

    trials: int


def select_class(
    smooth: Smooth, x: torch.Tensor, n0: int, batch_size: int, generator: torch.Generator | None,
) -> tuple[int, int]:
    """CERTIFY step 1, the most frequent class of f(x + δ) among n0 draws, and the draws it took:
    drawing, checked at the ``SELECTION_LOOKS`` shares of n0 (the first just above half: unanimous
    votes stop there), stops once the leading class leads the runner-up by more than the draws left
    (then it is the most frequent of all n0, ties going to the smaller class as with ``argmax``)."""
    noise = smooth.noise(x, n0, generator)
    counts = torch.zeros(smooth.num_classes, dtype=torch.long)
    drawn = 0
    for size in sorted({math.ceil(f * n0) for f in SELECTION_LOOKS}):
        counts += smooth.vote(x, noise, size - drawn, batch_size).cpu()
        drawn = size
        top = torch.topk(counts, 2).values.tolist()
        if top[0] - top[1] > n0 - drawn:
            break
    return int(counts.argmax()), drawn


class AdaptiveStage:
    """The votes of ``smooth`` for ``guess`` at x, bounded look by look at ``level`` (module docstring),
    on the grid ``radii`` (None: multiples of ``GRID_STEP``) with thresholds τ_j = Φ(r_j/σ)."""

    def __init__(
        self, smooth: Smooth, x: torch.Tensor, guess: int, n: int, level: float, radii: Sequence[float] | None,
        batch_size: int, generator: torch.Generator | None,
    ):
        check_level(level, "level")
        self.smooth, self.x, self.guess, self.level, self.batch_size = smooth, x, guess, level, batch_size
        self.sizes = look_sizes(n)
        largest = smooth.sigma * float(ndtri(clopper_pearson_lower(n, n, (1 - EARLY_SHARE) * level)))
        self.thresholds = tuple(float(ndtr(r / smooth.sigma)) for r in radius_grid(radii, largest))
        self.noise = smooth.noise(x, n, generator)
        self.counts: list[int] = []  # the count at each look taken
        self.count = self.drawn = self.certified = 0
        self._potential = (0, len(self.thresholds))  # (looks taken, potential step) when last computed

    @property
    def n(self) -> int:
        return self.sizes[-1]

    @property
    def finished(self) -> bool:
        return len(self.counts) == len(self.sizes)

    def look(self) -> None:
        """Draw the votes up to the next look; ``certified`` becomes the number of grid thresholds that
        some look's bound reached (0: abstention)."""
        look, size = len(self.counts), self.sizes[len(self.counts)]
        self.count += int(self.smooth.vote(self.x, self.noise, size - self.drawn, self.batch_size)[self.guess])
        self.counts.append(self.count)
        self.drawn = size
        final = look == len(self.sizes) - 1
        while self.certified < len(self.thresholds):
            tau = self.thresholds[self.certified]
            least = least_final_count(size, tau, self.level) if final else least_count(size, tau,
                                                                                       EARLY_SHARE * self.level)
            if self.count < least:
                break
            self.certified += 1

    @property
    def potential(self) -> int:
        """The largest step a later look may still certify (module docstring); at least :attr:`certified`."""
        if not self.counts or self.finished:
            return len(self.thresholds) if not self.counts else self.certified
        if self._potential[0] != len(self.counts):
            self._potential = (len(self.counts), self._plausible_step())
        return self._potential[1]

    def _plausible_step(self) -> int:
        step, left = self.certified, self.n - self.drawn
        while step < len(self.thresholds):
            needed = least_final_count(self.n, self.thresholds[step], self.level) - self.count
            if implausible(self.count, self.drawn, needed, left):
                break
            step += 1
        return step

    def result(self) -> AdaptiveBound:
        """The best bound over the looks taken (εα at each, and (1 − ε)α Clopper–Pearson at n)."""
        sizes = np.array(self.sizes[: len(self.counts)])
        bounds = cs_lower(np.array(self.counts), sizes, EARLY_SHARE * self.level)
        if self.finished:
            bounds[-1] = max(bounds[-1], clopper_pearson_lower(self.count, self.n, (1 - EARLY_SHARE) * self.level))
        best = int(bounds.argmax()) if len(bounds) else 0
        if not len(bounds):
            return AdaptiveBound(self.guess, 0, 0.0, self.smooth.sigma, 0)
        return AdaptiveBound(self.guess, self.counts[best], float(bounds[best]), self.smooth.sigma, int(sizes[best]))


def settle(stages: Sequence[AdaptiveStage]) -> None:
    """Take looks until min_s certified_s = min_s potential_s; the stage with the smallest certified
    step looks next (ties: the first listed)."""
    while True:
        target = min(s.potential for s in stages)
        behind = [s for s in stages if s.certified < target and not s.finished]
        if not behind:
            return
        min(behind, key=lambda s: s.certified).look()
