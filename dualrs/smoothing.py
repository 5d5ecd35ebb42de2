"""Randomized smoothing (Cohen, Rosenfeld & Kolter 2019, Algorithms CERTIFY and PREDICT).

The smoothed classifier is g(x) = argmax_c P[f(x + δ) = c] with δ ~ N(0, σ²I). If the class A
has probability at least p_A_lower > ½ under noise, g is constant within the ℓ2 ball of radius
R = σ·Φ⁻¹(p_A_lower) around x (Cohen et al., Theorem 1).

Sampling runs on the base classifier's device in its dtype: noise is drawn there, votes are
counted there, and the host reads the counts once per certificate. The base classifier runs in
eval mode (a BatchNorm in train mode would make each vote depend on the rest of its batch and
update the running statistics) under ``torch.inference_mode``; afterwards every submodule is
back in the mode the caller left it in. A logit that is NaN or ±inf stops sampling with
:class:`~dualrs.validation.NonFiniteError` (``argmax`` would count NaN as the largest score).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import betaincinv, ndtri  # scipy.stats (1 s to import) only where PREDICT needs it

from dualrs.validation import (NonFiniteError, check_count, check_input, check_level, check_logits, check_settings,
                                warn_if_never_certifies)

ABSTAIN = -1
NOISE_BLOCK = 128  # draws per call to the generator (see GaussianStream)


def clopper_pearson_lower(successes: np.ndarray, trials: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """One-sided (1 − α) Clopper–Pearson lower bounds, elementwise: the α quantile of Beta(k, n − k + 1).

    P[bound > p] ≤ α for K ~ Binomial(n, p) (Clopper & Pearson 1934); the bound is 0 when k = 0.
    """
    k, n = np.asarray(successes), np.asarray(trials)
    return np.where(k > 0, betaincinv(np.maximum(k, 1), n - k + 1, alpha), 0.0)


def lower_confidence_bound(successes: int, trials: int, alpha: float) -> float:
    """One-sided (1 − α) Clopper–Pearson lower bound on a binomial proportion (scalar form)."""
    return float(clopper_pearson_lower(int(successes), int(trials), alpha))


check_alpha = check_level  # the name sequential.py imports


@dataclass(frozen=True)
class CertifyBound:
    """The guess A, its count among the n certification samples, and p_A_lower at level α."""

    guess: int
    count: int
    p_lower: float
    sigma: float

    @property
    def prediction(self) -> int:
        """ĉ_A if p_A_lower > ½ (then, w.p. ≥ 1 − α, p_A > ½ > p_B for all B ≠ A: Cohen et al., Theorem 1), else ABSTAIN."""
        return self.guess if self.p_lower > 0.5 else ABSTAIN

    @property
    def radius(self) -> float:
        """σ·Φ⁻¹(p_A_lower) (Cohen et al., Theorem 1), 0 when abstaining."""
        return self.sigma * float(ndtri(self.p_lower)) if self.p_lower > 0.5 else 0.0


class Smooth:
    """A smoothed classifier g around ``base_classifier`` f at noise level ``sigma``.

    ``x`` is one input without batch dimension, in the base classifier's input space; the base
    classifier receives x + δ (a denoiser, where configured, sits inside it). On a GPU,
    ``autocast`` (e.g. ``torch.bfloat16``) runs f under mixed precision and ``channels_last``
    hands it NHWC batches (convert the model with ``.to(memory_format=torch.channels_last)``);
    both are off by default, and the certificate is then that of f as run this way. ``name`` names
    the base classifier in errors (e.g. "the variance estimator").
    """

    def __init__(
        self, base_classifier: torch.nn.Module, num_classes: int, sigma: float, *,
        autocast: torch.dtype | None = None, channels_last: bool = False, name: str = "the base classifier",
    ):
        check_settings(sigma=sigma)
        check_count(num_classes, "num_classes")
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes!r}")
        self.base_classifier = base_classifier
        self.num_classes = int(num_classes)
        self.sigma = float(sigma)
        self.name = name
        self.autocast = autocast
        self.channels_last = channels_last

    def certify(
        self, x: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int,
        generator: torch.Generator | None = None,
    ) -> tuple[int, float]:
        """CERTIFY of Cohen et al. (2019), Sec. 3.2::

            counts0 ← SAMPLEUNDERNOISE(f, x, n0, σ);  ĉ_A ← top index in counts0
            counts ← SAMPLEUNDERNOISE(f, x, n, σ)
            p_A ← LOWERCONFBOUND(counts[ĉ_A], n, 1 − α)   (one-sided Clopper–Pearson)
            if p_A > ½: return (ĉ_A, σ·Φ⁻¹(p_A))  else: return ABSTAIN = (-1, 0.0)

        Guarantee (Cohen et al., Theorem 1 and Prop. 2): with probability at least 1 − α over the
        noise, a returned (ĉ_A, R) has g(x + ε) = ĉ_A for every ‖ε‖₂ < R; the selection draws are
        not reused for the estimate, so ĉ_A is independent of ``counts``.
        """
        bound = self.certify_bound(x, n0, n, alpha, batch_size, generator)
        return bound.prediction, bound.radius

    def certify_bound(
        self, x: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int,
        generator: torch.Generator | None = None,
    ) -> CertifyBound:
        """:meth:`certify` with its evidence: the guess, its count among n and p_A_lower."""
        check_input(x)
        check_settings(n0=n0, n=n, alpha=alpha, batch_size=batch_size)
        warn_if_never_certifies(n, alpha)
        selection = self.vote(x, self.noise(x, n0, generator), n0, batch_size)
        estimation = self.vote(x, self.noise(x, n, generator), n, batch_size)
        guess = selection.argmax()
        guess, count = torch.stack([guess, estimation[guess]]).tolist()
        return CertifyBound(guess, count, lower_confidence_bound(count, n, alpha), self.sigma)

    def predict(
        self, x: torch.Tensor, n: int, alpha: float, batch_size: int,
        generator: torch.Generator | None = None,
    ) -> int:
        """PREDICT: the top class if a two-sided binomial test of the top two counts rejects p = ½ at α."""
        check_input(x)
        check_settings(n=n, alpha=alpha, batch_size=batch_size)
        warn_if_never_certifies(n, alpha, "binomial")
        counts = self.sample_counts(x, n, batch_size, generator)
        top2 = np.argsort(counts)[::-1][:2]
        count1, count2 = int(counts[top2[0]]), int(counts[top2[1]])
        from scipy.stats import binomtest

        if binomtest(count1, count1 + count2, p=0.5).pvalue > alpha:
            return ABSTAIN
        return int(top2[0])

    def sample_counts(
        self, x: torch.Tensor, num: int, batch_size: int, generator: torch.Generator | None = None,
    ) -> np.ndarray:
        """Class counts of f(x + δ) over ``num`` Gaussian draws, in batches on the model's device."""
        return self.vote(x, self.noise(x, num, generator), num, batch_size).cpu().numpy()

    def noise(self, x: torch.Tensor, total: int, generator: torch.Generator | None) -> GaussianStream:
        """A stream of ``total`` standard normal draws shaped like x, on the model's device in its dtype."""
        return GaussianStream(x.shape, total, generator, device_of(self.base_classifier),
                              dtype_of(self.base_classifier, x.dtype))

    @torch.inference_mode()
    def vote(self, x: torch.Tensor, noise: GaussianStream, num: int, batch_size: int) -> torch.Tensor:
        """Class counts of f(x + σ·z) over the next ``num`` draws z of ``noise``, left on its device.

        One batch buffer is reused: each batch is filled with draws, scaled and shifted in place. The
        base classifier runs in eval mode (:func:`evaluation`); its logits must have shape
        (batch, num_classes) and be finite, else the error names the base classifier.
        """
        x = x.to(device=noise.device, dtype=noise.dtype)
        counts = torch.zeros(self.num_classes, dtype=torch.long, device=noise.device)
        non_finite = torch.zeros((), dtype=torch.long, device=noise.device)
        buffer = torch.empty((min(batch_size, num), *x.shape), device=noise.device, dtype=noise.dtype)
        ones = torch.ones(len(buffer), dtype=torch.long, device=noise.device)
        with evaluation(self.base_classifier):
            for start in range(0, num, batch_size):
                batch = noise.fill(buffer[: min(batch_size, num - start)]).mul_(self.sigma).add_(x)
                if self.channels_last and batch.dim() == 4:
                    batch = batch.contiguous(memory_format=torch.channels_last)
                with torch.autocast(noise.device.type, dtype=self.autocast, enabled=self.autocast is not None):
                    logits = self.base_classifier(batch)
                check_logits(logits, len(batch), self.num_classes, self.name)
                non_finite += (~torch.isfinite(logits)).any(dim=1).sum()
                predictions = logits.argmax(dim=1)
                counts.index_add_(0, predictions, ones[: len(predictions)])
        if non_finite:
            raise NonFiniteError(f"{self.name} returned non-finite logits (NaN or inf) for {int(non_finite)} of {num} "
                                 f"noisy copies of x at sigma={self.sigma:g}; no certificate can rest on them")
        return counts


@contextmanager
def evaluation(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``module`` in eval mode for the duration; then each submodule's own training flag is restored."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for submodule, training in modes:
            submodule.training = training


class GaussianStream:
    """``total`` standard normal draws of ``shape`` from ``generator``, read in any portions.

    The draws are generated in blocks of ``NOISE_BLOCK`` (the last one shorter) whatever the
    portions read, so draw j is the same for every batch size and wherever sampling pauses: a
    seeded generator gives the same certificate for every batch size.
    """

    def __init__(
        self, shape: torch.Size, total: int, generator: torch.Generator | None, device: torch.device,
        dtype: torch.dtype,
    ):
        self.shape, self.ungenerated = tuple(shape), int(total)
        self.generator, self.device, self.dtype = generator, torch.device(device), dtype
        self.leftover = torch.empty((0, *self.shape), device=self.device, dtype=dtype)

    def fill(self, out: torch.Tensor) -> torch.Tensor:
        """Write the next ``len(out)`` draws into the contiguous tensor ``out`` and return it."""
        if len(out) > len(self.leftover) + self.ungenerated:
            raise ValueError(f"{len(out)} draws requested, {len(self.leftover) + self.ungenerated} left")
        filled = min(len(out), len(self.leftover))
        out[:filled].copy_(self.leftover[:filled])
        self.leftover = self.leftover[filled:]
        while filled < len(out):
            block = min(NOISE_BLOCK, self.ungenerated)
            self.ungenerated -= block
            if filled + block <= len(out):
                out[filled:filled + block].normal_(generator=self.generator)  # = torch.randn of the block
            else:
                fresh = torch.randn((block, *self.shape), generator=self.generator, device=self.device,
                                    dtype=self.dtype)
                out[filled:].copy_(fresh[: len(out) - filled])
                self.leftover = fresh[len(out) - filled:]
                block = len(out) - filled
            filled += block
        return out


def device_of(module: torch.nn.Module) -> torch.device:
    """Where the module's parameters (or, without any, its buffers) live; CPU for a stateless module."""
    tensor = next(_tensors(module), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def dtype_of(module: torch.nn.Module, default: torch.dtype) -> torch.dtype:
    """The dtype of the module's first floating-point parameter or buffer, else ``default``."""
    return next((t.dtype for t in _tensors(module) if t.is_floating_point()), default)


def _tensors(module: torch.nn.Module) -> Iterator[torch.Tensor]:
    yield from module.parameters()
    yield from module.buffers()
