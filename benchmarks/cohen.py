"""The reference CERTIFY of Cohen et al.'s ``core.py`` (locuslab/smoothing), for timing comparisons.

Per batch it repeats x, draws noise with ``torch.randn_like`` and counts the predictions on the
host in a Python loop over a NumPy array, as the original does; the bound is Clopper–Pearson.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import beta, norm


def cohen_certify(
    model: torch.nn.Module, x: torch.Tensor, sigma: float, num_classes: int, n0: int, n: int, alpha: float,
    batch_size: int,
) -> tuple[int, float]:
    """(A, σ·Φ⁻¹(p_A_lower)), or (-1, 0.0) when p_A_lower < ½."""
    guess = int(_sample_noise(model, x, sigma, num_classes, n0, batch_size).argmax())
    count = int(_sample_noise(model, x, sigma, num_classes, n, batch_size)[guess])
    p_lower = beta.ppf(alpha, count, n - count + 1) if count > 0 else 0.0
    return (guess, sigma * float(norm.ppf(p_lower))) if p_lower >= 0.5 else (-1, 0.0)


def _sample_noise(
    model: torch.nn.Module, x: torch.Tensor, sigma: float, num_classes: int, num: int, batch_size: int,
) -> np.ndarray:
    with torch.no_grad():
        counts = np.zeros(num_classes, dtype=int)
        for _ in range(math.ceil(num / batch_size)):
            this_batch_size = min(batch_size, num)
            num -= this_batch_size
            batch = x.repeat((this_batch_size, *([1] * x.dim())))
            noise = torch.randn_like(batch) * sigma
            predictions = model(batch + noise).argmax(1)
            counts += _count_arr(predictions.cpu().numpy(), num_classes)
        return counts


def _count_arr(arr: np.ndarray, length: int) -> np.ndarray:
    counts = np.zeros(length, dtype=int)
    for idx in arr:
        counts[idx] += 1
    return counts
