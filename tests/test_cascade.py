"""Cascaded smoothing, both variants: stage order, per-stage levels, undecided rules, Goodman intervals and
coverage on classifiers with known p."""
import math

import numpy as np
import pytest
import torch
from scipy.stats import binomtest, norm

from closed_form import ConstantClass, FixedDistribution, upper_tolerance
from dualrs.cascade import (VARIANTS, CascadeSmooth, StageVotes, goodman_intervals, off_class_upper,
                            pooled_counts)
from dualrs.smoothing import lower_confidence_bound

X = torch.zeros(4)


def cascade(stage_probs: dict[float, list[float]], threshold: float = 0.5, variant: str = "published") -> CascadeSmooth:
    return CascadeSmooth({s: FixedDistribution(p, s) for s, p in stage_probs.items()}, 3, threshold, variant)


class GuessFirst(torch.nn.Module):
    """Class ``first`` on the first forward pass (the n0 draws that pick the guess), then ``probs``."""

    def __init__(self, first: int, probs: list[float], sigma: float):
        super().__init__()
        self.first, self.rest, self.calls = first, FixedDistribution(probs, sigma), 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == 1:
            return torch.nn.functional.one_hot(torch.full((len(x),), self.first), len(self.rest.edges) + 1).double()
        return self.rest(x)


@pytest.mark.parametrize("variant, levels", [("published", [0.03, 0.015, 0.01]), ("union_bound", [0.01] * 3)])
def test_stage_levels(variant, levels):
    smooth = CascadeSmooth({s: ConstantClass(0, 3) for s in (0.25, 0.5, 1.0)}, 3, variant=variant)
    assert [smooth.stage_level(0.03, k) for k in range(3)] == pytest.approx(levels, rel=1e-12)


def test_published_levels_sum_past_alpha_and_its_failure_bound_is_the_union_bound():
    smooth = CascadeSmooth({s: ConstantClass(0, 3) for s in (0.25, 0.5, 1.0)}, 3)
    assert sum(smooth.stage_level(0.03, k) for k in range(3)) == pytest.approx(0.03 * (1 + 1 / 2 + 1 / 3))
    assert smooth.failure_bound(0.03) == pytest.approx(0.03 + 0.015 + 0.01 + 0.015 + 0.01)
    assert CascadeSmooth({1.0: ConstantClass(0, 3)}, 3).failure_bound(0.03) == pytest.approx(0.03)
    assert CascadeSmooth({1.0: ConstantClass(0, 3)}, 3, variant="union_bound").failure_bound(0.03) == 0.03


@pytest.mark.parametrize("variant, share", [("published", 0.003), ("union_bound", 0.003 / 3 / 2)])
def test_largest_sigma_runs_first_and_certifies_at_its_level(variant, share):
    classifiers = {0.25: ConstantClass(1, 3), 0.5: ConstantClass(2, 3), 1.0: ConstantClass(0, 3)}
    cert = CascadeSmooth(classifiers, 3, variant=variant).certify(X, n0=10, n=100, alpha=0.003, batch_size=64)
    assert (cert.prediction, cert.sigma, cert.stage) == (0, 1.0, 0)
    assert cert.radius == pytest.approx(1.0 * norm.ppf(lower_confidence_bound(100, 100, share)), rel=1e-12)


@pytest.mark.parametrize("variant", VARIANTS)
def test_unconfident_stage_passes_on_and_limits_the_radius(variant):
    probs = {1.0: [0.2, 0.35, 0.45], 0.5: [0.95, 0.03, 0.02]}
    cert = cascade(probs, variant=variant).certify(X, n0=50, n=4000, alpha=0.002, batch_size=500,
                                                   generator=torch.Generator().manual_seed(0))
    assert (cert.prediction, cert.sigma, cert.stage) == (0, 0.5, 1)
    # Stage 1 alone would certify 0.5·Φ⁻¹(≈0.94) ≈ 0.78; stage 0's class 2 (p ≈ 0.45) is within
    # 1.0·(0 − Φ⁻¹(0.45 + slack)) ≈ 0.05–0.13 of becoming confident, which binds.
    assert 0 < cert.radius < 1.0 * (0 - norm.ppf(0.45))
    assert cert.radius < 0.5 * norm.ppf(0.93)


@pytest.mark.parametrize("variant", VARIANTS)
def test_earlier_stage_confident_in_the_same_class_does_not_limit_the_radius(variant):
    # Stage 0 is just below p0 for class 0 only: it can only become confident in class 0, the output.
    probs = {1.0: [0.45, 0.30, 0.25], 0.5: [0.97, 0.02, 0.01]}
    cert = cascade(probs, variant=variant).certify(X, n0=50, n=20000, alpha=0.002, batch_size=2000,
                                                   generator=torch.Generator().manual_seed(1))
    assert cert.prediction == 0 and cert.stage == 1
    assert cert.radius > 1.0 * (0 - norm.ppf(0.45))  # class 0's margin at stage 0 would have bound


@pytest.mark.parametrize("variant", VARIANTS)
def test_undecided_guess_abstains(variant):
    probs = {1.0: [0.5, 0.25, 0.25], 0.5: [0.97, 0.02, 0.01]}
    cert = cascade(probs, variant=variant).certify(X, n0=50, n=1000, alpha=0.001, batch_size=500,
                                                   generator=torch.Generator().manual_seed(2))
    assert cert.prediction == -1 and cert.stage == 0 and math.isnan(cert.sigma) and cert.radius == 0.0


def test_only_the_published_variant_passes_on_when_another_class_than_the_guess_may_be_confident():
    """Stage 0 guesses class 2 (p = 0.35, certainly below p0) while class 1 (p = 0.55) may be confident:
    the published rule looks at the guess only and lets stage 1 certify class 1; the union bound abstains."""
    def classifiers():
        return {1.0: GuessFirst(2, [0.10, 0.55, 0.35], 1.0), 0.5: FixedDistribution([0.02, 0.97, 0.01], 0.5)}

    args = dict(n0=20, n=2000, alpha=0.001, batch_size=2000)
    published = CascadeSmooth(classifiers(), 3).certify(X, **args, generator=torch.Generator().manual_seed(6))
    union = CascadeSmooth(classifiers(), 3, variant="union_bound").certify(
        X, **args, generator=torch.Generator().manual_seed(6))
    assert (published.prediction, published.stage) == (1, 1)
    assert 0 < published.radius < 1.0 * (0 - norm.ppf(0.35))  # stage 0's class 2 still limits it
    assert (union.prediction, union.stage) == (-1, 0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_no_confident_stage_abstains_after_the_last(variant):
    probs = {1.0: [0.34, 0.33, 0.33], 0.5: [0.4, 0.3, 0.3]}
    cert = cascade(probs, variant=variant).certify(X, n0=50, n=4000, alpha=0.001, batch_size=1000,
                                                   generator=torch.Generator().manual_seed(3))
    assert cert.prediction == -1 and cert.stage == 1


def test_published_negative_radius_abstains_at_the_certifying_stage():
    """An earlier stage whose other class may reach p0 (its guess could not) makes R < 0 (certify.py)."""
    classifiers = {1.0: GuessFirst(2, [0.10, 0.55, 0.35], 1.0), 0.5: FixedDistribution([0.97, 0.02, 0.01], 0.5)}
    cert = CascadeSmooth(classifiers, 3).certify(X, 20, 2000, 0.001, 2000, torch.Generator().manual_seed(7))
    assert cert.prediction == -1 and cert.stage == 1 and math.isnan(cert.sigma) and cert.radius == 0.0


@pytest.mark.parametrize("variant", VARIANTS)
def test_threshold_above_half_shrinks_the_radius(variant):
    probs = {1.0: [0.95, 0.03, 0.02]}
    half = cascade(probs, 0.5, variant).certify(X, 20, 2000, 0.001, 1000, torch.Generator().manual_seed(4))
    high = cascade(probs, 0.7, variant).certify(X, 20, 2000, 0.001, 1000, torch.Generator().manual_seed(4))
    assert half.prediction == high.prediction == 0
    assert high.radius == pytest.approx(half.radius - 1.0 * norm.ppf(0.7))


@pytest.mark.parametrize("threshold", [0.3, 1.0])
def test_threshold_outside_range_is_refused(threshold):
    with pytest.raises(ValueError, match="threshold"):
        cascade({1.0: [0.9, 0.05, 0.05]}, threshold)


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="variant"):
        cascade({1.0: [0.9, 0.05, 0.05]}, variant="bonferroni")


def test_goodman_intervals_match_the_published_example():
    """Sison & Glaz (1995, JASA 90), example 1: Goodman's 95% intervals, printed to 3 decimals."""
    expected = [[.085, .166], [.115, .204], [.116, .207], [.091, .173], [.096, .181], [.143, .239], [.089, .171]]
    np.testing.assert_allclose(goodman_intervals(np.array([56, 72, 73, 59, 62, 87, 58]), 0.05), expected, atol=5e-4)


def test_goodman_interval_by_hand():
    """Goodman (1965): χ = χ²₁ quantile at 1 − α/m = z², z the normal 1 − α/(2m) quantile."""
    counts, alpha = np.array([50, 30, 20]), 0.06
    q = norm.ppf(1 - alpha / 6) ** 2
    half = math.sqrt(q * q + 4 * 30 * 70 * q / 100)
    np.testing.assert_allclose(goodman_intervals(counts, alpha)[1],
                               [(60 + q - half) / (2 * (100 + q)), (60 + q + half) / (2 * (100 + q))], rtol=1e-10)


@pytest.mark.parametrize("counts, c, cells", [
    ([3, 50, 2, 4, 10, 1, 0], 1, [50, 10, 10]),  # 10 alone; 4+3 pooled; the last pool 2+1 joins the last cell
    ([40, 30, 20, 6, 4], 0, [40, 30, 20, 10]),   # 4 left over joins the 6
    ([97, 2, 1], 0, [100]),                      # everything pools into c's cell
])
def test_pooled_counts(counts, c, cells):
    assert pooled_counts(np.array(counts), c).tolist() == cells


def test_off_class_upper_is_goodman_over_the_other_cells_at_twice_the_level():
    votes = StageVotes(1.0, 0, np.array([40, 30, 20, 6, 4]))
    expected = goodman_intervals(np.array([40, 30, 20, 10]), 0.02)[1:, 1].max()
    assert off_class_upper(votes, 0, 0.01) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("guess", [0, 1])
def test_off_class_upper_with_one_other_cell_is_one_minus_the_guess_lower_bound(guess):
    votes = StageVotes(1.0, guess, np.array([60, 37, 3]))  # cells [60, 40]: one besides c = 0
    lower = binomtest(int(votes.counts[guess]), 100).proportion_ci(1 - 2 * 0.01, "exact").low
    assert off_class_upper(votes, 0, 0.01) == pytest.approx(1 - lower, rel=1e-10)


@pytest.mark.parametrize("variant", VARIANTS)
def test_earlier_stage_bounds_use_the_variant_level(variant):
    """Published: stage j's off-class bound at the certifying stage's α_k (certify.py); union bound: max over
    the other classes of Clopper–Pearson at α_j/(2C), stage j's own share."""
    smooth = CascadeSmooth({s: ConstantClass(0, 3) for s in (0.25, 0.5, 1.0)}, 3, variant=variant)
    votes = StageVotes(1.0, 2, np.array([30, 25, 45]))
    upper = smooth.earlier_upper(votes, 0, 0.03, j=0, k=2)
    if variant == "published":
        assert upper == pytest.approx(off_class_upper(votes, 0, 0.01), rel=1e-12)
    else:
        assert upper == pytest.approx(binomtest(45, 100).proportion_ci(1 - 2 * 0.01 / 6, "exact").high, rel=1e-10)


@pytest.mark.parametrize("variant, share", [("published", 0.01), ("union_bound", 0.01 / 2)])
def test_guess_lower_is_clopper_pearson_at_the_variant_share(variant, share):
    smooth = CascadeSmooth({1.0: ConstantClass(1, 3)}, 3, variant=variant)
    votes = StageVotes(1.0, 1, np.array([5, 380, 15]))
    expected = binomtest(380, 400).proportion_ci(1 - 2 * share, "exact").low
    assert smooth.guess_lower(votes, 0.01) == pytest.approx(expected, rel=1e-10)


def exact_class(stage_probs: dict[float, list[float]], p0: float) -> int:
    """The exact cascade's class: the top class of the first stage with p ≥ p0, else -1."""
    for sigma in sorted(stage_probs, reverse=True):
        if max(stage_probs[sigma]) >= p0:
            return int(np.argmax(stage_probs[sigma]))
    return -1


def route_radius(stage_probs: dict[float, list[float]], p0: float, k: int, c: int) -> float:
    """The module docstring's R for class c certified by stage k, from the true probabilities: the radius
    a stage-k certificate of c may claim when all its bounds hold (negative when stage k is not confident)."""
    sigmas = sorted(stage_probs, reverse=True)
    radius = sigmas[k] * (norm.ppf(stage_probs[sigmas[k]][c]) - norm.ppf(p0))
    for sigma in sigmas[:k]:
        radius = min(radius, sigma * (norm.ppf(p0) - norm.ppf(np.delete(stage_probs[sigma], c).max())))
    return radius


def overstated_rate(stage_probs: dict[float, list[float]], variant: str, alpha: float, trials: int) -> tuple[int, int]:
    """(overstated, certified) over ``trials`` certifications with few samples (so bounds are tight and
    do fail): a certificate is overstated when it names another class than the exact cascade or
    claims more than the exact R of its own stage and class."""
    smooth, true_class = cascade(stage_probs, 0.5, variant), exact_class(stage_probs, 0.5)
    generator = torch.Generator().manual_seed(5)
    overstated = certified = 0
    for _ in range(trials):
        cert = smooth.certify(X, n0=5, n=200, alpha=alpha, batch_size=200, generator=generator)
        if cert.prediction >= 0:
            certified += 1
            overstated += (cert.prediction != true_class
                           or cert.radius > route_radius(stage_probs, 0.5, cert.stage, cert.prediction) + 1e-12)
    return overstated, certified


COVERAGE_CASES = [
    {1.0: [0.30, 0.30, 0.40], 0.5: [0.62, 0.20, 0.18], 0.25: [0.9, 0.05, 0.05]},
    {1.0: [0.58, 0.22, 0.20], 0.5: [0.8, 0.1, 0.1]},
]


@pytest.mark.parametrize("stage_probs", COVERAGE_CASES)
def test_union_bound_overstates_at_rate_at_most_alpha(stage_probs):
    alpha, trials = 0.2, 1500
    overstated, certified = overstated_rate(stage_probs, "union_bound", alpha, trials)
    assert certified > trials // 10, "the test needs certificates to check"
    assert overstated <= upper_tolerance(trials, alpha), overstated / trials


@pytest.mark.parametrize("stage_probs", COVERAGE_CASES)
def test_published_overstates_at_rate_at_most_its_union_bound(stage_probs):
    """The published variant guarantees α(2H_K − 1) (its failure_bound), not α; Goodman's intervals are
    large-sample, and n = 200 is enough here."""
    alpha, trials = 0.2, 1500
    overstated, certified = overstated_rate(stage_probs, "published", alpha, trials)
    bound = cascade(stage_probs).failure_bound(alpha)
    assert certified > trials // 10, "the test needs certificates to check"
    assert overstated <= upper_tolerance(trials, bound), overstated / trials


def test_a_lower_bound_of_exactly_one_half_is_not_confident_at_p0_one_half():
    """2 votes of 2 at level 0.25: p_lower = ½ exactly, where CERTIFY abstains (a tie stays possible)."""
    single = CascadeSmooth({0.5: ConstantClass(1, 2)}, 2, 0.5, "published")
    with pytest.warns(UserWarning, match="can never certify"):
        certificate = single.certify(X, 1, 2, 0.25, 2)
    assert (certificate.prediction, certificate.radius) == (-1, 0.0)
