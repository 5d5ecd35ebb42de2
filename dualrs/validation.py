"""Checks of user input that run before any noise is drawn or any file is written.

Each check raises one ``ValueError`` (``TypeError`` for a wrong type) that names what is wrong. The
module imports torch and scipy only where a check needs them, so that the command line can check
its arguments without loading either.
"""
from __future__ import annotations

import math
import os
import numbers
import warnings
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

LEVEL_RULE = "a one-sided confidence bound that fails with probability 0.5 or more certifies nothing"
SIGMA_RULE = "a noise level must be finite and above 0"
Test = Literal["clopper_pearson", "binomial"]


class NonFiniteError(ValueError):
    """A loss, weight, logit or denoised image went NaN or ±inf: whatever follows from it would say nothing."""


class NeverCertifiesWarning(UserWarning):
    """The number of draws is too small for any certificate at the requested level."""


def check_settings(
    *, n0: Any = None, n: Any = None, batch_size: Any = None, alpha: Any = None, beta: Any = None,
    sigma: Any = None, sigma_e: Any = None, sigmas: Iterable[Any] | None = None,
) -> None:
    """The one check of the Monte Carlo settings, run by every public entry point before any noise is drawn.

    n0, n and batch_size must be positive integers; alpha and beta must lie in (0, ½) and, together, sum
    below ½ (the dual certificate holds with probability ≥ 1 − α − β, Sun et al. 2025, Theorem 4.2); every
    noise level (sigma, sigma_e, each of sigmas) must be finite and positive (σ = ∞ would "certify" an
    infinite radius, Cohen et al. Theorem 1's R = σ·Φ⁻¹(p_A)). Only the settings given are checked.
    """
    for name, value in (("n0", n0), ("n", n), ("batch_size", batch_size)):
        if value is not None:
            check_count(value, name)
    for name, value in (("alpha", alpha), ("beta", beta)):
        if value is not None:
            check_level(value, name)
    if alpha is not None and beta is not None and not alpha + beta < 0.5:
        raise ValueError(f"alpha + beta must be below 0.5, got alpha={alpha!r} + beta={beta!r} = {alpha + beta:g}: "
                         f"the dual certificate fails with probability up to alpha + beta, and {LEVEL_RULE}")
    for name, value in (("sigma", sigma), ("sigma_e", sigma_e)):
        if value is not None:
            check_sigma(value, name)
    if sigmas is not None:
        listed = list(sigmas)
        for value in listed:
            if not _noise_level(value):
                raise ValueError(f"every candidate sigma must be a positive number, got {value!r} among {listed!r} "
                                 f"({SIGMA_RULE})")


def _real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _noise_level(value: Any) -> bool:
    return _real(value) and math.isfinite(value) and value > 0


def check_count(value: Any, name: str) -> None:
    """A positive integer: a Python or NumPy int (a float such as 1e4 is refused, as ``range`` and tensor
    shapes would refuse it mid-run; config files are read with whole floats made ints)."""
    if not (isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_level(value: Any, name: str = "alpha") -> None:
    """A failure probability in (0, ½)."""
    if not (_real(value) and 0 < value < 0.5):
        raise ValueError(f"{name} must lie in (0, 0.5), got {value!r}: {LEVEL_RULE}")


def check_sigma(value: Any, name: str = "sigma") -> None:
    """A finite positive noise level."""
    if not _noise_level(value):
        raise ValueError(f"{name} must be a positive number, got {value!r} ({SIGMA_RULE})")


def smallest_certifying_n(level: float, test: Test = "clopper_pearson", threshold: float = 0.5) -> int:
    """The fewest draws n for which n votes of n can pass at ``level``.

    ``clopper_pearson`` (CERTIFY): the one-sided Clopper–Pearson lower bound of n successes in n trials,
    the α quantile of Beta(n, 1) (scipy's ``betaincinv``), must exceed ``threshold`` (½: a positive radius).
    ``binomial`` (PREDICT): the two-sided binomial test of n votes against none must reject p = ½ at level α.
    Both hold for every n past the first that passes, so the first one is found by doubling and bisection.
    """
    passes = _passes(float(level), test, float(threshold))
    high = 1
    while not passes(high):
        high *= 2
    low = high // 2  # fails (or 0)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if passes(middle) else (middle, high)
    return high


def _passes(level: float, test: Test, threshold: float) -> Callable[[int], bool]:
    if test == "clopper_pearson":
        from scipy.special import betaincinv

        return lambda n: float(betaincinv(n, 1, level)) > threshold
    from scipy.stats import binomtest  # 1 s to import: only for PREDICT's test

    return lambda n: binomtest(n, n, p=0.5).pvalue <= level


def warn_if_never_certifies(n: int, level: float, test: Test = "clopper_pearson", threshold: float = 0.5) -> None:
    """Warn (once per setting and process) when ``n`` draws can never pass at ``level``: every input would
    abstain whatever the model does."""
    _warn_once(int(n), float(level), test, float(threshold))


@lru_cache(maxsize=None)
def _warn_once(n: int, level: float, test: Test, threshold: float) -> None:
    needed = smallest_certifying_n(level, test, threshold)
    if n >= needed:
        return
    if test == "clopper_pearson":
        from scipy.special import betaincinv

        best = f"even {n} votes of {n} give p_A_lower = {float(betaincinv(n, 1, level)):.4g}, " \
               f"not above {threshold:g} (Clopper-Pearson)"
    else:
        from scipy.stats import binomtest

        best = f"even {n} votes of {n} give a binomial-test p-value of {binomtest(n, n, p=0.5).pvalue:.4g} > {level:g}"
    warnings.warn(f"n = {n} draws can never certify at level {level:g}: {best}, so every input abstains; "
                  f"the smallest n that can is {needed}", NeverCertifiesWarning, stacklevel=4)


def check_input(x: Any) -> None:
    """``x`` must be one input without batch dimension: a non-empty floating-point tensor of finite values.

    Smoothing adds Gaussian noise to ``x`` in the model's dtype, and a NaN or ±inf coordinate would make
    every noisy copy non-finite, so p_A and the radius would say nothing about x.
    """
    import torch

    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor (one input without batch dimension), got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() == 0 or x.numel() == 0:
        raise ValueError(f"x must be one input without batch dimension with at least one value, "
                         f"got shape {tuple(x.shape)}")
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ValueError(f"x has {bad} non-finite value(s) (NaN or inf) among {x.numel()}; "
                         "smoothing needs a finite input")


def check_logits(logits: Any, batch: int, num_classes: int, what: str) -> None:
    """``what`` must return a tensor of logits of shape (batch, num_classes) for a batch of ``batch`` inputs."""
    import torch

    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"{what} must return a tensor of logits, got {type(logits).__name__}")
    if logits.dim() != 2 or logits.shape[0] != batch or logits.shape[1] != num_classes:
        raise ValueError(f"{what} must return logits of shape (batch, {num_classes}), one score per class, "
                         f"but returned shape {tuple(logits.shape)} for a batch of {batch}")


def check_checkpoint(
    meta: Mapping[str, Any], path: Path | str, num_classes: int, in_chans: int, what: str,
    input_size: tuple[int, int] | None = None,
) -> None:
    """A checkpoint's metadata must match the classes and input channels of its use, named by ``what``
    (e.g. "a classifier of dataset 'digits'"), and, where both are known, the height and width of the
    inputs it was trained on (``input_size`` in the metadata of checkpoints that dualrs trains or fetches)."""
    if (meta["num_classes"], meta["in_chans"]) != (num_classes, in_chans):
        raise ValueError(f"checkpoint {path} is for {meta['num_classes']} classes from {meta['in_chans']}-channel "
                         f"inputs, but {what} needs {num_classes} classes from {in_chans}-channel inputs")
    trained = meta.get("input_size")
    if trained is not None and input_size is not None and tuple(trained) != tuple(input_size):
        raise ValueError(f"checkpoint {path} was made for {trained[0]}x{trained[1]} inputs, but {what} receives "
                         f"{input_size[0]}x{input_size[1]} inputs: give the data options it was made with "
                         "(e.g. resolution), or train it at this size")


def check_output_path(flag: str, path: Path, folder: bool = False) -> None:
    """``path``, given by the argument ``flag``, can be written as a file (or, with ``folder``, a folder): it is
    not an existing folder (file), no folder above it is a file, and the nearest existing one may be written in
    (ValueError naming ``flag``)."""
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise ValueError(f"argument {flag}: {path} is a file; name the folder to write")
    if not folder and path.is_dir():
        raise ValueError(f"argument {flag}: {path} is a directory; name the file to write")
    above = next(parent for parent in path.absolute().parents if parent.exists())
    if not above.is_dir():
        raise ValueError(f"argument {flag}: cannot write {path}: {above} is a file, not a folder")
    if not os.access(above, os.W_OK | os.X_OK):
        raise ValueError(f"argument {flag}: cannot write {path}: no permission to write in {above}")
