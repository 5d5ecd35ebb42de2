"""The settings of each job of :mod:`dualrs.tasks`: one frozen dataclass per command, and the Monte Carlo
:class:`Sampling` that the certifying ones share.

Their field defaults are the defaults of the library and of the CLI's flags (:func:`default`); the
module loads no torch, so that building the CLI's parser stays light.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dualrs.cascade import Variant
    from dualrs.labels import RadiusWeight
    from dualrs.train import ClassWeight, Optim


@dataclass(frozen=True)
class Sampling:
    """CERTIFY's draws and level (Cohen et al. 2019), this shard's inputs, the arithmetic on CUDA (bf16, fp32)."""

    n0: int
    n: int
    alpha: float
    batch_size: int
    seed: int
    every: int = 1
    shard: int = 0
    num_shards: int = 1
    precision: str = "bf16"


@dataclass(frozen=True)
class SmoothedSettings:
    """Standard RS at one σ; ``radius_precision``: labels settled sequentially (None: fixed-n CERTIFY, Sec. 5.1)."""

    sigma: float
    sampling: Sampling
    radius_precision: float | None = None


@dataclass(frozen=True)
class DualSettings:
    """Dual RS (Sun et al. 2025, Theorem 4.2): estimator noise σ_e, level β; ``adaptive`` settles ``radii`` steps."""

    sigma_e: float
    beta: float
    sampling: Sampling
    adaptive: bool = False
    radii: tuple[float, ...] | None = None


@dataclass(frozen=True)
class CascadeSettings:
    """Cascaded RS (Jeong & Shin 2023): a stage is confident when p_A ≥ ``threshold``; ``variant``: dualrs.cascade."""

    sampling: Sampling
    threshold: float = 0.5
    variant: Variant = "published"


@dataclass(frozen=True)
class RouterSettings:
    """Routing among expert RS models (Sun et al. 2025, Sec. 4.3): router noise σ_e at level β."""

    sigma_e: float
    beta: float
    sampling: Sampling


@dataclass(frozen=True)
class EstimatorSettings:
    """The variance estimator or router and its training (Sun et al. 2025, Sec. 5.1): targets, loss weights, data."""

    arch: str
    sigma_e: float
    optim: Optim
    seed: int
    model_options: Mapping[str, Any] = field(default_factory=dict)
    init_weights: Path | None = None
    temperature: float | None = None
    hard: bool = False
    lam: float = 40.0
    eta: float = 0.5
    copies: int = 2
    radius_weight: RadiusWeight = "strong"
    class_weight: ClassWeight = "both"
    train_fraction: float = 1.0
    expert_sigmas: Mapping[str, float] | None = None


@dataclass(frozen=True)
class RouteSettings:
    """σ̂ of a training input: the estimator's majority vote of n draws under σ_e (Sun et al. 2025, Sec. 5.2)."""

    sigma_e: float
    n: int
    batch_size: int
    seed: int
    precision: str = "bf16"


@dataclass(frozen=True)
class FinetuneSettings:
    """Finetuning under the estimated σ's (Sun et al. 2025, Sec. 5.2): the expert for ``sigma``; None: shared."""

    optim: Optim
    seed: int
    sigma: float | None = None


def default(settings: type, name: str) -> Any:
    """The default of field ``name`` of the dataclass ``settings`` (a fresh one where a factory makes it)."""
    (found,) = [f for f in fields(settings) if f.name == name]
    if found.default_factory is not MISSING:
        return found.default_factory()
    if found.default is MISSING:
        raise ValueError(f"{settings.__name__}.{name} has no default")
    return found.default
