"""Statistical tests of randomized smoothing (Cohen et al. 2019) on closed-form base classifiers.

The base classifiers are half-spaces f(x) = 1[w·x + b > 0], for which everything is known exactly:
under x + δ, δ ~ N(0, σ²I), p_1 = Φ((w·x + b) / (σ‖w‖)), and the exact smoothed radius
σ·Φ⁻¹(p_1) equals the distance (w·x + b)/‖w‖ from x to the hyperplane. Coverage claims are
checked over many independent generators against binomial tolerances, never on one seed.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from scipy.stats import beta as beta_dist
from scipy.stats import binom, binomtest, norm

from closed_form import TAIL, ConstantClass, HalfSpace, upper_tolerance
from dualrs.seeding import sample_generator
from dualrs.smoothing import ABSTAIN, NOISE_BLOCK, CertifyBound, GaussianStream, Smooth, lower_confidence_bound
from dualrs.validation import NeverCertifiesWarning

class NoiseArgmax(torch.nn.Module):
    """Logits = the input itself: at x = 0 the vote is uniform over the input's coordinates."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def half_space_at_distance(distance: float, dim: int = 4, seed: int = 0) -> tuple[HalfSpace, torch.Tensor]:
    """A random half-space and a point x with signed distance ``distance`` to its hyperplane."""
    rng = np.random.default_rng(seed)
    w = torch.tensor(rng.normal(size=dim))
    x = torch.tensor(rng.normal(size=dim))
    b = distance * float(w.norm()) - float(w @ x)
    return HalfSpace(w, b), x


def true_p1(model: HalfSpace, x: torch.Tensor, sigma: float) -> float:
    return float(norm.cdf((float(model.w @ x) + model.b) / (sigma * float(model.w.norm()))))


@functools.lru_cache(maxsize=None)
def cached_bound(k: int, n: int, alpha: float) -> float:
    return lower_confidence_bound(k, n, alpha)


def exact_exceedance(n: int, p: float, alpha: float) -> float:
    """P[p_lower(K) > p] for K ~ Binomial(n, p): the exact failure rate of the bound at p."""
    return float(sum(binom.pmf(k, n, p) for k in range(n + 1) if cached_bound(k, n, alpha) > p))


def exact_radius_moments(n: int, p: float, alpha: float, sigma: float) -> tuple[float, float]:
    """Mean and variance of the certified radius when K ~ Binomial(n, p) votes go to the guess."""
    ks = np.arange(n + 1)
    bounds = np.array([cached_bound(int(k), n, alpha) for k in ks])
    radii = np.where(bounds >= 0.5, sigma * norm.ppf(np.maximum(bounds, 0.5)), 0.0)
    weights = binom.pmf(ks, n, p)
    mean = float(weights @ radii)
    return mean, float(weights @ (radii - mean) ** 2)


def test_half_space_helper_is_consistent() -> None:
    model, x = half_space_at_distance(0.4)
    assert float(model.w @ x + model.b) / float(model.w.norm()) == pytest.approx(0.4)
    assert 0.5 * norm.ppf(true_p1(model, x, 0.5)) == pytest.approx(0.4)


# ------------------------------------------------------------------ lower_confidence_bound


@pytest.mark.parametrize(("k", "n"), [(1, 10), (7, 10), (9, 10), (37, 50), (480, 500), (9000, 10000)])
@pytest.mark.parametrize("alpha", [0.001, 0.05, 0.2])
def test_lower_confidence_bound_is_clopper_pearson(k: int, n: int, alpha: float) -> None:
    """The α quantile of Beta(k, n − k + 1), which is the lower end of scipy's exact two-sided 1 − 2α interval."""
    assert lower_confidence_bound(k, n, alpha) == pytest.approx(beta_dist.ppf(alpha, k, n - k + 1), rel=1e-9, abs=1e-12)
    exact = binomtest(k, n).proportion_ci(1 - 2 * alpha, "exact").low
    assert lower_confidence_bound(k, n, alpha) == pytest.approx(exact, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("alpha", [0.001, 0.05])
def test_lower_confidence_bound_edge_counts(alpha: float) -> None:
    assert lower_confidence_bound(0, 20, alpha) == 0.0
    # All successes: the one-sided bound solves p^n = α.
    assert lower_confidence_bound(20, 20, alpha) == pytest.approx(alpha ** (1 / 20), rel=1e-9)


def test_lower_confidence_bound_monotone() -> None:
    bounds = [lower_confidence_bound(k, 40, 0.05) for k in range(41)]
    assert all(a < b for a, b in zip(bounds, bounds[1:]))
    # Smaller α means a lower (more conservative) bound.
    assert lower_confidence_bound(30, 40, 0.01) < lower_confidence_bound(30, 40, 0.05) < lower_confidence_bound(30, 40, 0.2)
    # And it lies below the point estimate.
    assert all(b <= k / 40 for k, b in enumerate(bounds))


@pytest.mark.parametrize("n", [20, 100])
def test_lower_confidence_bound_exact_size_at_most_alpha(n: int) -> None:
    """Exactly (no sampling): P[p_lower > p] ≤ α over a grid of true p, and is not far below α."""
    alpha = 0.1
    sizes = [exact_exceedance(n, p, alpha) for p in np.linspace(0.01, 0.99, 99)]
    assert max(sizes) <= alpha + 1e-9
    assert max(sizes) > 0.6 * alpha  # not trivially conservative


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.8, 0.97])
def test_lower_confidence_bound_coverage_by_simulation(p: float) -> None:
    n, alpha, trials = 50, 0.1, 3000
    rng = np.random.default_rng(12345 + int(1000 * p))
    ks = rng.binomial(n, p, size=trials)
    failures = sum(cached_bound(int(k), n, alpha) > p for k in ks)
    assert failures <= upper_tolerance(trials, alpha)
    # Also consistent with the exact size of the bound at this p (a two-sided check).
    exact = exact_exceedance(n, p, alpha)
    assert binom.ppf(TAIL, trials, exact) <= failures <= binom.ppf(1 - TAIL, trials, exact)


# ------------------------------------------------------------------ certify on half-spaces


@pytest.mark.parametrize(("sigma", "distance", "seed"), [(0.5, 0.5, 0), (0.25, 0.4, 1), (1.0, 0.3, 2)])
def test_certify_large_n_radius_close_to_distance_to_hyperplane(sigma: float, distance: float, seed: int) -> None:
    model, x = half_space_at_distance(distance, dim=5, seed=seed)
    smooth = Smooth(model, num_classes=2, sigma=sigma)
    n, alpha = 100_000, 0.001
    prediction, radius = smooth.certify(x, 100, n, alpha, batch_size=50_000,
                                        generator=sample_generator(seed, "large-n", 0))
    assert prediction == 1
    # The exact smoothed radius is the distance; the certified one sits a little below it: the
    # bound's slack is about σ·z_α·sqrt(p(1−p)/n)/φ(Φ⁻¹(p)) ≈ 0.015σ here, sampling noise similar.
    p = true_p1(model, x, sigma)
    slack = sigma * math.sqrt(p * (1 - p) / n) / norm.pdf(norm.ppf(p))
    assert distance - 8 * slack < radius < distance
    assert radius > distance - 0.05


def test_certify_predicts_the_side_of_the_hyperplane() -> None:
    model, x = half_space_at_distance(-0.4, dim=3, seed=3)  # x on the class-0 side
    smooth = Smooth(model, num_classes=2, sigma=0.25)
    prediction, radius = smooth.certify(x, 100, 20_000, 0.001, 20_000, sample_generator(0, "side", 0))
    assert prediction == 0
    assert 0.35 < radius < 0.4


@pytest.mark.parametrize(("alpha", "sigma", "distance"), [(0.1, 0.5, 0.4), (0.05, 0.25, 0.3)])
def test_certify_coverage_over_many_generators(alpha: float, sigma: float, distance: float) -> None:
    """P[certified radius > true radius σ·Φ⁻¹(p_1)] ≤ α, checked over independent generators."""
    model, x = half_space_at_distance(distance, dim=4, seed=7)
    smooth = Smooth(model, num_classes=2, sigma=sigma)
    p = true_p1(model, x, sigma)
    true_radius = sigma * norm.ppf(p)
    assert true_radius == pytest.approx(distance)
    n0, n, trials = 50, 200, 400
    failures, radii = 0, []
    for i in range(trials):
        prediction, radius = smooth.certify(x, n0, n, alpha, n, sample_generator(2024, f"coverage-{alpha}", i))
        radii.append(radius)
        # A non-abstaining wrong class is a failure too (its true radius is 0).
        if prediction != ABSTAIN and (prediction != 1 or radius > true_radius):
            failures += 1
    assert failures <= upper_tolerance(trials, alpha)
    # Not trivially covered: certificates are nonzero and on average near the truth.
    radii = np.array(radii)
    assert (radii > 0).mean() > 0.95
    assert 0.6 * distance < radii.mean() < distance
    # Consistent with the exact failure rate of the Clopper–Pearson bound at the true p (the
    # guess from n0 = 50 samples is wrong with negligible probability here).
    exact = exact_exceedance(n, p, alpha)
    assert binom.ppf(TAIL, trials, exact) <= failures <= binom.ppf(1 - TAIL, trials, exact)
    # The radii's mean matches its exact value (to 5 standard errors): catches a bound that is
    # too loose or needlessly conservative (e.g. α/2), and noise of the wrong scale.
    mean, variance = exact_radius_moments(n, p, alpha, sigma)
    assert abs(radii.mean() - mean) < 5 * math.sqrt(variance / trials)


def test_certify_bound_fields_match_certify() -> None:
    model, x = half_space_at_distance(0.3, seed=4)
    smooth = Smooth(model, num_classes=2, sigma=0.5)
    bound = smooth.certify_bound(x, 50, 500, 0.05, 128, sample_generator(1, "bound", 0))
    assert isinstance(bound, CertifyBound)
    assert bound.guess == 1 and 0 <= bound.count <= 500 and bound.sigma == 0.5
    assert bound.p_lower == pytest.approx(lower_confidence_bound(bound.count, 500, 0.05))
    assert bound.radius == pytest.approx(0.5 * norm.ppf(bound.p_lower))
    assert (bound.prediction, bound.radius) == smooth.certify(x, 50, 500, 0.05, 128, sample_generator(1, "bound", 0))


def test_certify_constant_classifier_radius_is_maximal_for_n() -> None:
    """All n votes agree: p_lower = α^(1/n), radius σ·Φ⁻¹(α^(1/n))."""
    smooth = Smooth(ConstantClass(2, 4), num_classes=4, sigma=0.7)
    bound = smooth.certify_bound(torch.zeros(3), 10, 1000, 0.01, 300, sample_generator(0, "constant", 0))
    assert (bound.guess, bound.count) == (2, 1000)
    assert bound.p_lower == pytest.approx(0.01 ** (1 / 1000), rel=1e-9)
    assert bound.radius == pytest.approx(0.7 * norm.ppf(0.01 ** (1 / 1000)), rel=1e-6)


# ------------------------------------------------------------------ abstaining


def test_certify_abstains_on_uniform_three_class_vote() -> None:
    smooth = Smooth(NoiseArgmax(), num_classes=3, sigma=1.0)
    x = torch.zeros(3, dtype=torch.float64)
    results = [smooth.certify(x, 30, 300, 0.1, 300, sample_generator(5, "uniform", i)) for i in range(50)]
    # p_A = 1/3: reaching p_lower ≥ ½ would need ≥ ~165 of 300 votes, a > 10-sigma event.
    assert results == [(ABSTAIN, 0.0)] * 50



def test_a_lower_bound_of_exactly_one_half_abstains() -> None:
    """2 votes of 2 at α = 0.25: p_A_lower = 0.25^(1/2) = ½ exactly, which leaves p_A = ½ = p_B possible."""
    with pytest.warns(NeverCertifiesWarning, match="n = 2 draws can never certify at level 0.25"):  # and it does not
        bound = Smooth(ConstantClass(1, 2), num_classes=2, sigma=0.5).certify_bound(
            torch.zeros(3), 1, 2, 0.25, 2, sample_generator(0, "half", 0))
    assert (bound.guess, bound.count, bound.p_lower) == (1, 2, 0.5)
    assert (bound.prediction, bound.radius) == (ABSTAIN, 0.0)
    assert CertifyBound(1, 3, lower_confidence_bound(3, 3, 0.25), 0.5).prediction == 1  # 0.25^(1/3) > ½


def test_certify_abstains_on_the_hyperplane() -> None:
    """x on the decision boundary: p = ½ for both classes, so any certificate is wrong; ≤ α of them."""
    model, x = half_space_at_distance(0.0, seed=8)
    smooth = Smooth(model, num_classes=2, sigma=0.5)
    alpha, trials = 0.05, 300
    results = [smooth.certify(x, 20, 200, alpha, 200, sample_generator(6, "boundary", i)) for i in range(trials)]
    non_abstain = sum(prediction != ABSTAIN for prediction, _ in results)
    assert non_abstain <= upper_tolerance(trials, alpha)
    assert all(radius == 0.0 for prediction, radius in results if prediction == ABSTAIN)
    assert all(radius >= 0.0 for _, radius in results)


def test_predict_abstains_on_a_fifty_fifty_classifier() -> None:
    model, x = half_space_at_distance(0.0, seed=9)
    smooth = Smooth(model, num_classes=2, sigma=0.5)
    alpha, trials = 0.01, 300
    predictions = [smooth.predict(x, 200, alpha, 200, sample_generator(7, "predict-tie", i)) for i in range(trials)]
    # At an exact tie the two-sided test rejects with probability ≤ α.
    assert sum(p != ABSTAIN for p in predictions) <= upper_tolerance(trials, alpha)
    assert set(predictions) <= {ABSTAIN, 0, 1}


def test_predict_returns_the_class_of_a_confident_classifier() -> None:
    model, x = half_space_at_distance(-0.5, seed=10)  # p_0 = Φ(2) ≈ 0.977
    smooth = Smooth(model, num_classes=2, sigma=0.25)
    predictions = [smooth.predict(x, 100, 0.01, 100, sample_generator(8, "predict", i)) for i in range(50)]
    assert predictions == [0] * 50
    assert Smooth(ConstantClass(3, 5), 5, 0.1).predict(torch.zeros(2), 20, 0.01, 7) == 3


def test_predict_rarely_returns_the_wrong_class() -> None:
    """Cohen et al., Prop. 1: PREDICT returns a class other than g(x) with probability ≤ α."""
    model, x = half_space_at_distance(0.05, seed=11)  # p_1 = Φ(0.2) ≈ 0.58: often abstains
    smooth = Smooth(model, num_classes=2, sigma=0.25)
    alpha, trials = 0.1, 300
    predictions = [smooth.predict(x, 100, alpha, 100, sample_generator(9, "predict-wrong", i)) for i in range(trials)]
    assert sum(p == 0 for p in predictions) <= upper_tolerance(trials, alpha / 2)
    assert 0 < sum(p == 1 for p in predictions) < trials  # both outcomes occur: the test has power


# ------------------------------------------------------------------ argument checks


@pytest.mark.parametrize("alpha", [0.0, -0.1, 0.5, 0.7, 1.0, math.nan])
def test_bad_alpha_raises(alpha: float) -> None:
    smooth = Smooth(ConstantClass(0, 2), 2, 0.5)
    with pytest.raises(ValueError):
        smooth.certify(torch.zeros(2), 10, 10, alpha, 10)
    with pytest.raises(ValueError):
        smooth.certify_bound(torch.zeros(2), 10, 10, alpha, 10)
    with pytest.raises(ValueError):
        smooth.predict(torch.zeros(2), 10, alpha, 10)


@pytest.mark.parametrize(("n0", "n", "batch_size"), [(0, 10, 5), (10, 0, 5), (10, -3, 5), (10, 10, 0), (10, 2.5, 5)])
def test_bad_counts_raise(n0: int, n: int, batch_size: int) -> None:
    smooth = Smooth(ConstantClass(0, 2), 2, 0.5)
    with pytest.raises(ValueError):
        smooth.certify(torch.zeros(2), n0, n, 0.05, batch_size)


@pytest.mark.parametrize(("n", "batch_size"), [(0, 5), (-1, 5), (10, 0)])
def test_predict_bad_counts_raise(n: int, batch_size: int) -> None:
    with pytest.raises(ValueError):
        Smooth(ConstantClass(0, 2), 2, 0.5).predict(torch.zeros(2), n, 0.05, batch_size)


@pytest.mark.parametrize("sigma", [0.0, -0.5, math.nan])
def test_bad_sigma_raises(sigma: float) -> None:
    with pytest.raises(ValueError):
        Smooth(ConstantClass(0, 2), 2, sigma)


def test_too_few_classes_raises() -> None:
    with pytest.raises(ValueError):
        Smooth(ConstantClass(0, 1), 1, 0.5)


# ------------------------------------------------------------------ sampling and determinism


@pytest.mark.parametrize(("num", "batch_size"), [(1, 1), (10, 3), (100, 100), (101, 25), (7, 1000)])
def test_sample_counts_sum_to_num(num: int, batch_size: int) -> None:
    smooth = Smooth(NoiseArgmax(), num_classes=4, sigma=1.0)
    counts = smooth.sample_counts(torch.zeros(4), num, batch_size, sample_generator(0, "counts", num))
    assert counts.shape == (4,)
    assert np.issubdtype(counts.dtype, np.integer)
    assert counts.sum() == num and (counts >= 0).all()


def test_sample_counts_noise_scale() -> None:
    """The vote of a 1-D threshold at t counts P[σ·Z > t] = Φ(−t/σ): checks the noise is N(0, σ²)."""
    sigma, t, num = 0.7, 0.35, 40_000
    model = HalfSpace(torch.tensor([1.0]), -t)
    counts = Smooth(model, 2, sigma).sample_counts(torch.zeros(1), num, 10_000, sample_generator(0, "scale", 0))
    p = norm.cdf(-t / sigma)  # ≈ 0.309; σ² instead of σ would give ≈ 0.24
    assert abs(counts[1] / num - p) < 5 * math.sqrt(p * (1 - p) / num)


def test_same_seed_and_batch_size_give_identical_certificates() -> None:
    model, x = half_space_at_distance(0.2, seed=12)
    smooth = Smooth(model, num_classes=2, sigma=0.5)
    for batch_size in (7, 64, 1000):
        first = smooth.certify_bound(x, 20, 500, 0.05, batch_size, sample_generator(3, "certify", 17))
        second = smooth.certify_bound(x, 20, 500, 0.05, batch_size, sample_generator(3, "certify", 17))
        assert first == second
        assert smooth.predict(x, 300, 0.05, batch_size, sample_generator(3, "predict", 4)) == \
            smooth.predict(x, 300, 0.05, batch_size, sample_generator(3, "predict", 4))


def test_same_seed_single_batch_certificates_do_not_depend_on_batch_size() -> None:
    """Any batch_size ≥ max(n0, n) draws each stage's noise in one call, so certificates agree."""
    smooth = Smooth(NoiseArgmax(), num_classes=5, sigma=1.0)
    x = torch.zeros(5)
    for i in range(5):
        reference = smooth.certify_bound(x, 100, 300, 0.05, 300, sample_generator(3, "single", i))
        for batch_size in (301, 4096):
            assert smooth.certify_bound(x, 100, 300, 0.05, batch_size, sample_generator(3, "single", i)) == reference


def test_different_sample_indices_give_different_draws() -> None:
    smooth = Smooth(NoiseArgmax(), num_classes=10, sigma=1.0)
    x = torch.zeros(10)
    counts = {tuple(smooth.sample_counts(x, 1000, 250, sample_generator(3, "certify", i))) for i in range(5)}
    counts |= {tuple(smooth.sample_counts(x, 1000, 250, sample_generator(4, "certify", 0)))}
    counts |= {tuple(smooth.sample_counts(x, 1000, 250, sample_generator(3, "other", 0)))}
    assert len(counts) == 7


def test_certificates_do_not_depend_on_batch_size_when_batches_split() -> None:
    smooth = Smooth(NoiseArgmax(), num_classes=10, sigma=1.0)
    x = torch.zeros(10)
    for i in range(3):
        reference = smooth.certify_bound(x, 100, 1000, 0.05, 1000, sample_generator(3, "certify", i))
        for batch_size in (1, 64, 100):
            assert smooth.certify_bound(x, 100, 1000, 0.05, batch_size, sample_generator(3, "certify", i)) == reference


@pytest.mark.parametrize("portions", [(1000,), (1, 999), (127, 1, 300, 572), (128, 128, 744), (5,) * 200])
def test_gaussian_stream_draws_do_not_depend_on_how_they_are_read(portions: tuple[int, ...]) -> None:
    """Draw j is the j-th draw of blocks of NOISE_BLOCK (the last one shorter), however it is read."""
    total, shape = 1000, (2, 3)
    generator = torch.Generator().manual_seed(9)
    blocks = [torch.randn((min(NOISE_BLOCK, total - start), *shape), generator=generator)
              for start in range(0, total, NOISE_BLOCK)]
    stream = GaussianStream(torch.Size(shape), total, torch.Generator().manual_seed(9), torch.device("cpu"),
                            torch.float32)
    read = torch.cat([stream.fill(torch.empty((m, *shape))) for m in portions])
    assert torch.equal(read, torch.cat(blocks))
    with pytest.raises(ValueError):
        stream.fill(torch.empty((1, *shape)))


class Recorder(torch.nn.Module):
    """Two logits from the first coordinate; records the batches it is given."""

    def __init__(self, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones((), dtype=dtype))
        self.batches: list[torch.Tensor] = []
        self.autocast: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.detach().clone(memory_format=torch.preserve_format))
        self.autocast.append(torch.is_autocast_enabled(x.device.type))
        s = self.scale * x.flatten(1)[:, 0]
        return torch.stack([-s, s], dim=1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_noise_is_drawn_in_the_models_dtype(dtype: torch.dtype) -> None:
    model = Recorder(dtype)
    x = torch.zeros(1, 2, 2, dtype=torch.float32)
    Smooth(model, 2, 0.5).sample_counts(x, 10, 4, sample_generator(0, "dtype", 0))
    assert [b.dtype for b in model.batches] == [dtype] * 3
    assert [len(b) for b in model.batches] == [4, 4, 2]


def test_channels_last_and_autocast_reach_the_model_and_keep_the_votes() -> None:
    """channels_last changes the layout only (same votes); autocast runs the model under it."""
    x = torch.rand(3, 4, 4)
    plain, nhwc, mixed = Recorder(), Recorder(), Recorder()
    counts = Smooth(plain, 2, 0.5).sample_counts(x, 50, 20, sample_generator(0, "layout", 0))
    assert np.array_equal(Smooth(nhwc, 2, 0.5, channels_last=True).sample_counts(
        x, 50, 20, sample_generator(0, "layout", 0)), counts)
    assert all(b.is_contiguous(memory_format=torch.channels_last) and not b.is_contiguous() for b in nhwc.batches)
    assert all(torch.equal(a, b) for a, b in zip(plain.batches, nhwc.batches))
    assert not any(plain.autocast) and not any(nhwc.autocast)
    Smooth(mixed, 2, 0.5, autocast=torch.bfloat16).sample_counts(x, 50, 20, sample_generator(0, "layout", 0))
    assert all(mixed.autocast)
