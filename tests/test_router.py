"""Router among expert smoothed classifiers: choice, radii and coverage on models with known p."""
import math

import pytest
import torch
from scipy.stats import norm

from closed_form import ConstantClass, FixedDistribution, upper_tolerance
from dualrs.router import Expert, Router
from dualrs.smoothing import Smooth, lower_confidence_bound

X = torch.zeros(4)


def test_routes_to_the_chosen_expert_and_takes_the_smaller_radius():
    experts = [Expert("noise-0.25", 0.25, ConstantClass(3, 5)), Expert("dds-0.25", 0.25, ConstantClass(1, 5)),
               Expert("noise-1", 1.0, ConstantClass(2, 5))]
    router = Router(ConstantClass(1, 3), experts, sigma_e=0.5, num_classes=5)
    cert = router.certify(X, n0=10, n=200, alpha=0.001, beta=0.002, batch_size=64)
    r_route = 0.5 * norm.ppf(lower_confidence_bound(200, 200, 0.002))
    r_c = 0.25 * norm.ppf(lower_confidence_bound(200, 200, 0.001))
    assert (cert.prediction, cert.expert, cert.sigma) == (1, "dds-0.25", 0.25)
    assert cert.r_sigma == pytest.approx(r_route) and cert.r_c == pytest.approx(r_c)
    assert cert.radius == pytest.approx(min(r_route, r_c))


def test_router_abstention_abstains():
    experts = [Expert("a", 0.25, ConstantClass(0, 2)), Expert("b", 0.5, ConstantClass(0, 2))]
    router = Router(FixedDistribution([0.5, 0.5], 1.0), experts, sigma_e=1.0, num_classes=2)
    cert = router.certify(X, 20, 500, 0.001, 0.001, 500, torch.Generator().manual_seed(0))
    assert cert.prediction == -1 and cert.expert == "" and math.isnan(cert.sigma) and cert.radius == 0.0


@pytest.mark.parametrize("experts", [[("a", 0.25)], [("a", 0.25), ("a", 0.5)]])
def test_needs_two_uniquely_named_experts(experts):
    with pytest.raises(ValueError, match="expert"):
        Router(ConstantClass(0, 2), [Expert(n, s, ConstantClass(0, 2)) for n, s in experts], 0.5, 2)


def test_coverage_rate_of_overstated_certificates_is_at_most_alpha_plus_beta():
    """Router and experts with known probabilities; few samples so bounds fail sometimes: over 2000
    certifications the rate of a wrong class or a radius above the exact min(R_e, R_k) stays ≤ α + β."""
    route_p, sigma_e = [0.15, 0.75, 0.10], 0.5
    experts = [Expert("low", 0.25, FixedDistribution([0.9, 0.1], 0.25)),
               Expert("mid", 0.5, FixedDistribution([0.8, 0.2], 0.5)),
               Expert("high", 1.0, FixedDistribution([0.6, 0.4], 1.0))]
    router = Router(FixedDistribution(route_p, sigma_e), experts, sigma_e, num_classes=2)
    exact = min(sigma_e * norm.ppf(0.75), 0.5 * norm.ppf(0.8))
    alpha = beta = 0.05
    trials, misses, certified = 2000, 0, 0
    generator = torch.Generator().manual_seed(1)
    for _ in range(trials):
        cert = router.certify(X, n0=5, n=60, alpha=alpha, beta=beta, batch_size=64, generator=generator)
        if cert.prediction >= 0:
            certified += 1
            misses += cert.prediction != 0 or cert.expert != "mid" or cert.radius > exact + 1e-12
    assert certified > trials // 2
    assert misses <= upper_tolerance(trials, alpha + beta)
    assert misses >= 1, "with 60 samples some bounds must fail; none failing means the check is vacuous"


def test_router_then_expert_draw_in_turn_from_the_one_generator():
    """Fixed n: the certificate is Smooth's CERTIFY of the router, then of the chosen expert, on one generator
    (closed-form models; exact equality, so a change of noise streams fails)."""
    experts = [Expert("low", 0.25, FixedDistribution([0.9, 0.1], 0.25)),
               Expert("mid", 0.5, FixedDistribution([0.3, 0.7], 0.5))]
    router = Router(FixedDistribution([0.2, 0.8], 0.5), experts, 0.5, num_classes=2)
    for seed in range(5):
        cert = router.certify(X, 10, 100, 0.05, 0.05, 32, torch.Generator().manual_seed(seed))
        generator = torch.Generator().manual_seed(seed)
        choice, r_route = Smooth(router.router.base_classifier, 2, 0.5).certify(X, 10, 100, 0.05, 32, generator)
        assert choice == 1 and (cert.expert, cert.sigma, cert.r_sigma) == ("mid", 0.5, r_route)
        prediction, r_c = Smooth(experts[1].model, 2, 0.5).certify(X, 10, 100, 0.05, 32, generator)
        assert (cert.prediction, cert.r_c, cert.samples) == (prediction, r_c, 2 * (10 + 100))
        assert cert.radius == (min(r_route, r_c) if prediction >= 0 else 0.0)


@pytest.mark.slow
def test_adaptive_routing_coverage_is_at_most_alpha_plus_beta_with_fewer_draws():
    """Adaptive mode (Theorem 4.2 with anytime-valid bounds): over 1000 certifications on a fine radius grid,
    the rate of a wrong expert or class, or a radius above the exact min(R_e, R_k), stays ≤ α + β, and the
    draws stay below fixed n's 2(n0 + n)."""
    sigma_e = 0.5
    experts = [Expert("low", 0.25, FixedDistribution([0.9, 0.1], 0.25)),
               Expert("mid", 0.5, FixedDistribution([0.8, 0.2], 0.5)),
               Expert("high", 1.0, FixedDistribution([0.6, 0.4], 1.0))]
    router = Router(FixedDistribution([0.15, 0.75, 0.10], sigma_e), experts, sigma_e, num_classes=2)
    exact = min(sigma_e * norm.ppf(0.75), 0.5 * norm.ppf(0.8))
    n0, n, alpha, beta, trials = 10, 100, 0.05, 0.05, 1000
    grid = [0.02 * k for k in range(100)]
    misses = certified = samples = 0
    for seed in range(trials):
        cert = router.certify(X, n0, n, alpha, beta, 128, torch.Generator().manual_seed(seed), adaptive=True,
                              radii=grid)
        samples += cert.samples
        if cert.prediction >= 0:
            certified += 1
            assert cert.radius == min(cert.r_sigma, cert.r_c)
            misses += cert.prediction != 0 or cert.expert != "mid" or cert.radius > exact + 1e-12
        else:
            assert cert.radius == 0.0
    assert certified > trials // 2
    assert misses <= upper_tolerance(trials, alpha + beta)
    assert misses >= 1, "with 100 samples some bounds must fail; none failing means the check is vacuous"
    assert samples < trials * 2 * (n0 + n)
