"""Randomized smoothing (Cohen, Rosenfeld & Kolter 2019, Algorithms CERTIFY and PREDICT).

The smoothed classifier is g(x) = argmax_c P[f(x + δ) = c] with δ ~ N(0, σ²I). If the class A
has probability at least p_A_lower ≥ ½ under noise, g is constant within the ℓ2 ball of radius
R = σ·Φ⁻¹(p_A_lower) around x (Cohen et al., Theorem 1).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import binomtest, norm

ABSTAIN = -1
NOISE_BLOCK = 128  # draws per call to the generator (see gaussian_batches)


def lower_confidence_bound(successes: int, trials: int, alpha: float) -> float:
    """One-sided (1 − α) Clopper–Pearson lower bound on a binomial proportion.

    The two-sided exact interval at confidence 1 − 2α has the one-sided α bound as its lower end.
    """
    return float(binomtest(int(successes), int(trials)).proportion_ci(1 - 2 * alpha, "exact").low)


def check_alpha(alpha: float, name: str = "alpha") -> None:
    if not 0 < alpha < 0.5:
        raise ValueError(f"{name} must lie in (0, 0.5), got {alpha!r}")


def check_count(n: int, name: str) -> None:
    if int(n) != n or n < 1:
        raise ValueError(f"{name} must be a positive integer, got {n!r}")


@dataclass(frozen=True)
class CertifyBound:
    """The guess A, its count among the n certification samples, and p_A_lower at level α."""

    guess: int
    count: int
    p_lower: float
    sigma: float

    @property
    def prediction(self) -> int:
        return self.guess if self.p_lower >= 0.5 else ABSTAIN

    @property
    def radius(self) -> float:
        """σ·Φ⁻¹(p_A_lower) (Cohen et al., Theorem 1), 0 when abstaining."""
        return self.sigma * float(norm.ppf(self.p_lower)) if self.p_lower >= 0.5 else 0.0


class Smooth:
    """A smoothed classifier g around ``base_classifier`` f at noise level ``sigma``.

    ``x`` is one input without batch dimension, in the base classifier's input space; the base
    classifier receives x + δ (a denoiser, where configured, sits inside it).
    """

    def __init__(self, base_classifier: torch.nn.Module, num_classes: int, sigma: float):
        if not sigma > 0:
            raise ValueError(f"sigma must be positive, got {sigma!r}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes!r}")
        self.base_classifier = base_classifier
        self.num_classes = num_classes
        self.sigma = float(sigma)

    def certify(
        self, x: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int,
        generator: torch.Generator | None = None,
    ) -> tuple[int, float]:
        """CERTIFY: guess A from n0 samples, lower-bound p_A from n fresh ones at level α.

        Returns (A, σ·Φ⁻¹(p_A_lower)), or (-1, 0.0) when p_A_lower < ½.
        """
        bound = self.certify_bound(x, n0, n, alpha, batch_size, generator)
        return bound.prediction, bound.radius

    def certify_bound(
        self, x: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int,
        generator: torch.Generator | None = None,
    ) -> CertifyBound:
        """:meth:`certify` with its evidence: the guess, its count among n and p_A_lower."""
        check_count(n0, "n0"), check_count(n, "n"), check_count(batch_size, "batch_size")
        check_alpha(alpha)
        guess = int(self.sample_counts(x, n0, batch_size, generator).argmax())
        count = int(self.sample_counts(x, n, batch_size, generator)[guess])
        return CertifyBound(guess, count, lower_confidence_bound(count, n, alpha), self.sigma)

    def predict(
        self, x: torch.Tensor, n: int, alpha: float, batch_size: int,
        generator: torch.Generator | None = None,
    ) -> int:
        """PREDICT: the top class if a two-sided binomial test of the top two counts rejects p = ½ at α."""
        check_count(n, "n"), check_count(batch_size, "batch_size")
        check_alpha(alpha)
        counts = self.sample_counts(x, n, batch_size, generator)
        top2 = np.argsort(counts)[::-1][:2]
        count1, count2 = int(counts[top2[0]]), int(counts[top2[1]])
        if binomtest(count1, count1 + count2, p=0.5).pvalue > alpha:
            return ABSTAIN
        return int(top2[0])

    @torch.inference_mode()
    def sample_counts(
        self, x: torch.Tensor, num: int, batch_size: int, generator: torch.Generator | None = None,
    ) -> np.ndarray:
        """Class counts of f(x + δ) over ``num`` Gaussian draws, in batches on the model's device."""
        device = device_of(self.base_classifier)
        x = x.to(device)
        counts = torch.zeros(self.num_classes, dtype=torch.long, device=device)
        for noise in gaussian_batches(x.shape, num, batch_size, generator, device, x.dtype):
            predictions = self.base_classifier(x + self.sigma * noise).argmax(dim=1)
            counts += torch.bincount(predictions, minlength=self.num_classes)
        return counts.cpu().numpy()


def gaussian_batches(
    shape: torch.Size, num: int, batch_size: int, generator: torch.Generator | None,
    device: torch.device, dtype: torch.dtype,
) -> Iterator[torch.Tensor]:
    """``num`` standard normal draws of ``shape`` in batches of ``batch_size``.

    The draws are generated in blocks of ``NOISE_BLOCK`` whatever the batch size, so a seeded
    generator yields the same noise, and the same certificate, for every batch size.
    """
    pending: list[torch.Tensor] = []
    buffered, remaining = 0, num
    while remaining or buffered:
        while buffered < batch_size and remaining:
            block = min(NOISE_BLOCK, remaining)
            pending.append(torch.randn((block, *shape), generator=generator, device=device, dtype=dtype))
            buffered, remaining = buffered + block, remaining - block
        noise = torch.cat(pending) if len(pending) > 1 else pending[0]
        take = min(batch_size, buffered)
        yield noise[:take]
        pending = [noise[take:]] if buffered > take else []
        buffered -= take


def device_of(module: torch.nn.Module) -> torch.device:
    """Where the module's parameters live (CPU for a parameter-free module)."""
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")
