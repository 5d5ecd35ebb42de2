"""Dual randomized smoothing (Sun, Mao & Vechev 2025, Theorems 4.1 and 4.2).

A variance estimator e maps an input to one of the candidate noise levels Σ. Smoothing e itself
with RS at σ_e certifies that its choice σ̂ = σ(x) stays constant within R_σ (Theorem 4.1). The
classifier for σ̂, smoothed at σ̂, certifies its prediction within R_c. Together the prediction is
constant within R = min(R_σ, R_c), with probability at least 1 − α − β by the union bound
(Theorem 4.2). If the estimator abstains, the dual classifier abstains.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from dualrs.sequential import Looks, SequentialStage, select_class, settle_minimum
from dualrs.smoothing import ABSTAIN, Smooth, check_alpha, check_count, device_of
from dualrs.validation import check_input


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
        if len(classifiers) < 2:
            raise ValueError(f"DualSmooth needs at least two candidate sigmas, got {sorted(classifiers)}")
        options = {"autocast": autocast, "channels_last": channels_last}
        self.sigmas = sorted(float(s) for s in classifiers)
        self.estimator = Smooth(estimator, len(self.sigmas), sigma_e, **options)
        self.classifiers = {s: Smooth(classifiers[s], num_classes, s, **options) for s in self.sigmas}

    def estimate(
        self, x: torch.Tensor, n0: int, n: int, beta: float, batch_size: int,
        generator: torch.Generator | None = None,
    ) -> tuple[float, float]:
        """Certified σ(x) and its radius R_σ (Theorem 4.1); (NaN, 0) when the estimator abstains."""
        choice, r_sigma = self.estimator.certify(x, n0, n, beta, batch_size, generator)
        return (math.nan, 0.0) if choice == ABSTAIN else (self.sigmas[choice], r_sigma)

    def certify(
        self, x: torch.Tensor, n0: int, n: int, alpha: float, beta: float, batch_size: int,
        generator: torch.Generator | None = None, adaptive: bool = False,
    ) -> DualCertificate:
        """Certify x with radius min(R_σ, R_c), valid with probability ≥ 1 − α − β (Theorem 4.2).

        The estimator and the classifier draw their noise from two generators seeded from
        ``generator`` (:func:`split_generator`). ``adaptive`` bounds both at looks n/8, n/4, n/2, n
        with alpha spending and stops each once the outcome is settled; the prediction and radius
        are those of taking every look (:mod:`dualrs.sequential`), with the same guarantee.
        """
        check_input(x)
        check_count(n0, "n0"), check_count(n, "n"), check_count(batch_size, "batch_size")
        check_alpha(alpha, "alpha"), check_alpha(beta, "beta")
        estimator_noise, classifier_noise = split_generator(generator, device_of(self.estimator.base_classifier))
        if adaptive:
            return self._certify_adaptive(x, n0, n, alpha, beta, batch_size, estimator_noise, classifier_noise)
        sigma, r_sigma = self.estimate(x, n0, n, beta, batch_size, estimator_noise)
        if math.isnan(sigma):
            return DualCertificate(ABSTAIN, sigma, 0.0, 0.0, 0.0, n0 + n)
        prediction, r_c = self.classifiers[sigma].certify(x, n0, n, alpha, batch_size, classifier_noise)
        radius = min(r_sigma, r_c) if prediction != ABSTAIN else 0.0
        return DualCertificate(prediction, sigma, radius, r_sigma, r_c, 2 * (n0 + n))

    def _certify_adaptive(
        self, x: torch.Tensor, n0: int, n: int, alpha: float, beta: float, batch_size: int,
        estimator_noise: torch.Generator, classifier_noise: torch.Generator,
    ) -> DualCertificate:
        """Dual certification with sequential bounds (:mod:`dualrs.sequential`), valid w.p. ≥ 1 − α − β.

        After both n0 selections, the estimator bounds p_σ̂ at looks n/8, n/4, n/2, n spending β and
        the classifier p_A at the same looks spending α (the union bound of Theorem 4.2 covers every
        look of both). The stage with the smaller radius so far looks next; a stage stops once its
        radius can no longer be raised or exceeds the other's reach (the largest radius its
        remaining looks could give), e.g. R_σ above every R_c the classifier can still certify, or
        once its abstention is certain. The prediction and min(R_σ, R_c) are those of taking every
        look; ``r_sigma`` and ``r_c`` are the bounds where each stage stopped (``sigma`` is NaN
        when the estimator's stayed below ½). Against fixed-n CERTIFY, the last look spends 90% of
        each level.
        """
        guess = select_class(self.estimator, x, n0, batch_size, estimator_noise)
        sigma = self.sigmas[guess]
        classifier = self.classifiers[sigma]
        label = select_class(classifier, x, n0, batch_size, classifier_noise)
        estimate = SequentialStage(self.estimator, x, guess, Looks.spending(n, beta), batch_size, estimator_noise)
        bound = SequentialStage(classifier, x, label, Looks.spending(n, alpha), batch_size, classifier_noise)
        settle_minimum([estimate, bound])
        samples = 2 * n0 + estimate.drawn + bound.drawn
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
