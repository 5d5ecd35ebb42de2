"""Soundness of certificates on base classifiers whose smoothed behaviour is known.

A certificate (class c, radius R) is sound when R ≤ σ·Φ⁻¹(p_c), p_c = P[f(x + δ) = c], δ ~ N(0, σ²I):
then the smoothed classifier is c within R (Cohen et al. 2019, Theorem 1); when p_c < ½ no radius is
sound. CERTIFY is unsound with probability at most α for every input (Cohen et al., Proposition 2),
dual RS with R = min(R_σ, R_c) at most α + β (Sun et al. 2025, Theorem 4.2).

Each coverage test certifies at least 1000 inputs with independent noise through the real
:class:`Smooth`/:class:`DualSmooth` and checks the observed rate of unsound certificates:

- against the level: rate ≤ level + 3 standard errors;
- against its exact expectation (two-sided, 3 standard deviations), computed from binomial laws and
  the textbook Clopper–Pearson bound B(α; k, n − k + 1): this catches bounds that are needlessly
  conservative as well as ones that are too loose.

Truths: a half-space has p_1 = Φ((w·x + b)/(σ‖w‖)) exactly; a multi-class linear rule argmax(Wx + b)
has p_c a Gaussian orthant probability, computed to about 10⁻⁵ and checked against 2^22 independent
NumPy draws.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from scipy.special import ndtri
from scipy.stats import beta as beta_dist
from scipy.stats import binom, multivariate_normal, norm

from closed_form import ConstantClass, HalfSpace
from dualrs.dual import DualSmooth
from dualrs.seeding import sample_generator
from dualrs.smoothing import ABSTAIN, CertifyBound, Smooth, lower_confidence_bound

GUESS_DRAWS = 100_000


class LinearArgmax(torch.nn.Module):
    """f(x) = argmax_c (W x + b)_c: the logits of a linear rule, in float64."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray):
        super().__init__()
        self.register_buffer("weight", torch.tensor(weight, dtype=torch.float64))
        self.register_buffer("bias", torch.tensor(bias, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (a broadcast product: faster than a BLAS call for these tiny matrices)
        return (x.flatten(1).to(torch.float64)[:, None, :] * self.weight).sum(dim=-1) + self.bias


def class_probabilities(model: LinearArgmax, x: torch.Tensor, sigma: float) -> np.ndarray:
    """p_c = P[(w_c − w_j)·(x + δ) + b_c − b_j > 0 for all j ≠ c]: with D the rows w_c − w_j and m the
    margins at x, P[Dδ < m] for Dδ ~ N(0, σ²DDᵀ), a Gaussian orthant probability (SciPy's
    multivariate normal CDF, Genz's algorithm, absolute error about 10⁻⁵)."""
    weight, bias, point = model.weight.numpy(), model.bias.numpy(), x.double().numpy()
    probabilities = []
    for c in range(len(bias)):
        others = [j for j in range(len(bias)) if j != c]
        rows = weight[c] - weight[others]
        margins = rows @ point + bias[c] - bias[others]
        probabilities.append(multivariate_normal(cov=sigma**2 * rows @ rows.T).cdf(margins, rng=0))
    return np.array(probabilities)


def test_linear_rule_probabilities_match_a_large_independent_sample() -> None:
    """The truth of the multi-class tests against 2^22 draws of NumPy's generator (5 standard errors)."""
    rng = np.random.default_rng(0)
    model, x, sigma = LinearArgmax(rng.normal(size=(4, 5)), rng.normal(size=4)), torch.tensor(rng.normal(size=5)), 0.7
    counts = np.zeros(4)
    for _ in range(4):
        noisy = x.numpy() + sigma * rng.standard_normal((2**20, 5))
        counts += np.bincount((noisy @ model.weight.numpy().T + model.bias.numpy()).argmax(axis=1), minlength=4)
    p = class_probabilities(model, x, sigma)
    assert p.sum() == pytest.approx(1.0, abs=1e-4) and p.max() < 0.99
    assert np.abs(counts / 2**22 - p).max() < 5 * math.sqrt(0.25 / 2**22)


def true_radius(sigma: float, p: float) -> float:
    """σ·Φ⁻¹(p): the largest sound radius of a class of probability p (negative: none)."""
    return sigma * float(ndtri(p))


@functools.lru_cache(maxsize=None)
def clopper_pearson_lower(n: int, level: float) -> np.ndarray:
    """The one-sided Clopper–Pearson bound for k = 0..n successes: B(level; k, n − k + 1), 0 at k = 0."""
    k = np.arange(1, n + 1)
    return np.concatenate([[0.0], beta_dist.ppf(level, k, n - k + 1)])


def exceed_probability(n: int, level: float, sigma: float, p: float, threshold: float) -> float:
    """P[CERTIFY certifies (p_lower ≥ ½) with radius σ·Φ⁻¹(p_lower) > threshold] when K ~ Binomial(n, p)."""
    bounds = clopper_pearson_lower(n, level)
    certified = bounds >= 0.5
    radii = sigma * ndtri(np.where(certified, bounds, 0.5))
    return float(binom.pmf(np.arange(n + 1), n, p)[certified & (radii > threshold)].sum())


def guess_probabilities(n0: int, p: Sequence[float], seed: int) -> np.ndarray:
    """P[the n0-sample guess is c]: the first class of largest count (NumPy argmax, as CERTIFY).

    Exact for two classes (class 1 needs more than n0/2 votes), simulated for more."""
    if len(p) == 2:
        one = float(binom.sf(n0 // 2, n0, p[1]))
        return np.array([1 - one, one])
    counts = np.random.default_rng(seed).multinomial(n0, p, size=GUESS_DRAWS)
    return np.bincount(counts.argmax(axis=1), minlength=len(p)) / GUESS_DRAWS


@dataclass
class Tally:
    """Unsound certificates among ``trials`` and their exact expected number (a Poisson-binomial law)."""

    name: str
    level: float
    trials: int = 0
    unsound: int = 0
    expected: float = 0.0
    variance: float = 0.0

    def add(self, unsound: bool, probability: float) -> None:
        self.trials += 1
        self.unsound += bool(unsound)
        self.expected += probability
        self.variance += probability * (1 - probability)

    @property
    def rate(self) -> float:
        return self.unsound / self.trials

    def within_level(self) -> bool:
        """rate ≤ level + 3 standard errors of a rate at the level."""
        return self.rate <= self.level + 3 * math.sqrt(self.level * (1 - self.level) / self.trials)

    def matches_expectation(self) -> bool:
        return abs(self.unsound - self.expected) <= 3 * math.sqrt(self.variance) + 1

    def report(self, record_property: Callable[[str, object], None]) -> None:
        line = f"{self.name}: {self.unsound}/{self.trials} unsound = {self.rate:.4f} at level {self.level:g}"
        if self.expected:
            line += f" (expected {self.expected / self.trials:.4f} ± {math.sqrt(self.variance) / self.trials:.4f})"
        print(f"\ncoverage {line}")
        record_property(self.name, line)


def half_space_at(x: torch.Tensor, distance: float, rng: np.random.Generator) -> HalfSpace:
    """A random half-space at signed distance ``distance`` from x (positive: x on the class-1 side)."""
    w = torch.tensor(rng.normal(size=x.numel()))
    return HalfSpace(w, distance * float(w.norm()) - float(w @ x.double()))


# ------------------------------------------------------------------ CERTIFY on half-spaces (exact truth)


@pytest.mark.parametrize("alpha", [0.01, 0.1, 0.3])
def test_certify_coverage_on_random_half_spaces(alpha: float, record_property) -> None:
    """1200 inputs, each its own half-space with p_1 uniform in [0.02, 0.995] and σ ∈ {0.25, 0.5, 1}."""
    n0, n, trials = 32, 200, 1200
    rng = np.random.default_rng(1)
    tally = Tally(f"half-space alpha={alpha}", alpha)
    for i in range(trials):
        sigma, p1 = float(rng.choice([0.25, 0.5, 1.0])), float(rng.uniform(0.02, 0.995))
        x = torch.tensor(rng.normal(size=4))
        smooth = Smooth(half_space_at(x, true_radius(sigma, p1), rng), 2, sigma)
        prediction, radius = smooth.certify(x, n0, n, alpha, n, sample_generator(11, f"halfspace-{alpha}", i))
        p = [1 - p1, p1]
        guess = guess_probabilities(n0, p, seed=i)
        probability = sum(guess[c] * exceed_probability(n, alpha, sigma, p[c], true_radius(sigma, p[c])) for c in (0, 1))
        tally.add(prediction != ABSTAIN and radius > true_radius(sigma, p[prediction]), probability)
    tally.report(record_property)
    assert tally.within_level()
    assert tally.matches_expectation()
    assert tally.expected > 0.4 * alpha * trials  # the setting is not trivially sound


def test_the_coverage_check_rejects_a_radius_without_confidence_bound(record_property) -> None:
    """The check has power: σ·Φ⁻¹(k/n) (the point estimate instead of p_lower) is unsound about half the time."""
    n0, n, trials, alpha = 32, 200, 1000, 0.1
    rng = np.random.default_rng(2)
    tally = Tally("point estimate (must fail)", alpha)
    for i in range(trials):
        sigma, p1 = 0.5, float(rng.uniform(0.6, 0.99))
        x = torch.tensor(rng.normal(size=4))
        smooth = Smooth(half_space_at(x, true_radius(sigma, p1), rng), 2, sigma)
        generator = sample_generator(12, "point-estimate", i)
        guess = int(smooth.sample_counts(x, n0, n, generator).argmax())
        share = smooth.sample_counts(x, n, n, generator)[guess] / n
        radius = true_radius(sigma, share) if share >= 0.5 else 0.0
        tally.add(share >= 0.5 and radius > true_radius(sigma, [1 - p1, p1][guess]), 0.0)
    tally.report(record_property)
    assert not tally.within_level()
    assert tally.rate > 0.3


# ------------------------------------------------------------------ CERTIFY on multi-class linear rules


@pytest.mark.parametrize("alpha", [0.05, 0.2])
def test_certify_coverage_on_multiclass_linear_rules(alpha: float, record_property) -> None:
    """12 random 4-class linear rules in 5-D, 100 certifications each."""
    n0, n, models, per_model = 64, 200, 12, 100
    rng = np.random.default_rng(3)
    tally = Tally(f"4-class linear alpha={alpha}", alpha)
    for m in range(models):
        sigma = float(rng.choice([0.25, 0.5, 1.0]))
        model = LinearArgmax(rng.normal(size=(4, 5)), rng.normal(size=4) * 0.3)
        x = torch.tensor(rng.normal(size=5) * rng.uniform(0.2, 2.0))
        p = class_probabilities(model, x, sigma)
        guess = guess_probabilities(n0, p, seed=m)
        probability = sum(guess[c] * exceed_probability(n, alpha, sigma, p[c], true_radius(sigma, p[c]))
                          for c in range(4))
        smooth = Smooth(model, 4, sigma)
        for i in range(per_model):
            prediction, radius = smooth.certify(x, n0, n, alpha, n, sample_generator(13, f"linear-{alpha}-{m}", i))
            tally.add(prediction != ABSTAIN and radius > true_radius(sigma, p[prediction]), probability)
    tally.report(record_property)
    assert tally.within_level()
    assert tally.matches_expectation()
    assert tally.expected > 0.3 * alpha * tally.trials


# ------------------------------------------------------------------ dual RS: a linear estimator over Sigma


SIGMAS = (0.25, 0.5, 1.0)


def random_dual_setting(rng: np.random.Generator) -> tuple[DualSmooth, torch.Tensor, np.ndarray, dict]:
    """A 3-way linear estimator over SIGMAS (class k ↦ k-th smallest σ) and one half-space per σ,
    with the estimator's p_e and each classifier's p_1."""
    x = torch.tensor(rng.normal(size=4))
    estimator = LinearArgmax(rng.normal(size=(3, 4)), rng.normal(size=3) * 0.5)
    p_classifier = {s: float(rng.uniform(0.3, 0.999)) for s in SIGMAS}
    classifiers = {s: half_space_at(x, true_radius(s, p), rng) for s, p in p_classifier.items()}
    sigma_e = 0.5
    dual = DualSmooth(estimator, classifiers, sigma_e, num_classes=2)
    return dual, x, class_probabilities(estimator, x, sigma_e), p_classifier


def dual_unsound_probability(n0: int, n: int, alpha: float, beta: float, sigma_e: float, p_e: np.ndarray,
                             p_classifier: dict, seed: int) -> float:
    """P[R = min(R_σ, R_c) > min(true R_σ(σ̂), true R_c(σ̂, ĉ)), neither abstaining].

    The estimator's and the classifier's votes are independent, so for a chosen σ̂ and class ĉ and the
    threshold T: P[R_σ > T and R_c > T] = P[R_σ > T]·P[R_c > T].
    """
    total = 0.0
    for k, (s, guess_s) in enumerate(zip(SIGMAS, guess_probabilities(n0, p_e, seed))):
        p = [1 - p_classifier[s], p_classifier[s]]
        for c, guess_c in enumerate(guess_probabilities(n0, p, seed + 1)):
            threshold = min(true_radius(sigma_e, p_e[k]), true_radius(s, p[c]))
            total += (guess_s * guess_c * exceed_probability(n, beta, sigma_e, p_e[k], threshold)
                      * exceed_probability(n, alpha, s, p[c], threshold))
    return total


def test_dual_coverage_with_a_linear_estimator_over_sigma(record_property) -> None:
    """12 random settings × 100 certifications: unsound at most α + β; R_σ unsound at most β."""
    n0, n, alpha, beta, models, per_model = 32, 200, 0.05, 0.1, 12, 100
    rng = np.random.default_rng(4)
    tally = Tally(f"dual alpha={alpha} beta={beta}", alpha + beta)
    estimator_tally = Tally(f"dual R_sigma alone beta={beta}", beta)
    for m in range(models):
        dual, x, p_e, p_classifier = random_dual_setting(rng)
        probability = dual_unsound_probability(n0, n, alpha, beta, 0.5, p_e, p_classifier, seed=m)
        for i in range(per_model):
            cert = dual.certify(x, n0, n, alpha, beta, n, sample_generator(14, f"dual-{m}", i))
            if math.isnan(cert.sigma):
                estimator_tally.add(False, 0.0)
                tally.add(False, probability)
                continue
            k = SIGMAS.index(cert.sigma)
            estimator_tally.add(cert.r_sigma > true_radius(0.5, p_e[k]), 0.0)
            if cert.prediction == ABSTAIN:
                tally.add(False, probability)
                continue
            p_c = p_classifier[cert.sigma] if cert.prediction == 1 else 1 - p_classifier[cert.sigma]
            truth = min(true_radius(0.5, p_e[k]), true_radius(cert.sigma, p_c))
            tally.add(cert.radius > truth, probability)
    tally.report(record_property)
    estimator_tally.report(record_property)
    assert tally.within_level()
    assert tally.matches_expectation()
    assert estimator_tally.within_level()
    assert tally.expected > 0.1 * (alpha + beta) * tally.trials


@pytest.mark.slow
def test_adaptive_dual_coverage_with_a_linear_estimator_over_sigma(record_property) -> None:
    """The settings of the test above, certified adaptively on a fine radius grid (stages run long and
    stop at data-dependent looks): unsound at most α + β; R_σ alone at most β, R_c alone at most α
    (anytime-valid bounds, dualrs.sequential (2), and Theorem 4.2's union bound)."""
    n0, n, alpha, beta, models, per_model = 32, 200, 0.05, 0.1, 12, 100
    grid = [0.02 * k for k in range(150)]
    rng = np.random.default_rng(4)
    tally = Tally(f"adaptive dual alpha={alpha} beta={beta}", alpha + beta)
    estimator_tally = Tally(f"adaptive dual R_sigma alone beta={beta}", beta)
    classifier_tally = Tally(f"adaptive dual R_c alone alpha={alpha}", alpha)
    samples = 0
    for m in range(models):
        dual, x, p_e, p_classifier = random_dual_setting(rng)
        for i in range(per_model):
            cert = dual.certify(x, n0, n, alpha, beta, n, sample_generator(24, f"adaptive-dual-{m}", i), adaptive=True,
                                radii=grid)
            samples += cert.samples
            if math.isnan(cert.sigma):
                tally.add(False, 0.0), estimator_tally.add(False, 0.0)
                continue
            k = SIGMAS.index(cert.sigma)
            estimator_tally.add(cert.r_sigma > true_radius(0.5, p_e[k]), 0.0)
            if cert.prediction == ABSTAIN:
                tally.add(False, 0.0)
                continue
            p_c = p_classifier[cert.sigma] if cert.prediction == 1 else 1 - p_classifier[cert.sigma]
            classifier_tally.add(cert.r_c > true_radius(cert.sigma, p_c), 0.0)
            tally.add(cert.radius > min(true_radius(0.5, p_e[k]), true_radius(cert.sigma, p_c)), 0.0)
    for t in (tally, estimator_tally, classifier_tally):
        t.report(record_property)
    assert tally.within_level() and estimator_tally.within_level() and classifier_tally.within_level()
    assert tally.unsound > 0  # the setting is not trivially sound
    assert samples < tally.trials * 2 * (n0 + n)


# ------------------------------------------------------------------ radii approach the truth as n grows


def mean_radii(certify: Callable[[int, int], float], sizes: Sequence[int], trials: int) -> list[float]:
    return [float(np.mean([certify(n, i) for i in range(trials)])) for n in sizes]


@pytest.mark.slow
def test_mean_radius_approaches_the_exact_radius_as_n_grows() -> None:
    """Half-space at distance 0.6, σ = 0.5: E[R] → 0.6 from below, at the 1/√n rate of the bound's slack,
    and the observed means match E[R] computed exactly from the binomial law."""
    sigma, distance, alpha, trials, sizes = 0.5, 0.6, 0.001, 30, (100, 1_000, 10_000, 100_000)
    rng = np.random.default_rng(5)
    x = torch.tensor(rng.normal(size=4))
    smooth = Smooth(half_space_at(x, distance, rng), 2, sigma)
    p = norm.cdf(distance / sigma)

    def certify(n: int, i: int) -> float:
        prediction, radius = smooth.certify(x, 64, n, alpha, 25_000, sample_generator(15, f"grow-{n}", i))
        return radius if prediction == 1 else 0.0

    observed = mean_radii(certify, sizes, trials)
    for n, mean in zip(sizes, observed):
        bounds = clopper_pearson_lower(n, alpha)
        radii = np.where(bounds >= 0.5, sigma * ndtri(np.maximum(bounds, 0.5)), 0.0)
        weights = binom.pmf(np.arange(n + 1), n, p)
        exact_mean = float(weights @ radii)
        exact_sd = math.sqrt(float(weights @ (radii - exact_mean) ** 2))
        print(f"\nhalf-space n={n}: mean radius {mean:.4f}, exact E[R] {exact_mean:.4f}, true radius {distance}")
        assert abs(mean - exact_mean) <= 4 * exact_sd / math.sqrt(trials) + 1e-9
    gaps = [distance - mean for mean in observed]
    assert all(gap > 0 for gap in gaps)
    assert all(later < earlier / 2 for earlier, later in zip(gaps, gaps[1:]))  # ≈ 1/√10 per step
    assert gaps[-1] < 0.02 * distance


@pytest.mark.slow
def test_mean_dual_radius_approaches_min_of_the_true_radii_as_n_grows() -> None:
    """E[min(R_σ, R_c)] → min(true R_σ, true R_c) = 0.55 as n grows."""
    rng = np.random.default_rng(6)
    x = torch.tensor(rng.normal(size=4))
    estimator = half_space_at(x, 0.7, rng)  # class 1 (σ = 0.5) with p_e = Φ(0.7/0.4); true R_σ = 0.7
    classifiers = {0.25: ConstantClass(0, 2), 0.5: half_space_at(x, 0.55, rng)}  # true R_c = 0.55
    dual = DualSmooth(estimator, classifiers, sigma_e=0.4, num_classes=2)
    truth, sizes, trials = 0.55, (100, 1_000, 10_000, 100_000), 20

    def certify(n: int, i: int) -> float:
        cert = dual.certify(x, 64, n, 0.001, 0.001, 25_000, sample_generator(16, f"dual-grow-{n}", i))
        return cert.radius if cert.prediction == 1 else 0.0

    gaps = [truth - mean for mean in mean_radii(certify, sizes, trials)]
    print("\ndual gaps to min(true R_sigma, true R_c) by n:", {n: round(float(g), 4) for n, g in zip(sizes, gaps)})
    assert all(gap > 0 for gap in gaps)
    assert all(later < earlier / 2 for earlier, later in zip(gaps, gaps[1:]))
    assert gaps[-1] < 0.03 * truth


# ------------------------------------------------------------------ numerics: finite radii in float64


@pytest.mark.parametrize("alpha", [0.49, 1e-3, 1e-12])
def test_all_votes_agree_gives_a_finite_float64_radius(alpha: float) -> None:
    """k = n: p_lower = α^(1/n) < 1, so the radius σ·Φ⁻¹(α^(1/n)) is finite; float32 arithmetic would be
    off by ~10⁻³ relative at n = 10⁶, float64 agrees to 10⁻⁹."""
    n, sigma = 1_000_000, 0.5
    smooth = Smooth(ConstantClass(1, 3), 3, sigma)
    x = torch.zeros(1, dtype=torch.float32)
    prediction, radius = smooth.certify(x, 10, n, alpha, 250_000, sample_generator(0, "all-agree", 0))
    assert prediction == 1 and type(radius) is float and math.isfinite(radius)
    assert radius == pytest.approx(sigma * float(ndtri(math.exp(math.log(alpha) / n))), rel=1e-9)


@pytest.mark.parametrize("n", [10**9, 10**12])
def test_huge_counts_keep_p_lower_below_one(n: int) -> None:
    p_lower = lower_confidence_bound(n, n, 0.4)
    assert p_lower < 1.0
    radius = CertifyBound(guess=0, count=n, p_lower=p_lower, sigma=1.0).radius
    assert math.isfinite(radius) and radius > 5


class SwitchesAfterFirstCall(torch.nn.Module):
    """Class ``first`` on its first forward pass (the n0 selection draws), class ``then`` afterwards."""

    def __init__(self, first: int, then: int, num_classes: int):
        super().__init__()
        self.first, self.then, self.num_classes, self.calls = first, then, num_classes, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        k = self.first if self.calls == 1 else self.then
        return torch.nn.functional.one_hot(torch.full((x.shape[0],), k), self.num_classes).double()


def test_selection_disagreeing_with_estimation_abstains_with_radius_zero() -> None:
    """The guess gets 0 of n votes: p_lower = 0, Φ⁻¹(0) = −inf must not leak: abstain with radius 0.0."""
    bound = Smooth(SwitchesAfterFirstCall(0, 2, 3), 3, 0.5).certify_bound(torch.zeros(2), 20, 500, 0.001, 500)
    assert (bound.guess, bound.count, bound.p_lower) == (0, 0, 0.0)
    assert Smooth(SwitchesAfterFirstCall(0, 2, 3), 3, 0.5).certify(torch.zeros(2), 20, 500, 0.001, 500) == (ABSTAIN, 0.0)


def test_dual_estimator_disagreement_gives_finite_fields() -> None:
    dual = DualSmooth(SwitchesAfterFirstCall(0, 1, 2), {0.25: ConstantClass(0, 2), 0.5: ConstantClass(1, 2)}, 0.5, 2)
    cert = dual.certify(torch.zeros(2), 20, 500, 0.001, 1e-12, 500)
    assert cert.prediction == ABSTAIN and math.isnan(cert.sigma)  # NaN σ marks the estimator's abstention
    assert (cert.radius, cert.r_sigma, cert.r_c) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("alpha", [1e-12, 1e-300])
def test_tiny_alpha_gives_finite_smaller_radii(alpha: float) -> None:
    """A smaller α only lowers p_lower: radii stay finite, non-negative and below those at α = 10⁻³."""
    rng = np.random.default_rng(7)
    x = torch.tensor(rng.normal(size=4))
    smooth = Smooth(half_space_at(x, 0.9, rng), 2, 0.5)  # p_1 = Φ(1.8) ≈ 0.964
    for i in range(20):
        tiny = smooth.certify(x, 32, 2000, alpha, 2000, sample_generator(17, "tiny", i))
        usual = smooth.certify(x, 32, 2000, 1e-3, 2000, sample_generator(17, "tiny", i))
        assert math.isfinite(tiny[1]) and 0.0 <= tiny[1] < usual[1] < 0.9
    dual = DualSmooth(half_space_at(x, 1.0, rng), {0.25: ConstantClass(0, 2), 0.5: smooth.base_classifier}, 0.5, 2)
    cert = dual.certify(x, 32, 2000, alpha, alpha, 2000, sample_generator(17, "tiny-dual", 0))
    assert all(math.isfinite(v) and v >= 0 for v in (cert.radius, cert.r_sigma, cert.r_c))


def test_radii_are_python_floats_for_float32_inputs() -> None:
    """Noise is drawn in the input's dtype, but p_lower and radii are float64 Python floats."""
    rng = np.random.default_rng(8)
    x = torch.tensor(rng.normal(size=4), dtype=torch.float32)
    model = half_space_at(x, 0.4, rng)
    bound = Smooth(model, 2, 0.5).certify_bound(x, 32, 1000, 0.01, 1000, sample_generator(18, "dtype", 0))
    assert type(bound.p_lower) is float and type(bound.radius) is float
    assert bound.radius == pytest.approx(0.5 * float(ndtri(lower_confidence_bound(bound.count, 1000, 0.01))), rel=1e-12)
    cert = DualSmooth(model, {0.25: model, 0.5: model}, 0.5, 2).certify(x, 32, 1000, 0.01, 0.01, 1000)
    assert all(type(v) is float for v in (cert.sigma, cert.radius, cert.r_sigma, cert.r_c))
