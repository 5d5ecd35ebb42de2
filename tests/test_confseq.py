"""The confidence sequence of dualrs.sequential: its formula, and time-uniform coverage, exactly.

The exact crossing probability P[∃t ≤ T: L_t(a) > p] is computed by dynamic programming over the
count, dropping the paths that have crossed (L_t(a) > p iff k_t ≥ least_count(t, p, a)).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.optimize import brentq
from scipy.stats import binom

from dualrs.sequential import cs_lower, cs_upper, least_count, log_mixture
from dualrs.smoothing import clopper_pearson_lower


def exact_crossing(horizon: int, p: float, least: list[int]) -> float:
    """P[k_t ≥ least[t] for some t ≤ horizon] for i.i.d. Bernoulli(p) votes (least[t]: the crossing count at t)."""
    alive = np.array([1.0])
    for t in range(1, horizon + 1):
        alive = np.append(alive * (1 - p), 0.0) + np.append(0.0, alive * p)
        alive[least[t]:] = 0.0
    return float(1 - alive.sum())


@pytest.mark.parametrize(("k", "t", "m"), [(7, 10, 0.3), (95, 100, 0.9), (400, 1000, 0.35), (3, 3, 0.2)])
def test_log_mixture_is_the_integral_it_states(k: int, t: int, m: float) -> None:
    """M_t(m) = ∫_m^1 (θ/m)^k ((1−θ)/(1−m))^(t−k) dθ/(1−m), by quadrature."""
    def integrand(theta: float) -> float:
        return math.exp(k * math.log(theta / m) + (t - k) * math.log((1 - theta) / (1 - m)))

    value, _ = quad(integrand, m, 1, epsabs=0, epsrel=1e-11, points=[k / t] if m < k / t < 1 else None, limit=200)
    assert float(log_mixture(k, t, m)) == pytest.approx(math.log(value / (1 - m)), rel=1e-8, abs=1e-8)


def test_lower_bound_is_the_root_and_ordered() -> None:
    k, t, level = np.array([1, 10, 60, 99, 100]), 100, 0.01
    lower = cs_lower(k, t, level)
    assert np.all(np.diff(lower) > 0) and np.all(lower <= k / t)
    assert np.allclose(log_mixture(k, t, lower), math.log(1 / level), atol=1e-6)
    assert cs_lower(0, 50, level) == 0.0
    assert cs_lower(1, 1, 0.4) == pytest.approx(0.25)  # M_1(m) = (1 + m)/(2m)
    # All votes agree: M_t(m) = (1 − m^(t+1))/((t + 1) m^t (1 − m)).
    def closed_form(m: float) -> float:
        return math.log1p(-m**401) - math.log(401 * (1 - m)) - 400 * math.log(m) - math.log(1000)

    assert float(cs_lower(400, 400, 0.001)) == pytest.approx(brentq(closed_form, 0.9, 1 - 1e-9), abs=1e-12)
    # Wider than the fixed-n Clopper–Pearson bound at the same level (the price of looking at every t).
    assert np.all(lower < clopper_pearson_lower(k, t, level))
    assert float(cs_upper(40, 100, level)) == pytest.approx(1 - float(cs_lower(60, 100, level)))


def test_least_count_is_where_the_bound_reaches_tau() -> None:
    for t, tau, level in [(100, 0.6, 0.01), (396, 0.97725, 0.001), (50, 0.5, 0.1)]:
        k = least_count(t, tau, level)
        assert cs_lower(k, t, level) >= tau - 1e-12 and (k == 0 or cs_lower(k - 1, t, level) < tau)


@pytest.mark.parametrize("level", [0.1, 0.01])
def test_time_uniform_coverage_is_exact_and_at_most_the_level(level: float) -> None:
    """P[∃t ≤ 400: L_t > p] ≤ a over a grid of p, close to a somewhere; the pointwise Clopper–Pearson
    bound at every t (peeking) exceeds a."""
    horizon = 400
    grid = [0.3, 0.5, 0.7, 0.9, 0.97]
    crossing = [exact_crossing(horizon, p, [0] + [least_count(t, p, level) for t in range(1, horizon + 1)])
                for p in grid]
    assert max(crossing) <= level
    assert max(crossing) > 0.2 * level  # not trivially conservative
    peeking = [exact_crossing(horizon, p, [0] + [int(binom.isf(level, t, p)) + 1 for t in range(1, horizon + 1)])
               for p in grid]
    assert min(peeking) > 2 * level


def test_upper_sequence_covers_over_many_streams() -> None:
    """Monte Carlo: U_t(a) < p at some look for at most a of 2000 streams (binomial tolerance)."""
    rng = np.random.default_rng(0)
    p, level, looks = 0.8, 0.05, np.array([20, 40, 80, 160, 320])
    counts = np.cumsum(rng.random((2000, looks[-1])) < p, axis=1)[:, looks - 1]
    crossed = (cs_upper(counts, looks, level) < p).any(axis=1)
    assert crossed.sum() <= binom.ppf(0.999, 2000, level)
