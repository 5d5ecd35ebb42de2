"""Routing among expert smoothed classifiers (Sun et al. 2025, Sec. 4.3, the routing view of dual RS).

The experts are independent RS models, each a base classifier f_k smoothed at its own σ_k (different
noise levels and/or architectures, e.g. noise-trained and denoised experts). A router e, smoothed at
σ_e, picks expert k(x) and is certified constant within R_e (Cohen et al., Theorem 1 applied to e).
Expert k(x) then certifies its prediction within R_k at σ_k. As in Theorem 4.2 the routed prediction
is constant within min(R_e, R_k) with probability ≥ 1 − α − β. Dual RS is the special case of one
expert per candidate σ.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from dualrs.smoothing import ABSTAIN, Smooth
from dualrs.validation import check_input, check_settings, warn_if_never_certifies


@dataclass(frozen=True)
class Expert:
    """A base classifier and the noise level it is smoothed with."""

    name: str
    sigma: float
    model: torch.nn.Module


@dataclass(frozen=True)
class RouterCertificate:
    """Outcome of :meth:`Router.certify`; ``expert`` is empty and ``sigma`` NaN when the router abstains."""

    prediction: int
    expert: str
    sigma: float
    radius: float
    r_sigma: float
    r_c: float


class Router:
    """The router's output class k stands for ``experts[k]``."""

    def __init__(self, router: torch.nn.Module, experts: Sequence[Expert], sigma_e: float, num_classes: int):
        names = [e.name for e in experts]
        if len(experts) < 2:
            raise ValueError(f"a router needs at least two experts, got {names}")
        if len(set(names)) != len(names):
            raise ValueError(f"expert names must be unique, got {names}")
        check_settings(sigma_e=sigma_e, sigmas=[e.sigma for e in experts])
        self.experts = list(experts)
        self.router = Smooth(router, len(experts), sigma_e, name=f"the router over experts {names}")
        self.smoothed = [Smooth(e.model, num_classes, e.sigma, name=f"expert {e.name!r}") for e in experts]

    def certify(
        self, x: torch.Tensor, n0: int, n: int, alpha: float, beta: float, batch_size: int,
        generator: torch.Generator | None = None,
    ) -> RouterCertificate:
        """Route x (router bound at level β), certify it with the chosen expert (level α)."""
        check_input(x)
        check_settings(n0=n0, n=n, alpha=alpha, beta=beta, batch_size=batch_size)
        warn_if_never_certifies(n, beta), warn_if_never_certifies(n, alpha)
        choice, r_route = self.router.certify(x, n0, n, beta, batch_size, generator)
        if choice == ABSTAIN:
            return RouterCertificate(ABSTAIN, "", math.nan, 0.0, 0.0, 0.0)
        expert = self.experts[choice]
        prediction, r_c = self.smoothed[choice].certify(x, n0, n, alpha, batch_size, generator)
        radius = min(r_route, r_c) if prediction != ABSTAIN else 0.0
        return RouterCertificate(prediction, expert.name, expert.sigma, radius, r_route, r_c)
