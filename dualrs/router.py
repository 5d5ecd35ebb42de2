"""Routing among expert smoothed classifiers (Sun et al. 2025, Sec. 4.3, the routing view of dual RS):
routed smoothing whose candidates are expert RS models.

The experts are independent RS models, each a base classifier f_k smoothed at its own σ_k (different
noise levels and/or architectures, e.g. noise-trained and denoised experts). A router e, smoothed at
σ_e, picks expert k(x) and is certified constant within R_e (Cohen et al., Theorem 1 applied to e).
Expert k(x) then certifies its prediction within R_k at σ_k. As in Theorem 4.2 the routed prediction
is constant within min(R_e, R_k) with probability ≥ 1 − α − β (:mod:`dualrs.routed`). Dual RS is the
special case of one expert per candidate σ.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from dualrs.routed import RoutedSmooth
from dualrs.smoothing import ABSTAIN, Smooth
from dualrs.validation import check_settings


@dataclass(frozen=True)
class Expert:
    """A base classifier and the noise level it is smoothed with."""

    name: str
    sigma: float
    model: torch.nn.Module


@dataclass(frozen=True)
class RouterCertificate:
    """Outcome of :meth:`Router.certify`; ``expert`` is empty and ``sigma`` NaN when the router abstains.

    ``samples`` counts the forward passes spent, over the router and the expert."""

    prediction: int
    expert: str
    sigma: float
    radius: float
    r_sigma: float
    r_c: float
    samples: int


class Router(RoutedSmooth):
    """The router's output class k stands for ``experts[k]``. The router and the chosen expert draw in
    turn from the certificate's generator. ``autocast`` and ``channels_last`` are passed to every
    :class:`Smooth`."""

    def __init__(
        self, router: torch.nn.Module, experts: Sequence[Expert], sigma_e: float, num_classes: int, *,
        autocast: torch.dtype | None = None, channels_last: bool = False,
    ):
        names = [e.name for e in experts]
        if len(experts) < 2:
            raise ValueError(f"a router needs at least two experts, got {names}")
        if len(set(names)) != len(names):
            raise ValueError(f"expert names must be unique, got {names}")
        check_settings(sigma_e=sigma_e, sigmas=[e.sigma for e in experts])
        options = {"autocast": autocast, "channels_last": channels_last}
        self.experts = list(experts)
        self.smoothed = [Smooth(e.model, num_classes, e.sigma, **options, name=f"expert {e.name!r}") for e in experts]
        router = Smooth(router, len(experts), sigma_e, **options, name=f"the router over experts {names}")
        super().__init__(router, self.smoothed, split_noise=False)
        self.router = self.selector

    def certify(
        self, x: torch.Tensor, n0: int, n: int, alpha: float, beta: float, batch_size: int,
        generator: torch.Generator | None = None, adaptive: bool = False, radii: Sequence[float] | None = None,
    ) -> RouterCertificate:
        """Route x (router bound at level β), certify it with the chosen expert (level α): radius
        min(R_e, R_k), valid with probability ≥ 1 − α − β (Theorem 4.2), in fixed-n or ``adaptive`` mode
        (:meth:`RoutedSmooth.certify_routed`)."""
        cert = self.certify_routed(x, n0, n, alpha, beta, batch_size, generator, adaptive, radii)
        if cert.choice == ABSTAIN:
            return RouterCertificate(ABSTAIN, "", math.nan, 0.0, 0.0, 0.0, cert.samples)
        expert = self.experts[cert.choice]
        return RouterCertificate(cert.prediction, expert.name, expert.sigma, cert.radius, cert.r_sigma, cert.r_c,
                                 cert.samples)
