"""Tests of adaptive certification (dualrs.sequential): the look schedule, the early-stopping n0
selection, validity over many certifications of closed-form models (half-spaces, whose exact radius
is the distance to the hyperplane, and constant classifiers), the sample savings, and agreement with
fixed-n CERTIFY on the radius grid.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import binom, norm

from closed_form import ConstantClass, HalfSpace
from dualrs.dual import DualSmooth, split_generator
from dualrs.labels import adaptive_label
from dualrs.seeding import sample_generator
from dualrs.sequential import (EARLY_SHARE, AdaptiveStage, cs_lower, look_sizes, radius_grid, select_class,
                               settle)
from dualrs.smoothing import ABSTAIN, Smooth, clopper_pearson_lower

CPU = torch.device("cpu")
TOLERANCE = 0.999  # quantile of the binomial law at the level that an observed failure count may reach


class NoiseArgmax(torch.nn.Module):
    """Logits = the input: at x = 0 the vote is uniform over the input's coordinates."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def half_space(x: torch.Tensor, distance: float, seed: int) -> HalfSpace:
    """A random half-space at signed distance ``distance`` from x (positive: x on the class-1 side)."""
    w = torch.tensor(np.random.default_rng(seed).normal(size=x.numel()))
    return HalfSpace(w, distance * float(w.norm()) - float(w @ x.double()))


def within_level(failures: int, trials: int, level: float) -> bool:
    return failures <= binom.ppf(TOLERANCE, trials, level)


# ------------------------------------------------------------------ schedule, grid, selection


def test_look_sizes() -> None:
    assert look_sizes(1000)[:6] == (32, 40, 48, 64, 80, 96) and look_sizes(1000)[-1] == 1000
    assert all(b > a for a, b in zip(look_sizes(1000), look_sizes(1000)[1:]))
    assert look_sizes(100) == (32, 40, 48, 64, 80, 96, 100) and look_sizes(20) == (20,)


def test_radius_grid() -> None:
    assert radius_grid(None, 1.1) == (0.0, 0.25, 0.5, 0.75, 1.0)
    assert radius_grid([1.0, 0.5, 0.5, 3.0], 2.0) == (0.0, 0.5, 1.0)
    with pytest.raises(ValueError, match="radius grid"):
        radius_grid([-0.5], 1.0)


def test_selection_stops_early_with_the_guess_of_all_n0_draws() -> None:
    """Same generator: the guess equals argmax of all n0 votes; clear inputs stop early."""
    smooth, x = Smooth(half_space(torch.zeros(3), 0.2, seed=1), 2, 0.5), torch.zeros(3)
    early = 0
    for i in range(40):
        guess, drawn = select_class(smooth, x, 100, 16, sample_generator(1, "select", i))
        assert guess == int(smooth.sample_counts(x, 100, 16, sample_generator(1, "select", i)).argmax())
        early += drawn < 100
    assert early >= 10
    assert select_class(Smooth(ConstantClass(2, 3), 3, 0.5), x, 100, 7, None) == (2, 56)  # first check: 56 > 44 left


# ------------------------------------------------------------------ one stage


def stage_failures(p: float, sigma: float, level: float, n: int, trials: int, seed: int,
                   radii: list[float] | None) -> tuple[int, float]:
    """Failures (bound above p) of single adaptive stages on a half-space with P[vote 1] = p, and mean draws."""
    model = HalfSpace(torch.tensor([1.0]), sigma * float(norm.ppf(p)))
    smooth, x = Smooth(model, 2, sigma), torch.zeros(1)
    failures, drawn = 0, []
    for i in range(trials):
        stage = AdaptiveStage(smooth, x, 1, n, level, radii, n, sample_generator(seed, "stage", i))
        settle([stage])
        failures += stage.result().p_lower > p
        drawn.append(stage.drawn)
    return failures, float(np.mean(drawn))


@pytest.mark.slow
@pytest.mark.parametrize("p", [0.62, 0.9])
def test_stage_bound_is_valid_at_its_stopping_time(p: float) -> None:
    """P[bound > p] ≤ a (binomial tolerance) at level 0.2 over 1500 stages that stop on a fine grid."""
    failures, drawn = stage_failures(p, 0.5, 0.2, 400, 1500, 11, [0.05 * k for k in range(40)])
    assert within_level(failures, 1500, 0.2)
    assert drawn < 400  # some stop early


def test_stopping_at_the_first_look_above_a_pointwise_bound_fails() -> None:
    """Negative control: the same harness with the pointwise Clopper–Pearson bound at the full level at
    every look (stopping at its best) exceeds the level."""
    rng, p, level, sizes = np.random.default_rng(2), 0.7, 0.2, np.array(look_sizes(400))
    counts = np.cumsum(rng.random((1500, 400)) < p, axis=1)[:, sizes - 1]
    peeking = (clopper_pearson_lower(counts, sizes, level) > p).any(axis=1).sum()
    assert not within_level(int(peeking), 1500, level)
    adaptive = (cs_lower(counts, sizes, EARLY_SHARE * level) > p).any(axis=1) | (
        clopper_pearson_lower(counts[:, -1], 400, (1 - EARLY_SHARE) * level) > p)
    assert within_level(int(adaptive.sum()), 1500, level)


def test_all_votes_agree_stops_once_the_top_step_is_certified() -> None:
    """A constant model at σ = 0.25, n = 1000, α = 0.001: the top step within reach is r = 0.5
    (reachable radius 0.25·Φ⁻¹((0.9α)^(1/n)) ≈ 0.61), certified by L_t(0.1α) ≥ Φ(2) long before n."""
    smooth, x = Smooth(ConstantClass(1, 3), 3, 0.25), torch.zeros(2)
    stage = AdaptiveStage(smooth, x, 1, 1000, 0.001, (0.0, 0.25, 0.5, 0.75), 1000, sample_generator(3, "all", 0))
    settle([stage])
    assert stage.certified == 3 and stage.drawn < 600
    assert stage.result().radius >= 0.5 and stage.result().count == stage.result().trials == stage.drawn


# ------------------------------------------------------------------ dual RS, adaptive


X4 = torch.tensor([0.2, -0.4, 0.1, 0.3], dtype=torch.float64)
# (true R_σ, σ_e, the chosen σ, true R_c)
CLASSIFIER_BINDS = (0.6, 0.5, 0.25, 0.3)
ESTIMATOR_BINDS = (0.3, 0.5, 1.0, 1.2)


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
    """P[R > min(R_σ, R_c) or wrong σ/class] ≤ α + β, R_σ alone ≤ β, R_c alone ≤ α (binomial tolerance),
    with a fine grid so that stages run long, and fewer draws than fixed n."""
    true_r_sigma, sigma_e, sigma, true_r_c = setting
    dual = scenario(*setting)
    n0, n, alpha, beta, trials = 50, 200, 0.1, 0.1, 1000
    grid = [0.02 * k for k in range(100)]
    failures = estimator_failures = classifier_failures = 0
    samples = []
    for i in range(trials):
        cert = dual.certify(X4, n0, n, alpha, beta, n, sample_generator(12, "adaptive-validity", i), adaptive=True,
                            radii=grid)
        samples.append(cert.samples)
        if cert.prediction != ABSTAIN:
            assert cert.radius == min(cert.r_sigma, cert.r_c)
            failures += cert.sigma != sigma or cert.prediction != 1 or cert.radius > min(true_r_sigma, true_r_c)
        if not math.isnan(cert.sigma):
            estimator_failures += cert.sigma != sigma or cert.r_sigma > true_r_sigma
            classifier_failures += cert.prediction not in (ABSTAIN, 1) or cert.r_c > true_r_c
    print(f"\nadaptive dual {setting}: unsound {failures}/{trials} (α+β = {alpha + beta}), R_σ {estimator_failures} "
          f"(β = {beta}), R_c {classifier_failures} (α = {alpha}); tolerance {binom.ppf(TOLERANCE, trials, alpha)}")
    assert within_level(failures, trials, alpha + beta)
    assert within_level(estimator_failures, trials, beta)
    assert within_level(classifier_failures, trials, alpha)
    assert np.mean(samples) < 2 * (n0 + n)


def test_adaptive_matches_fixed_n_on_the_grid_with_fewer_draws() -> None:
    """Same generators: the grid step of min(R_σ, R_c) equals fixed-n's for nearly every input, and
    the draws are fewer."""
    grid = (0.0, 0.25, 0.5, 0.75, 1.0)
    n0, n, alpha, beta = 100, 1000, 0.001, 0.001
    agree, adaptive_samples, fixed_samples = 0, 0, 0
    for i, setting in enumerate([CLASSIFIER_BINDS, ESTIMATOR_BINDS] * 10):
        dual = scenario(*setting)
        fixed = dual.certify(X4, n0, n, alpha, beta, 500, sample_generator(13, "grid", i))
        adaptive = dual.certify(X4, n0, n, alpha, beta, 500, sample_generator(13, "grid", i), adaptive=True,
                                radii=grid)
        step = lambda c: -1 if c.prediction == ABSTAIN else sum(c.radius >= r for r in grid)  # noqa: E731
        agree += step(fixed) == step(adaptive) and fixed.prediction == adaptive.prediction
        adaptive_samples += adaptive.samples
        fixed_samples += fixed.samples
    assert agree >= 19
    assert fixed_samples > 1.5 * adaptive_samples


def test_estimator_abstains_early() -> None:
    """A uniform estimator vote over three sigmas (p_σ̂ ≈ ⅓): its upper bound falls below ½ and the
    dual certificate abstains before the classifier draws past its selection and long before n."""
    classifiers = {0.1: ConstantClass(0, 5), 0.2: ConstantClass(1, 5), 0.3: ConstantClass(2, 5)}
    dual = DualSmooth(NoiseArgmax(), classifiers, 1.0, 5)
    n0, n = 20, 2000
    for i in range(10):
        cert = dual.certify(torch.zeros(3), n0, n, 0.05, 0.05, 128, sample_generator(16, "abstain", i), adaptive=True)
        assert cert.prediction == ABSTAIN and math.isnan(cert.sigma) and cert.radius == 0.0
        assert cert.samples < 2 * n0 + n / 2


def test_adaptive_certificates_do_not_depend_on_batch_size() -> None:
    dual = scenario(*ESTIMATOR_BINDS)
    for i in range(3):
        reference = dual.certify(X4, 30, 300, 0.05, 0.05, 300, sample_generator(17, "batch", i), adaptive=True)
        for batch_size in (1, 7, 64):
            assert dual.certify(X4, 30, 300, 0.05, 0.05, batch_size, sample_generator(17, "batch", i),
                                adaptive=True) == reference


def test_adaptive_stage_counts_are_the_fixed_stream_prefix() -> None:
    """The votes of a stage are the first ones of the fixed-n stream of the same generator."""
    dual = scenario(*CLASSIFIER_BINDS)
    cert = dual.certify(X4, 30, 400, 0.05, 0.05, 64, sample_generator(18, "prefix", 0), adaptive=True)
    estimator_noise, _ = split_generator(sample_generator(18, "prefix", 0), CPU)
    guess, _ = select_class(dual.estimator, X4, 30, 64, estimator_noise)
    assert dual.sigmas[guess] == cert.sigma


# ------------------------------------------------------------------ adaptive labels


def test_adaptive_label_is_within_the_precision_of_fixed_n() -> None:
    """Half-spaces with radii spread over [0.05, 0.6] at σ = 0.5: the adaptive label's radius is within
    the precision of the fixed-n label's for nearly all, with fewer draws."""
    precision, n0, n, alpha = 0.1, 32, 1000, 0.001
    rng = np.random.default_rng(5)
    close, drawn = 0, []
    for i in range(30):
        x = torch.tensor(rng.normal(size=3))
        smooth = Smooth(half_space(x, float(rng.uniform(0.05, 0.6)), seed=100 + i), 2, 0.5)
        fixed = smooth.certify_bound(x, n0, n, alpha, 500, sample_generator(19, "label", i))
        label = adaptive_label(smooth, x, n0, n, alpha, precision, 500, sample_generator(19, "label", i))
        assert label.guess == fixed.guess
        close += abs(label.radius - fixed.radius) <= precision
        drawn.append(label.trials)
    assert close >= 27 and np.mean(drawn) < n
    with pytest.raises(ValueError, match="precision"):
        adaptive_label(smooth, x, n0, n, alpha, 0.0, 500)
