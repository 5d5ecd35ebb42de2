"""Tests of dual randomized smoothing (Sun, Mao & Vechev 2025) with stub and closed-form models.

The estimator votes for an index into the sorted candidate sigmas; stubs with constant logits make
its certificate exact (all n votes agree, so R_σ = σ_e·Φ⁻¹(β^(1/n))), and half-spaces make the
true radii known (the distance to the hyperplane), so the union-bound validity of
R = min(R_σ, R_c) at level 1 − α − β is checked over many independent generators.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import binom, norm

from closed_form import TAIL, ConstantClass, HalfSpace, upper_tolerance
from dualrs.dual import DualCertificate, DualSmooth, split_generator
from dualrs.seeding import sample_generator
from dualrs.smoothing import ABSTAIN, Smooth, lower_confidence_bound


class NoiseArgmax(torch.nn.Module):
    """Logits = the input: at x = 0 the vote is uniform over the input's coordinates."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


class MustNotRun(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("this classifier must not be queried")


def half_space_at_distance(x: torch.Tensor, distance: float, seed: int) -> HalfSpace:
    """A random half-space at signed distance ``distance`` from x (positive: x on the class-1 side)."""
    w = torch.tensor(np.random.default_rng(seed).normal(size=x.numel()))
    return HalfSpace(w, distance * float(w.norm()) - float(w @ x.double()))


def max_radius(sigma: float, n: int, level: float) -> float:
    """The radius when all n votes agree: p_lower = level^(1/n)."""
    return sigma * float(norm.ppf(level ** (1 / n)))


# ------------------------------------------------------------------ stub models with known outcomes


SIGMAS_UNSORTED = (0.5, 0.12, 0.25)


@pytest.mark.parametrize("k", [0, 1, 2])
def test_estimator_class_k_selects_kth_smallest_sigma(k: int) -> None:
    """Constant estimator class k → σ = sorted(Σ)[k]; constant classifiers give exact radii."""
    sigma_e, n0, n, alpha, beta = 0.25, 10, 400, 0.01, 0.05
    ordered = sorted(SIGMAS_UNSORTED)
    # The classifier for the j-th smallest σ always says class j + 1, so the prediction tells
    # which classifier ran.
    classifiers = {s: ConstantClass(ordered.index(s) + 1, 4) for s in SIGMAS_UNSORTED}
    dual = DualSmooth(ConstantClass(k, 3), classifiers, sigma_e=sigma_e, num_classes=4)
    assert dual.sigmas == ordered
    cert = dual.certify(torch.zeros(2), n0, n, alpha, beta, 100, sample_generator(0, "dual", k))
    assert isinstance(cert, DualCertificate)
    assert cert.sigma == ordered[k]
    assert cert.prediction == k + 1
    # R_σ uses β and σ_e; R_c uses α and the chosen σ.
    assert cert.r_sigma == pytest.approx(max_radius(sigma_e, n, beta), rel=1e-6)
    assert cert.r_c == pytest.approx(max_radius(ordered[k], n, alpha), rel=1e-6)
    assert cert.radius == min(cert.r_sigma, cert.r_c)
    assert dual.estimate(torch.zeros(2), n0, n, beta, 100) == (ordered[k], pytest.approx(cert.r_sigma))


def test_radius_is_the_minimum_whichever_is_smaller() -> None:
    classifiers = {0.1: ConstantClass(0, 2), 1.0: ConstantClass(1, 2)}
    n, alpha, beta = 300, 0.05, 0.05
    small = DualSmooth(ConstantClass(0, 2), classifiers, 0.5, 2).certify(torch.zeros(3), 5, n, alpha, beta, 64)
    large = DualSmooth(ConstantClass(1, 2), classifiers, 0.5, 2).certify(torch.zeros(3), 5, n, alpha, beta, 64)
    assert small.r_c < small.r_sigma and small.radius == small.r_c  # σ = 0.1 < σ_e: R_c binds
    assert large.r_sigma < large.r_c and large.radius == large.r_sigma  # σ = 1.0 > σ_e: R_σ binds
    assert (small.sigma, large.sigma) == (0.1, 1.0)
    assert (small.prediction, large.prediction) == (0, 1)


def test_stages_draw_from_their_own_streams_split_from_the_generator() -> None:
    """R_σ and R_c match Smooth run on the two generators split from the certificate's generator."""
    x = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64)
    estimator = half_space_at_distance(x, 0.3, seed=1)  # votes mostly class 1 → σ = 0.5
    classifiers = {0.25: half_space_at_distance(x, -0.2, seed=2), 0.5: half_space_at_distance(x, 0.15, seed=3)}
    sigma_e, n0, n, alpha, beta, batch_size = 0.4, 30, 300, 0.05, 0.1, 70
    dual = DualSmooth(estimator, classifiers, sigma_e, num_classes=2)
    unsplit_agrees = []
    for i in range(8):
        cert = dual.certify(x, n0, n, alpha, beta, batch_size, sample_generator(1, "dual-rc", i))
        estimator_noise, classifier_noise = split_generator(sample_generator(1, "dual-rc", i), torch.device("cpu"))
        choice, r_sigma = Smooth(estimator, 2, sigma_e).certify(x, n0, n, beta, batch_size, estimator_noise)
        assert choice == 1
        assert (cert.sigma, cert.r_sigma) == (0.5, r_sigma)
        prediction, r_c = Smooth(classifiers[0.5], 2, 0.5).certify(x, n0, n, alpha, batch_size, classifier_noise)
        assert (cert.prediction, cert.r_c) == (prediction, r_c)
        assert cert.radius == (min(r_sigma, r_c) if prediction != ABSTAIN else 0.0)
        assert cert.samples == 2 * (n0 + n)
        # Sensitivity: the unsplit generator gives other counts.
        unsplit = Smooth(estimator, 2, sigma_e).certify(x, n0, n, beta, batch_size, sample_generator(1, "dual-rc", i))
        unsplit_agrees.append(unsplit == (choice, r_sigma))
    assert not all(unsplit_agrees)


def test_split_generator_is_deterministic_and_gives_distinct_streams() -> None:
    first = [g.initial_seed() for g in split_generator(sample_generator(0, "split", 1), torch.device("cpu"))]
    again = [g.initial_seed() for g in split_generator(sample_generator(0, "split", 1), torch.device("cpu"))]
    other = [g.initial_seed() for g in split_generator(sample_generator(0, "split", 2), torch.device("cpu"))]
    assert first == again and first[0] != first[1] and set(first).isdisjoint(other)
    torch.manual_seed(5)
    unseeded = [g.initial_seed() for g in split_generator(None, torch.device("cpu"))]
    torch.manual_seed(5)
    assert unseeded == [g.initial_seed() for g in split_generator(None, torch.device("cpu"))]


def test_same_generator_seed_and_batch_size_give_identical_dual_certificates() -> None:
    x = torch.tensor([0.1, 0.2], dtype=torch.float64)
    # Margins large enough (p ≥ 0.84 everywhere) that the certificate is all but surely not an abstention.
    dual = DualSmooth(half_space_at_distance(x, 0.3, 4),
                      {0.25: half_space_at_distance(x, 0.3, 5), 0.5: half_space_at_distance(x, 0.5, 6)}, 0.3, 2)
    for batch_size in (9, 128):
        first = dual.certify(x, 50, 200, 0.05, 0.05, batch_size, sample_generator(2, "dual-det", 3))
        second = dual.certify(x, 50, 200, 0.05, 0.05, batch_size, sample_generator(2, "dual-det", 3))
        assert first == second and first.prediction != ABSTAIN


# ------------------------------------------------------------------ abstaining


def test_estimator_abstains_on_uniform_vote_and_classifiers_are_not_queried() -> None:
    """Uniform vote over three sigmas (p = 1/3): the estimator abstains, so the dual does too."""
    dual = DualSmooth(NoiseArgmax(), {0.1: MustNotRun(), 0.2: MustNotRun(), 0.3: MustNotRun()}, 1.0, 5)
    for i in range(30):
        cert = dual.certify(torch.zeros(3), 20, 200, 0.05, 0.05, 200, sample_generator(3, "est-abstain", i))
        assert cert.prediction == ABSTAIN and cert.radius == 0.0
        assert math.isnan(cert.sigma) and cert.r_sigma == 0.0 and cert.r_c == 0.0
        assert cert.samples == 20 + 200  # the classifier never ran
    sigma, r_sigma = dual.estimate(torch.zeros(3), 20, 200, 0.05, 200, sample_generator(3, "est-abstain", 99))
    assert math.isnan(sigma) and r_sigma == 0.0


def test_estimator_coin_flip_between_two_sigmas_mostly_abstains() -> None:
    """A fair coin between the two sigmas: certifying either choice is an error of rate ≤ β."""
    classifiers = {0.25: ConstantClass(0, 2), 0.5: ConstantClass(1, 2)}
    dual = DualSmooth(NoiseArgmax(), classifiers, 1.0, 2)
    beta, trials = 0.05, 200
    certs = [dual.certify(torch.zeros(2), 20, 200, 0.05, beta, 200, sample_generator(4, "coin", i))
             for i in range(trials)]
    abstained = [c for c in certs if c.prediction == ABSTAIN]
    assert trials - len(abstained) <= upper_tolerance(trials, beta)
    assert all(math.isnan(c.sigma) and c.radius == 0.0 for c in abstained)


def test_classifier_abstains_gives_zero_radius() -> None:
    """Estimator certain, classifier's vote uniform over 3 classes: prediction −1, radius 0."""
    n, beta = 300, 0.05
    dual = DualSmooth(ConstantClass(1, 2), {0.3: MustNotRun(), 0.6: NoiseArgmax()}, 0.4, 3)
    for i in range(20):
        cert = dual.certify(torch.zeros(3), 20, n, 0.05, beta, 300, sample_generator(5, "clf-abstain", i))
        assert cert.prediction == ABSTAIN and cert.radius == 0.0 and cert.r_c == 0.0
        assert cert.sigma == 0.6 and cert.samples == 2 * (20 + n)
        assert cert.r_sigma == pytest.approx(max_radius(0.4, n, beta), rel=1e-6)


# ------------------------------------------------------------------ union-bound validity


def test_union_bound_validity_over_many_generators() -> None:
    """P[R > min(R_σ_true, R_c_true) or wrong σ/class] ≤ α + β, and each part at its own level.

    Estimator: half-space at distance 0.4 from x, smoothed at σ_e = 0.5 (p = Φ(0.8) ≈ 0.79) choosing
    the larger σ = 0.5, true R_σ = 0.4. Classifier for σ = 0.5: half-space at distance 0.45
    (p = Φ(0.9) ≈ 0.82), true R_c = 0.45. The classifier for the wrong σ = 0.25 predicts class 0.
    """
    x = torch.tensor([0.2, -0.4, 0.1, 0.3], dtype=torch.float64)
    sigma_e, true_r_sigma, true_r_c = 0.5, 0.4, 0.45
    estimator = half_space_at_distance(x, true_r_sigma, seed=10)
    classifiers = {0.25: ConstantClass(0, 2), 0.5: half_space_at_distance(x, true_r_c, seed=11)}
    dual = DualSmooth(estimator, classifiers, sigma_e, num_classes=2)
    n0, n, alpha, beta, trials = 50, 200, 0.1, 0.05, 400
    true_radius = min(true_r_sigma, true_r_c)

    failures = estimator_failures = classifier_failures = classifier_runs = 0
    radii = []
    for i in range(trials):
        cert = dual.certify(x, n0, n, alpha, beta, n, sample_generator(6, "union", i))
        radii.append(cert.radius)
        if cert.prediction != ABSTAIN:
            assert cert.radius == min(cert.r_sigma, cert.r_c)
            if cert.sigma != 0.5 or cert.prediction != 1 or cert.radius > true_radius:
                failures += 1
        else:
            assert cert.radius == 0.0
        if not math.isnan(cert.sigma) and (cert.sigma != 0.5 or cert.r_sigma > true_r_sigma):
            estimator_failures += 1
        if cert.sigma == 0.5:
            classifier_runs += 1
            if cert.prediction != ABSTAIN and (cert.prediction != 1 or cert.r_c > true_r_c):
                classifier_failures += 1

    assert failures <= upper_tolerance(trials, alpha + beta)
    assert estimator_failures <= upper_tolerance(trials, beta)  # R_σ is certified at level β ...
    assert classifier_failures <= upper_tolerance(classifier_runs, alpha)  # ... and R_c at α
    # Not trivially valid: nearly all certify, with radii near the truth.
    radii = np.array(radii)
    assert classifier_runs > 0.95 * trials and (radii > 0).mean() > 0.9
    assert 0.6 * true_radius < radii.mean() < true_radius
    # The estimator's failure rate is consistent with the exact size of its bound (β, not α).
    bounds = {k: lower_confidence_bound(k, n, beta) for k in range(n // 2, n + 1)}
    p_e = norm.cdf(true_r_sigma / sigma_e)
    exact = sum(binom.pmf(k, n, p_e) for k, b in bounds.items() if b > p_e)
    assert binom.ppf(TAIL, trials, exact) <= estimator_failures <= binom.ppf(1 - TAIL, trials, exact)


# ------------------------------------------------------------------ argument checks


@pytest.mark.parametrize("classifiers", [{}, {0.25: ConstantClass(0, 2)}])
def test_fewer_than_two_sigmas_raises(classifiers: dict) -> None:
    with pytest.raises(ValueError):
        DualSmooth(ConstantClass(0, 2), classifiers, 0.25, 2)


@pytest.mark.parametrize(("alpha", "beta"), [(0.0, 0.05), (0.5, 0.05), (0.05, 0.0), (0.05, 0.5), (-1.0, 0.1), (0.1, 0.9)])
def test_bad_alpha_or_beta_raises(alpha: float, beta: float) -> None:
    dual = DualSmooth(ConstantClass(0, 2), {0.25: ConstantClass(0, 2), 0.5: ConstantClass(1, 2)}, 0.25, 2)
    with pytest.raises(ValueError):
        dual.certify(torch.zeros(2), 10, 10, alpha, beta, 10)


@pytest.mark.parametrize(("sigma_e", "sigmas"), [(0.0, (0.25, 0.5)), (-0.1, (0.25, 0.5)), (0.25, (0.0, 0.5)), (0.25, (-0.5, 0.5))])
def test_nonpositive_sigmas_raise(sigma_e: float, sigmas: tuple[float, float]) -> None:
    with pytest.raises(ValueError):
        DualSmooth(ConstantClass(0, 2), {s: ConstantClass(0, 2) for s in sigmas}, sigma_e, 2)


@pytest.mark.parametrize(("n0", "n"), [(0, 10), (10, 0)])
def test_bad_sample_counts_raise(n0: int, n: int) -> None:
    dual = DualSmooth(ConstantClass(0, 2), {0.25: ConstantClass(0, 2), 0.5: ConstantClass(1, 2)}, 0.25, 2)
    with pytest.raises(ValueError):
        dual.certify(torch.zeros(2), n0, n, 0.05, 0.05, 10)
