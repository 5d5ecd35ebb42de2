"""Cascaded smoothing: stage order, α split, abstention rules and coverage on classifiers with known p."""
import math

import numpy as np
import pytest
import torch
from scipy.stats import binomtest, norm

from closed_form import ConstantClass, FixedDistribution, upper_tolerance
from dualrs.cascade import CascadeSmooth
from dualrs.smoothing import lower_confidence_bound

X = torch.zeros(4)


def cascade(stage_probs: dict[float, list[float]], threshold: float = 0.5) -> CascadeSmooth:
    return CascadeSmooth({s: FixedDistribution(p, s) for s, p in stage_probs.items()}, 3, threshold)


def test_largest_sigma_runs_first_and_certifies_with_its_share_of_alpha():
    smooth = CascadeSmooth({0.25: ConstantClass(1, 3), 0.5: ConstantClass(2, 3), 1.0: ConstantClass(0, 3)}, 3)
    cert = smooth.certify(X, n0=10, n=100, alpha=0.003, batch_size=64)
    assert (cert.prediction, cert.sigma, cert.stage) == (0, 1.0, 0)
    lower = lower_confidence_bound(100, 100, 0.003 / 3 / 2)
    assert cert.radius == pytest.approx(1.0 * norm.ppf(lower), rel=1e-12)


def test_unconfident_stage_passes_on_and_limits_the_radius():
    probs = {1.0: [0.2, 0.35, 0.45], 0.5: [0.95, 0.03, 0.02]}
    cert = cascade(probs).certify(X, n0=50, n=4000, alpha=0.002, batch_size=500,
                                  generator=torch.Generator().manual_seed(0))
    assert (cert.prediction, cert.sigma, cert.stage) == (0, 0.5, 1)
    # Stage 1 alone would certify 0.5·Φ⁻¹(≈0.94) ≈ 0.78; stage 0's class 2 (p ≈ 0.45) is within
    # 1.0·(0 − Φ⁻¹(0.45 + slack)) ≈ 0.05–0.13 of becoming confident, which binds.
    assert 0 < cert.radius < 1.0 * (0 - norm.ppf(0.45))
    assert cert.radius < 0.5 * norm.ppf(0.93)


def test_earlier_stage_confident_in_the_same_class_does_not_limit_the_radius():
    # Stage 0 is just below p0 for class 0 only: it can only become confident in class 0, the output.
    probs = {1.0: [0.45, 0.30, 0.25], 0.5: [0.97, 0.02, 0.01]}
    cert = cascade(probs).certify(X, n0=50, n=20000, alpha=0.002, batch_size=2000,
                                  generator=torch.Generator().manual_seed(1))
    assert cert.prediction == 0 and cert.stage == 1
    assert cert.radius > 1.0 * (0 - norm.ppf(0.45))  # class 0's margin at stage 0 would have bound


def test_undecided_stage_abstains():
    probs = {1.0: [0.5, 0.25, 0.25], 0.5: [0.97, 0.02, 0.01]}
    cert = cascade(probs).certify(X, n0=50, n=1000, alpha=0.001, batch_size=500,
                                  generator=torch.Generator().manual_seed(2))
    assert cert.prediction == -1 and cert.stage == 0 and math.isnan(cert.sigma) and cert.radius == 0.0


def test_no_confident_stage_abstains_after_the_last():
    probs = {1.0: [0.34, 0.33, 0.33], 0.5: [0.4, 0.3, 0.3]}
    cert = cascade(probs).certify(X, n0=50, n=4000, alpha=0.001, batch_size=1000,
                                  generator=torch.Generator().manual_seed(3))
    assert cert.prediction == -1 and cert.stage == 1


def test_threshold_above_half_shrinks_the_radius():
    probs = {1.0: [0.95, 0.03, 0.02]}
    half = cascade(probs, 0.5).certify(X, 20, 2000, 0.001, 1000, torch.Generator().manual_seed(4))
    high = cascade(probs, 0.7).certify(X, 20, 2000, 0.001, 1000, torch.Generator().manual_seed(4))
    assert half.prediction == high.prediction == 0
    assert high.radius == pytest.approx(half.radius - 1.0 * norm.ppf(0.7))


@pytest.mark.parametrize("threshold", [0.3, 1.0])
def test_threshold_outside_range_is_refused(threshold):
    with pytest.raises(ValueError, match="threshold"):
        cascade({1.0: [0.9, 0.05, 0.05]}, threshold)


def true_radius(stage_probs: dict[float, list[float]], p0: float) -> tuple[int, float]:
    """The exact cascade's class and radius from the true probabilities (the module docstring's R)."""
    earlier = []
    for sigma in sorted(stage_probs, reverse=True):
        p = np.asarray(stage_probs[sigma])
        if p.max() >= p0:
            c = int(p.argmax())
            radius = sigma * (norm.ppf(p[c]) - norm.ppf(p0))
            for s_j, p_j in earlier:
                radius = min(radius, s_j * (norm.ppf(p0) - norm.ppf(np.delete(p_j, c).max())))
            return c, radius
        earlier.append((sigma, p))
    return -1, 0.0


@pytest.mark.parametrize("stage_probs", [
    {1.0: [0.30, 0.30, 0.40], 0.5: [0.62, 0.20, 0.18], 0.25: [0.9, 0.05, 0.05]},
    {1.0: [0.58, 0.22, 0.20], 0.5: [0.8, 0.1, 0.1]},
])
def test_coverage_rate_of_overstated_certificates_is_at_most_alpha(stage_probs):
    """Over 1500 certifications with few samples (so bounds are tight and do fail sometimes), the rate
    of certificates that name another class than the exact cascade or exceed its exact radius is ≤ α."""
    alpha, trials, p0 = 0.2, 1500, 0.5
    true_class, radius = true_radius(stage_probs, p0)
    smooth = cascade(stage_probs, p0)
    generator = torch.Generator().manual_seed(5)
    misses = certified = 0
    for _ in range(trials):
        cert = smooth.certify(X, n0=5, n=200, alpha=alpha, batch_size=200, generator=generator)
        if cert.prediction >= 0:
            certified += 1
            misses += cert.prediction != true_class or cert.radius > radius + 1e-12
    assert certified > trials // 10, "the test needs certificates to check"
    assert misses <= upper_tolerance(trials, alpha)



def test_stage_bounds_are_clopper_pearson_at_the_stage_shares_of_alpha():
    """p̲ of the guess at α_k/2 and p̄ of every class at α_k/(2C), against scipy's exact interval."""
    smooth = CascadeSmooth({1.0: ConstantClass(1, 3)}, 3)
    bounds = smooth.stage_bounds(smooth.stages[0], X, 10, 400, 0.01, 400, None)
    upper_zero = binomtest(0, 400).proportion_ci(1 - 2 * 0.01 / 6, "exact").high
    assert bounds.guess == 1
    assert bounds.p_lower == pytest.approx(binomtest(400, 400).proportion_ci(1 - 2 * 0.01 / 2, "exact").low)
    np.testing.assert_allclose(bounds.p_upper, [upper_zero, 1.0, upper_zero], rtol=1e-10)
