"""Routed randomized smoothing: a smoothed selector picks a candidate, which certifies (Sun, Mao & Vechev
2025, Theorems 4.1 and 4.2).

A selector e, smoothed at σ_e, maps an input to one of K candidates, each a base classifier f_k smoothed
at its own σ_k. Smoothing e certifies that its choice k̂ = k(x) stays constant within R_σ at level β
(Cohen et al., Theorem 1 applied to e; Theorem 4.1); candidate k̂ certifies its prediction within R_c at
level α. The routed prediction is then constant within R = min(R_σ, R_c) with probability at least
1 − α − β by the union bound (Theorem 4.2). If the selector abstains, the routed classifier abstains.
Dual RS (:class:`dualrs.dual.DualSmooth`) has one candidate per σ; the router
(:class:`dualrs.router.Router`) one per expert RS model.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from dualrs.sequential import AdaptiveStage, select_class, settle
from dualrs.smoothing import ABSTAIN, Smooth, device_of
from dualrs.validation import check_input, check_settings, warn_if_never_certifies


@dataclass(frozen=True)
class RoutedCertificate:
    """Outcome of :meth:`RoutedSmooth.certify_routed`; ``choice`` is the candidate's index, ABSTAIN when the
    selector abstains. ``samples`` counts the forward passes spent, over the selector and the candidate."""

    prediction: int
    choice: int
    radius: float
    r_sigma: float
    r_c: float
    samples: int


class RoutedSmooth:
    """The selector's output class k stands for ``candidates[k]``.

    ``split_noise``: the selector and the candidate draw their noise from two generators seeded from the
    certificate's generator (:func:`split_generator`), so where one stage stops sampling does not move
    the other's draws; otherwise both draw in turn from the certificate's generator itself.
    """

    def __init__(self, selector: Smooth, candidates: Sequence[Smooth], *, split_noise: bool):
        self.selector = selector
        self.candidates = list(candidates)
        self.split_noise = split_noise

    def select(
        self, x: torch.Tensor, n0: int, n: int, beta: float, batch_size: int,
        generator: torch.Generator | None = None,
    ) -> tuple[int, float]:
        """The certified choice k(x) and its radius R_σ at level β (Theorem 4.1); (ABSTAIN, 0) on abstention."""
        return self.selector.certify(x, n0, n, beta, batch_size, generator)

    def certify_routed(
        self, x: torch.Tensor, n0: int, n: int, alpha: float, beta: float, batch_size: int,
        generator: torch.Generator | None = None, adaptive: bool = False, radii: Sequence[float] | None = None,
    ) -> RoutedCertificate:
        """Certify x with radius min(R_σ, R_c), valid with probability ≥ 1 − α − β (Theorem 4.2).

        ``adaptive`` samples at most n per stage and stops once the radius is settled on the grid
        ``radii`` (default: multiples of 0.25), with the same guarantee (:mod:`dualrs.sequential`).
        """
        check_input(x)
        check_settings(n0=n0, n=n, alpha=alpha, beta=beta, batch_size=batch_size)
        warn_if_never_certifies(n, beta), warn_if_never_certifies(n, alpha)
        if self.split_noise:
            selector_noise, candidate_noise = split_generator(generator, device_of(self.selector.base_classifier))
        else:
            selector_noise = candidate_noise = generator
        if adaptive:
            return self._certify_adaptive(x, n0, n, alpha, beta, batch_size, selector_noise, candidate_noise, radii)
        choice, r_sigma = self.select(x, n0, n, beta, batch_size, selector_noise)
        if choice == ABSTAIN:
            return RoutedCertificate(ABSTAIN, ABSTAIN, 0.0, 0.0, 0.0, n0 + n)
        prediction, r_c = self.candidates[choice].certify(x, n0, n, alpha, batch_size, candidate_noise)
        radius = min(r_sigma, r_c) if prediction != ABSTAIN else 0.0
        return RoutedCertificate(prediction, choice, radius, r_sigma, r_c, 2 * (n0 + n))

    def _certify_adaptive(
        self, x: torch.Tensor, n0: int, n: int, alpha: float, beta: float, batch_size: int,
        selector_noise: torch.Generator | None, candidate_noise: torch.Generator | None,
        radii: Sequence[float] | None,
    ) -> RoutedCertificate:
        """Routed certification with anytime-valid bounds (:mod:`dualrs.sequential`), valid w.p. ≥ 1 − α − β.

        Each n0 selection stops once its guess is that of all n0 draws. The selector then bounds p_k̂ at
        level β and the candidate p_A at level α, each with a confidence sequence at 10% of its level
        and, at its n-th draw, the Clopper–Pearson bound at the other 90%: a bound that holds at every
        look (union bound with Theorem 4.2). Sampling stops once min(R_σ, R_c) is settled on the radius
        grid: the stage with the smaller certified grid step looks next, and a stage stops when no later
        look can plausibly raise the minimum's step (e.g. the selector's upper bound below ½: early
        abstention). ``r_sigma`` and ``r_c`` are each stage's best bound where it stopped.
        """
        guess, selector_selection = select_class(self.selector, x, n0, batch_size, selector_noise)
        candidate = self.candidates[guess]
        label, candidate_selection = select_class(candidate, x, n0, batch_size, candidate_noise)
        selected = AdaptiveStage(self.selector, x, guess, n, beta, radii, batch_size, selector_noise)
        bound = AdaptiveStage(candidate, x, label, n, alpha, radii, batch_size, candidate_noise)
        settle([selected, bound])
        samples = selector_selection + candidate_selection + selected.drawn + bound.drawn
        chosen, certified = selected.result(), bound.result()
        if chosen.prediction == ABSTAIN:
            return RoutedCertificate(ABSTAIN, ABSTAIN, 0.0, 0.0, 0.0, samples)
        radius = min(chosen.radius, certified.radius) if certified.prediction != ABSTAIN else 0.0
        return RoutedCertificate(certified.prediction, guess, radius, chosen.radius, certified.radius, samples)


def split_generator(
    generator: torch.Generator | None, device: torch.device,
) -> tuple[torch.Generator, torch.Generator]:
    """Two generators seeded by two draws from ``generator`` (the global RNG when None), on its device
    (else ``device``): where one stage stops sampling then does not move the other's draws."""
    source = generator.device if generator is not None else torch.device("cpu")
    seeds = torch.randint(0, 2**63 - 1, (2,), generator=generator, device=source).tolist()
    target = generator.device if generator is not None else device
    first, second = (torch.Generator(target).manual_seed(seed) for seed in seeds)
    return first, second
