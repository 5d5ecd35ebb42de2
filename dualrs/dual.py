"""Dual randomized smoothing (Sun, Mao & Vechev 2025, Theorems 4.1 and 4.2).

A variance estimator e maps an input to one of the candidate noise levels Σ. Smoothing e itself
with RS at σ_e certifies that its choice σ̂ = σ(x) stays constant within R_σ (Theorem 4.1). The
classifier for σ̂, smoothed at σ̂, certifies its prediction within R_c. Together the prediction is
constant within R = min(R_σ, R_c), with probability at least 1 − α − β by the union bound
(Theorem 4.2). If the estimator abstains, the dual classifier abstains.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from dualrs.sequential import AdaptiveStage, select_class, settle
from dualrs.smoothing import ABSTAIN, Smooth, device_of
from dualrs.validation import check_input, check_settings, warn_if_never_certifies


@dataclass(frozen=True)
class DualCertificate:
    """Outcome of :meth:`DualSmooth.certify`; ``sigma`` is NaN when the estimator abstains.

    ``samples`` counts the forward passes spent, over the estimator and the classifier.
    """

    prediction: int
    sigma: float
    radius: float
    r_sigma: float
    r_c: float
    samples: int


class DualSmooth:
    """Per-input noise level chosen by a smoothed estimator, then certified with that level.

    ``classifiers`` maps each candidate σ to its base classifier; the estimator's output class k
    stands for the k-th smallest σ. ``autocast`` and ``channels_last`` are passed to every
    :class:`Smooth`.
    """

    def __init__(
        self, estimator: torch.nn.Module, classifiers: Mapping[float, torch.nn.Module],
        sigma_e: float, num_classes: int, *, autocast: torch.dtype | None = None, channels_last: bool = False,
    ):
        check_settings(sigma_e=sigma_e, sigmas=classifiers)
        if len(classifiers) < 2:
            raise ValueError(f"DualSmooth needs at least two candidate sigmas, got {sorted(classifiers)}")
        options = {"autocast": autocast, "channels_last": channels_last}
        self.sigmas = sorted(float(s) for s in classifiers)
        by_sigma = {float(s): model for s, model in classifiers.items()}
        self.estimator = Smooth(estimator, len(self.sigmas), sigma_e, **options,
                                name=f"the variance estimator over sigmas {self.sigmas}")
        self.classifiers = {s: Smooth(by_sigma[s], num_classes, s, **options, name=f"the classifier for sigma={s:g}")
                            for s in self.sigmas}

    def estimate(
        self, x: torch.Tensor, n0: int, n: int, beta: float, batch_size: int,
        generator: torch.Generator | None = None,
    ) -> tuple[float, float]:
        """Certified σ(x) and its radius R_σ (Theorem 4.1); (NaN, 0) when the estimator abstains."""
        choice, r_sigma = self.estimator.certify(x, n0, n, beta, batch_size, generator)
        return (math.nan, 0.0) if choice == ABSTAIN else (self.sigmas[choice], r_sigma)

    def certify(
        self, x: torch.Tensor, n0: int, n: int, alpha: float, beta: float, batch_size: int,
        generator: torch.Generator | None = None, adaptive: bool = False, radii: Sequence[float] | None = None,
    ) -> DualCertificate:
        """Certify x with radius min(R_σ, R_c), valid with probability ≥ 1 − α − β (Theorem 4.2).

        The estimator and the classifier draw their noise from two generators seeded from
        ``generator`` (:func:`split_generator`). ``adaptive`` samples at most n per stage and stops
        once the radius is settled on the grid ``radii`` (default: multiples of 0.25), with the same
        guarantee (:mod:`dualrs.sequential`).
        """
        check_input(x)
        check_settings(n0=n0, n=n, alpha=alpha, beta=beta, batch_size=batch_size)
        warn_if_never_certifies(n, beta), warn_if_never_certifies(n, alpha)
        estimator_noise, classifier_noise = split_generator(generator, device_of(self.estimator.base_classifier))
        if adaptive:
            return self._certify_adaptive(x, n0, n, alpha, beta, batch_size, estimator_noise, classifier_noise, radii)
        sigma, r_sigma = self.estimate(x, n0, n, beta, batch_size, estimator_noise)
        if math.isnan(sigma):
            return DualCertificate(ABSTAIN, sigma, 0.0, 0.0, 0.0, n0 + n)
        prediction, r_c = self.classifiers[sigma].certify(x, n0, n, alpha, batch_size, classifier_noise)
        radius = min(r_sigma, r_c) if prediction != ABSTAIN else 0.0
        return DualCertificate(prediction, sigma, radius, r_sigma, r_c, 2 * (n0 + n))

    def _certify_adaptive(
        self, x: torch.Tensor, n0: int, n: int, alpha: float, beta: float, batch_size: int,
        estimator_noise: torch.Generator, classifier_noise: torch.Generator, radii: Sequence[float] | None,
    ) -> DualCertificate:
        """Dual certification with anytime-valid bounds (:mod:`dualrs.sequential`), valid w.p. ≥ 1 − α − β.

        Each n0 selection stops once its guess is that of all n0 draws. The estimator then bounds
        p_σ̂ at level β and the classifier p_A at level α, each with a confidence sequence at 10% of
        its level and, at its n-th draw, the Clopper–Pearson bound at the other 90%: a bound that
        holds at every look (union bound with Theorem 4.2). Sampling stops once min(R_σ, R_c) is
        settled on the radius grid: the stage with the smaller certified grid step looks next, and
        a stage stops when no later look can plausibly raise the minimum's step (e.g. the
        estimator's upper bound below ½: early abstention). ``r_sigma`` and ``r_c`` are each
        stage's best bound where it stopped; ``sigma`` is NaN when the estimator's stayed below ½.
        """
        guess, estimator_selection = select_class(self.estimator, x, n0, batch_size, estimator_noise)
        sigma = self.sigmas[guess]
        classifier = self.classifiers[sigma]
        label, classifier_selection = select_class(classifier, x, n0, batch_size, classifier_noise)
        estimate = AdaptiveStage(self.estimator, x, guess, n, beta, radii, batch_size, estimator_noise)
        bound = AdaptiveStage(classifier, x, label, n, alpha, radii, batch_size, classifier_noise)
        settle([estimate, bound])
        samples = estimator_selection + classifier_selection + estimate.drawn + bound.drawn
        estimated, certified = estimate.result(), bound.result()
        if estimated.prediction == ABSTAIN:
            return DualCertificate(ABSTAIN, math.nan, 0.0, 0.0, 0.0, samples)
        radius = min(estimated.radius, certified.radius) if certified.prediction != ABSTAIN else 0.0
        return DualCertificate(certified.prediction, sigma, radius, estimated.radius, certified.radius, samples)


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
