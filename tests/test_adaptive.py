"""Tests of adaptive (sequential) certification: alpha spending over looks and early stopping.

The sequential bound's exact failure probability is computed by dynamic programming over the
count; certificates of closed-form models (half-spaces, whose exact radius is the distance to the
hyperplane, and constant classifiers) check validity over many generators, the sample savings,
and that stopping early changes no outcome.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import binom, binomtest, norm

from closed_form import TAIL, ConstantClass, HalfSpace
from dualrs.dual import DualSmooth, split_generator
from dualrs.seeding import sample_generator
from dualrs.sequential import Looks, SequentialStage, select_class, settle_minimum
from dualrs.smoothing import ABSTAIN, Smooth, clopper_pearson_lower, lower_confidence_bound

CPU = torch.device("cpu")


class NoiseArgmax(torch.nn.Module):
    """Logits = the input: at x = 0 the vote is uniform over the input's coordinates."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def half_space(x: torch.Tensor, distance: float, seed: int) -> HalfSpace:
    """A random half-space at signed distance ``distance`` from x (positive: x on the class-1 side)."""
    w = torch.tensor(np.random.default_rng(seed).normal(size=x.numel()))
    return HalfSpace(w, distance * float(w.norm()) - float(w @ x.double()))


def exact_failure(looks: Looks, p: float) -> float:
    """P[∃k: p_k > p] for i.i.d. Bernoulli(p) votes: DP over the count, dropping paths that failed."""
    alive, previous = np.array([1.0]), 0
    for size, level in zip(looks.sizes, looks.levels):
        alive = np.convolve(alive, binom.pmf(np.arange(size - previous + 1), size - previous, p))
        alive[clopper_pearson_lower(np.arange(size + 1), size, level) > p] = 0.0
        previous = size
    return float(1 - alive.sum())


def upper_3se(trials: int, rate: float) -> float:
    """trials·rate plus three standard errors."""
    return trials * rate + 3 * math.sqrt(trials * rate * (1 - rate))


def taking_every_look(
    smooth: Smooth, x: torch.Tensor, guess: int, looks: Looks, batch_size: int, generator: torch.Generator,
) -> tuple[float, int]:
    """max_k p_k over every look of one noise stream, and the votes drawn."""
    noise = smooth.noise(x, looks.sizes[-1], generator)
    count = drawn = 0
    best = 0.0
    for size, level in zip(looks.sizes, looks.levels):
        count += int(smooth.vote(x, noise, size - drawn, batch_size)[guess])
        drawn = size
        best = max(best, lower_confidence_bound(count, size, level))
    return best, drawn


# ------------------------------------------------------------------ the schedule


@pytest.mark.parametrize(("n", "sizes"), [(1000, (125, 250, 500, 1000)), (200, (25, 50, 100, 200)),
                                          (10, (2, 3, 5, 10)), (3, (1, 2, 3)), (1, (1,))])
def test_spending_schedule(n: int, sizes: tuple[int, ...]) -> None:
    alpha = 0.01
    looks = Looks.spending(n, alpha)
    assert looks.sizes == sizes
    assert looks.level == pytest.approx(alpha, rel=1e-12)
    assert looks.levels[-1] == pytest.approx(0.9 * alpha if len(sizes) > 1 else alpha)
    assert len(set(looks.levels[:-1])) <= 1  # the earlier looks share the rest equally


@pytest.mark.parametrize("kwargs", [{"fractions": (0.5, 0.9)}, {"fractions": (0.0, 1.0)}, {"fractions": ()},
                                    {"final_share": 0.0}, {"final_share": 1.5}])
def test_spending_rejects_bad_settings(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Looks.spending(100, 0.01, **kwargs)


@pytest.mark.parametrize(("sizes", "levels"), [((), ()), ((10, 5), (0.01, 0.01)), ((0, 5), (0.01, 0.01)),
                                               ((5, 10), (0.01,)), ((5, 10), (0.01, 0.0)), ((5,), (0.5,))])
def test_looks_reject_bad_schedules(sizes: tuple, levels: tuple) -> None:
    with pytest.raises(ValueError):
        Looks(sizes, levels)


def test_look_bounds_are_clopper_pearson_at_each_looks_level() -> None:
    looks = Looks.spending(200, 0.05)
    for look, (size, level) in enumerate(zip(looks.sizes, looks.levels)):
        for count in (0, size // 3, size - 2, size):
            reference = binomtest(count, size).proportion_ci(1 - 2 * level, "exact").low
            assert looks.bound(count, look) == pytest.approx(reference, rel=1e-9, abs=1e-12)
        # Every later vote for A: the best later bound.
        later = [lower_confidence_bound(size // 2 + m - size, m, lv)
                 for m, lv in zip(looks.sizes[look + 1:], looks.levels[look + 1:])]
        assert looks.reachable(size // 2, look) == pytest.approx(max(later, default=0.0))
    assert looks.max_bound() == pytest.approx(max(lv ** (1 / m) for m, lv in zip(looks.sizes, looks.levels)))


# ------------------------------------------------------------------ validity of the sequential bound


@pytest.mark.parametrize(("n", "alpha"), [(200, 0.1), (1000, 0.01)])
def test_exact_failure_of_spending_is_at_most_alpha_and_peeking_exceeds_it(n: int, alpha: float) -> None:
    """Exactly: P[some look's bound > p] ≤ α over a grid of p; at the full α every look, it is not."""
    spending = Looks.spending(n, alpha)
    peeking = Looks(spending.sizes, (alpha,) * len(spending.sizes))
    grid = np.linspace(0.02, 0.98, 49)
    sizes = [exact_failure(spending, p) for p in grid]
    assert max(sizes) <= alpha + 1e-9
    assert max(sizes) > 0.7 * alpha  # not trivially conservative
    assert max(exact_failure(peeking, p) for p in grid) > 1.8 * alpha


@pytest.mark.slow
def test_sequential_coverage_over_many_certifications() -> None:
    """A stage that takes every look it can: its failure rate is the exact one (≤ α); the same
    harness with the full α at every look fails the ≤ α check."""
    sigma, distance, n0, n, alpha, trials = 0.5, 0.4, 30, 200, 0.1, 1200
    model = HalfSpace(torch.tensor([1.0]), distance)  # at x = 0: p_1 = Φ(0.8)
    smooth, x, p = Smooth(model, 2, sigma), torch.zeros(1), float(norm.cdf(distance / sigma))
    spending = Looks.spending(n, alpha)
    peeking = Looks(spending.sizes, (alpha,) * len(spending.sizes))
    failures = {}
    for name, looks in (("spending", spending), ("peeking", peeking)):
        failures[name] = 0
        for i in range(trials):
            generator = sample_generator(11, "sequential-coverage", i)
            stage = SequentialStage(smooth, x, select_class(smooth, x, n0, n, generator), looks, n, generator)
            settle_minimum([stage])
            bound = stage.result()
            wrong = bound.prediction not in (ABSTAIN, 1)
            failures[name] += wrong or (bound.prediction == 1 and bound.p_lower > p)
    assert failures["spending"] <= upper_3se(trials, alpha)
    exact = exact_failure(spending, p)
    assert binom.ppf(TAIL, trials, exact) <= failures["spending"] <= binom.ppf(1 - TAIL, trials, exact)
    assert failures["peeking"] > upper_3se(trials, alpha)


# ------------------------------------------------------------------ dual RS, adaptive


X4 = torch.tensor([0.2, -0.4, 0.1, 0.3], dtype=torch.float64)
# (true R_σ, σ_e, the chosen σ, true R_c): the binding stage is the one with the smaller radius.
CLASSIFIER_BINDS = (0.6, 0.5, 0.25, 0.3)  # the estimator may stop early
ESTIMATOR_BINDS = (0.3, 0.5, 1.0, 1.2)  # the classifier may stop early
CLOSE = (0.15, 0.25, 0.25, 0.15)  # equal radii and noise: neither can stop early but by chance


def scenario(r_sigma: float, sigma_e: float, sigma: float, r_c: float) -> DualSmooth:
    """Candidate sigmas 0.25 and 1.0: half-spaces at distance R_σ from x (the estimator, on the side
    of ``sigma``) and R_c (the classifier for ``sigma``, class 1); the other sigma's classifier says 0."""
    other = 1.0 if sigma == 0.25 else 0.25
    estimator = half_space(X4, r_sigma if sigma == 1.0 else -r_sigma, seed=20)
    classifiers = {sigma: half_space(X4, r_c, seed=21), other: ConstantClass(0, 2)}
    return DualSmooth(estimator, classifiers, sigma_e, num_classes=2)


@pytest.mark.slow
@pytest.mark.parametrize("setting", [CLASSIFIER_BINDS, ESTIMATOR_BINDS], ids=["classifier-binds", "estimator-binds"])
def test_adaptive_dual_validity_over_many_certifications(setting: tuple[float, float, float, float]) -> None:
    """P[R > min(R_σ, R_c) or wrong σ/class] ≤ α + β (three standard errors), each stage at its own
    level, and the binding stage's failure rate is the exact one of its sequential bound."""
    true_r_sigma, sigma_e, sigma, true_r_c = setting
    dual = scenario(*setting)
    n0, n, alpha, beta, trials = 50, 200, 0.1, 0.1, 1000
    failures = estimator_failures = classifier_failures = 0
    radii, samples = [], []
    for i in range(trials):
        cert = dual.certify(X4, n0, n, alpha, beta, n, sample_generator(12, "adaptive-validity", i), adaptive=True)
        radii.append(cert.radius if cert.prediction == 1 else 0.0)
        samples.append(cert.samples)
        if cert.prediction != ABSTAIN:
            assert cert.radius == min(cert.r_sigma, cert.r_c)
            failures += cert.sigma != sigma or cert.prediction != 1 or cert.radius > min(true_r_sigma, true_r_c)
        else:
            assert cert.radius == 0.0
        if not math.isnan(cert.sigma):
            estimator_failures += cert.sigma != sigma or cert.r_sigma > true_r_sigma
            classifier_failures += cert.prediction not in (ABSTAIN, 1) or cert.r_c > true_r_c
    assert failures <= upper_3se(trials, alpha + beta)
    assert estimator_failures <= upper_3se(trials, beta)
    assert classifier_failures <= upper_3se(trials, alpha)
    binding, level, true_radius, noise = ((classifier_failures, alpha, true_r_c, sigma) if setting is CLASSIFIER_BINDS
                                          else (estimator_failures, beta, true_r_sigma, sigma_e))
    exact = exact_failure(Looks.spending(n, level), float(norm.cdf(true_radius / noise)))
    assert binom.ppf(TAIL, trials, exact) <= binding <= binom.ppf(1 - TAIL, trials, exact)
    # Not trivially valid: nearly all certify, near the truth, and the other stage stopped early.
    radii = np.array(radii)
    assert (radii > 0).mean() > 0.9
    assert 0.5 * min(true_r_sigma, true_r_c) < radii.mean() < min(true_r_sigma, true_r_c)
    assert np.mean(samples) < 0.8 * 2 * (n0 + n)


@pytest.mark.parametrize(("setting", "least_early"), [(CLASSIFIER_BINDS, 30), (ESTIMATOR_BINDS, 30), (CLOSE, 0)],
                         ids=["classifier-binds", "estimator-binds", "close"])
def test_adaptive_outcome_is_that_of_taking_every_look(
    setting: tuple[float, float, float, float], least_early: int,
) -> None:
    """Same generator: prediction, σ and min(R_σ, R_c) equal those of both stages' every look."""
    dual = scenario(*setting)
    n0, n, alpha, beta, batch_size = 30, 400, 0.05, 0.05, 64
    stopped_early = 0
    for i in range(40):
        cert = dual.certify(X4, n0, n, alpha, beta, batch_size, sample_generator(13, "every-look", i), adaptive=True)
        estimator_noise, classifier_noise = split_generator(sample_generator(13, "every-look", i), CPU)
        guess = select_class(dual.estimator, X4, n0, batch_size, estimator_noise)
        classifier = dual.classifiers[dual.sigmas[guess]]
        label = select_class(classifier, X4, n0, batch_size, classifier_noise)
        p_sigma, drawn_sigma = taking_every_look(dual.estimator, X4, guess, Looks.spending(n, beta), batch_size,
                                                 estimator_noise)
        p_c, drawn_c = taking_every_look(classifier, X4, label, Looks.spending(n, alpha), batch_size, classifier_noise)
        if p_sigma < 0.5 or p_c < 0.5:
            assert (cert.prediction, cert.radius) == (ABSTAIN, 0.0)
        else:
            r_sigma = dual.estimator.sigma * float(norm.ppf(p_sigma))
            r_c = classifier.sigma * float(norm.ppf(p_c))
            assert (cert.prediction, cert.sigma, cert.radius) == (label, dual.sigmas[guess], min(r_sigma, r_c))
        assert cert.samples <= 2 * n0 + drawn_sigma + drawn_c
        stopped_early += cert.samples < 2 * (n0 + n)
    assert stopped_early >= least_early


def test_easy_inputs_stop_after_the_first_look() -> None:
    """Constant models: the stage whose first-look radius exceeds the other's reach stops at n/8."""
    n0, n, alpha, beta = 100, 1000, 0.001, 0.001
    x = torch.zeros(3)
    classifiers = {0.25: ConstantClass(1, 4), 1.0: ConstantClass(2, 4)}
    for choice, sigma_e in ((0, 1.0), (1, 0.1)):
        dual = DualSmooth(ConstantClass(choice, 2), classifiers, sigma_e, num_classes=4)
        sigma = dual.sigmas[choice]
        adaptive = dual.certify(x, n0, n, alpha, beta, 1000, sample_generator(14, "easy", choice), adaptive=True)
        fixed = dual.certify(x, n0, n, alpha, beta, 1000, sample_generator(14, "easy", choice))
        assert adaptive.samples == 2 * n0 + n + n // 8 and fixed.samples == 2 * (n0 + n)
        assert adaptive.prediction == fixed.prediction == choice + 1
        # The binding stage took every look: all votes agree, so its bound is max_k α_k^(1/n_k).
        binding_sigma, level = (sigma, alpha) if choice == 0 else (sigma_e, beta)
        expected = binding_sigma * norm.ppf(Looks.spending(n, level).max_bound())
        assert adaptive.radius == pytest.approx(expected, rel=1e-9)
        assert adaptive.radius < fixed.radius  # 90% of the level at n: a little below fixed-n


def test_hard_inputs_take_every_look() -> None:
    """Equal radii: a stage stops early only if its bound at an earlier look (at a smaller level)
    beats the other's final bound, which is rare, so adaptive costs about what fixed-n does."""
    dual = scenario(*CLOSE)
    n0, n, trials = 50, 500, 40
    samples = []
    for i in range(trials):
        cert = dual.certify(X4, n0, n, 0.01, 0.01, 256, sample_generator(15, "hard", i), adaptive=True)
        assert cert.prediction == 1
        samples.append(cert.samples)
    assert sum(s == 2 * (n0 + n) for s in samples) >= 0.75 * trials
    assert np.mean(samples) > 0.9 * 2 * (n0 + n)


def test_estimator_abstains_adaptively() -> None:
    """Uniform estimator vote over three sigmas: the estimator, whose radius is the smaller (−∞),
    takes every look and abstains before the classifier takes any."""
    classifiers = {0.1: ConstantClass(0, 5), 0.2: ConstantClass(1, 5), 0.3: ConstantClass(2, 5)}
    dual = DualSmooth(NoiseArgmax(), classifiers, 1.0, 5)
    n0, n = 20, 400
    for i in range(20):
        cert = dual.certify(torch.zeros(3), n0, n, 0.05, 0.05, 128, sample_generator(16, "abstain", i), adaptive=True)
        assert cert.prediction == ABSTAIN and math.isnan(cert.sigma) and cert.radius == 0.0
        assert cert.samples == 2 * n0 + n


def test_adaptive_certificates_do_not_depend_on_batch_size() -> None:
    dual = scenario(*ESTIMATOR_BINDS)
    for i in range(4):
        reference = dual.certify(X4, 30, 300, 0.05, 0.05, 300, sample_generator(17, "batch", i), adaptive=True)
        for batch_size in (1, 7, 64, 1000):
            assert dual.certify(X4, 30, 300, 0.05, 0.05, batch_size, sample_generator(17, "batch", i),
                                adaptive=True) == reference


def test_sequential_claims_at_most_fixed_n_on_the_same_votes() -> None:
    """Each claim is the Clopper–Pearson bound of its look's votes at that look's level, so never
    above fixed-n CERTIFY's claim on the same votes; the votes are the fixed-n stream's first ones."""
    sigma, n0, n, alpha = 0.5, 20, 300, 0.05
    model = HalfSpace(torch.tensor([1.0, -1.0]), 0.3)
    smooth, x = Smooth(model, 2, sigma), torch.zeros(2)
    looks = Looks.spending(n, alpha)
    for i in range(25):
        generator = sample_generator(18, "claims", i)
        stage = SequentialStage(smooth, x, select_class(smooth, x, n0, 64, generator), looks, 64, generator)
        while stage.looked < len(looks.sizes):
            stage.look()
        bound = stage.result()
        look = looks.sizes.index(bound.trials)
        assert bound.p_lower == lower_confidence_bound(bound.count, bound.trials, looks.levels[look])
        assert bound.p_lower < lower_confidence_bound(bound.count, bound.trials, alpha)
        # The count is that of the first `trials` draws of the same stream.
        replay = sample_generator(18, "claims", i)
        guess = select_class(smooth, x, n0, 64, replay)
        assert guess == bound.guess
        assert int(smooth.vote(x, smooth.noise(x, n, replay), bound.trials, 64)[guess]) == bound.count
        # After every look, the count is fixed-n CERTIFY's count with the same generator.
        fixed = smooth.certify_bound(x, n0, n, alpha, 64, sample_generator(18, "claims", i))
        assert (fixed.guess, fixed.count) == (stage.guess, stage.count)
